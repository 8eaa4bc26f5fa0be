"""`tr2m-export` lives in export/: importing export alone gives every command, and INT8
calibration is reached through the entry-point hook that calib fills (export never imports calib)."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from export.calibration import GROUP, CalibrationUnavailable, find_calibrator

COMMANDS = ["onnx", "trt"]  # at least these; more may be added in export/cli.py


def _fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_export_alone_defines_every_command_and_never_imports_calib():
    """The commands seen after importing export.cli alone are all there are: importing calib (every
    module) and loading the console script adds none."""
    out = _fresh(
        "import importlib, json, pkgutil, sys\n"
        "from importlib.metadata import entry_points\n"
        "from click.testing import CliRunner\n"
        "from export.cli import main\n"
        "alone = sorted(main.commands)\n"
        "help = CliRunner().invoke(main, ['--help']).output\n"
        "loaded = sorted(m for m in sys.modules if m == 'calib' or m.startswith('calib.'))\n"
        "import calib\n"
        "for info in pkgutil.walk_packages(calib.__path__, 'calib.'):\n"
        "    importlib.import_module(info.name)\n"
        "(script,) = entry_points(group='console_scripts', name='tr2m-export')\n"
        "print(json.dumps({'alone': alone, 'help': help, 'calib': loaded,\n"
        "                  'everything': sorted(script.load().commands)}))\n")
    seen = json.loads(out)
    assert set(COMMANDS) <= set(seen["alone"]) and seen["alone"] == seen["everything"], seen
    assert all(f"  {name} " in seen["help"] for name in seen["alone"]), seen["help"]
    assert seen["calib"] == []


def test_console_script_points_at_export():
    (script,) = entry_points(group="console_scripts", name="tr2m-export")
    assert script.value == "export.cli:main"


def test_int8_calibration_is_found_through_the_hook():
    from calib.hook import calibrate

    assert find_calibrator() is calibrate
    (entry,) = entry_points(group=GROUP, name="int8")
    assert entry.module.split(".")[0] == "calib"


def test_unregistered_calibrator_is_one_clear_error():
    with pytest.raises(CalibrationUnavailable, match="needs the calib package.*pip install"):
        find_calibrator(group="tr2m.no-such-group")


def test_missing_calib_says_so_in_one_line(tmp_path):
    """`trt --int8 --calib` with calib not importable: exit 2, one `error:` line, no traceback."""
    frames = tmp_path / "frame.png"
    frames.write_bytes(b"not read: the hook is looked up first")
    out = _fresh(
        "import json, sys\n"
        "sys.modules['calib'] = None  # as if calib were not installed\n"
        "from click.testing import CliRunner\n"
        "from export.cli import main\n"
        f"r = CliRunner().invoke(main, ['trt', '--bundle', {str(tmp_path)!r}, '--int8', '--calib', {str(frames)!r}])\n"
        "print(json.dumps({'code': r.exit_code, 'output': r.output}))\n")
    seen = json.loads(out)
    lines = seen["output"].strip().splitlines()
    assert seen["code"] == 2, seen["output"]
    assert len(lines) == 1 and lines[0].startswith("error: INT8 calibration needs the calib package"), lines
    assert "Traceback" not in seen["output"]
