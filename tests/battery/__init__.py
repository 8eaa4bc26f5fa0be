"""A battery of bad inputs and faults, fed through the CLIs and the Python API.

Each case says what a user would see; ``tests/test_battery.py`` asserts every one is a clear
error or works, ``scripts/battery.py`` prints them as a table. See harness.py for the verdicts.
"""
from .cases_files import CASES as _FILES
from .cases_media import CASES as _MEDIA
from .cases_run import CASES as _RUN
from .harness import CLEAR, CRASH, GOOD, LEFTOVER, SKIPPED, UNCLEAR, WORKED, Case, Context, Outcome, run_case

CASES = [*_MEDIA, *_FILES, *_RUN]

__all__ = ["CASES", "CLEAR", "CRASH", "GOOD", "LEFTOVER", "SKIPPED", "UNCLEAR", "WORKED", "Case", "Context",
           "Outcome", "run_case"]
