#!/usr/bin/env python
"""Feed a battery of bad inputs and faults through the CLIs and the Python API; print a table.

    python scripts/battery.py                          # exports a tiny random bundle first (~1 min)
    python scripts/battery.py --bundle B --only cache  # only cases whose input/component match
    python scripts/battery.py --details                # tracebacks of the cases that failed

Each row: the input, the component that got it, the outcome and the message a user saw.
Outcomes: "clear error" (one-line error naming the problem and the fix, non-zero exit or a
documented exception), "worked" (a valid-but-odd input gave correct outputs), "unclear error" (one
line, no traceback, but it does not name the problem or the fix), CRASH (a traceback,
a wrong answer, or a bad input accepted silently), LEFTOVER (a temporary or half-written file, a
failed run's outputs, or a poisoned cache entry), skipped. The same cases run under pytest in
tests/test_battery.py. Exits 1 if a case not marked as a known, reported bug failed.
"""
from __future__ import annotations

import functools
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.battery import CASES, CLEAR, CRASH, LEFTOVER, SKIPPED, UNCLEAR, WORKED, Context, run_case  # noqa: E402
from tests.battery.harness import build_engine_bundle  # noqa: E402


def _tiny_bundle(folder: Path) -> Path:
    from export.bundle import ExportOptions, export_bundle

    click.echo("exporting a tiny random-init bundle ...", err=True)
    return export_bundle(ExportOptions(out=folder / "tiny", preset="tiny", random_init=True), log=lambda m: None).bundle


def _table(outcomes, width: int) -> str:
    rows = [("#", "input", "component", "outcome", "message")]
    rows += [(str(i), o.case.input, o.case.component, o.verdict, o.message) for i, o in enumerate(outcomes, 1)]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = []
    for row in rows:
        head = "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths))
        room = max(width - len(head) - 2, 30)
        lines.append(f"{head}  {row[4] if len(row[4]) <= room else row[4][:room - 3] + '...'}")
    lines.insert(1, "-" * min(width, len(lines[0]) + 20))
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A tiny bundle to use (never modified) [default: export one into a temporary folder].")
@click.option("--only", help="Regular expression: run the cases whose input or component matches.")
@click.option("--details", is_flag=True, help="Print the traceback or output behind every CRASH / LEFTOVER.")
@click.option("--keep", is_flag=True, help="Keep the scratch folder (its path is printed).")
@click.option("--width", type=int, default=None, help="Table width [default: the terminal's].")
def main(bundle, only, details, keep, width):
    """Run the battery and print one row per case."""
    cases = [c for c in CASES if not only or re.search(only, f"{c.input} {c.component}", re.IGNORECASE)]
    scratch = Path(tempfile.mkdtemp(prefix="tr2m-battery-"))
    started, outcomes = time.perf_counter(), []
    try:
        bundle = bundle or _tiny_bundle(scratch)
        engine = functools.cache(lambda: build_engine_bundle(bundle, scratch / "engine-bundle"))
        for i, case in enumerate(cases):
            ctx = Context(bundle=Path(bundle), root=scratch / f"case{i:03d}", cache=scratch / "cache",
                          engine_bundle=engine)
            ctx.root.mkdir()
            outcome = run_case(case, ctx)
            click.echo(f"[{i + 1}/{len(cases)}] {outcome.verdict:11s} {case.input} ({case.component}) "
                       f"{outcome.seconds:.1f} s", err=True)
            outcomes.append(outcome)
    finally:
        if keep:
            click.echo(f"scratch folder kept: {scratch}", err=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    click.echo(_table(outcomes, width or shutil.get_terminal_size((160, 20)).columns))
    count = {v: sum(o.verdict == v for o in outcomes) for v in (CLEAR, WORKED, UNCLEAR, CRASH, LEFTOVER, SKIPPED)}
    click.echo(f"\n{len(outcomes)} inputs tried: {count[CLEAR]} clear errors, {count[WORKED]} worked, "
               f"{count[UNCLEAR]} unclear errors, {count[CRASH]} crashes, {count[LEFTOVER]} with files left or "
               f"corrupted, {count[SKIPPED]} skipped ({time.perf_counter() - started:.0f} s)")
    known = [o for o in outcomes if o.case.known and o.verdict not in (CLEAR, WORKED)]
    for o in known:
        click.echo(f"  known, reported: {o.case.input} ({o.case.component}): {o.case.known}")
    if details:
        for o in outcomes:
            if o.verdict in (UNCLEAR, CRASH, LEFTOVER):
                click.echo(f"\n=== {o.case.input} ({o.case.component}): {o.verdict}\n{o.details or o.message}")
    unexpected = [o for o in outcomes if o.verdict in (UNCLEAR, CRASH, LEFTOVER) and not o.case.known]
    sys.exit(1 if unexpected else 0)


if __name__ == "__main__":
    main()
