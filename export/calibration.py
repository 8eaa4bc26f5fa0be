"""The INT8 calibration hook of `tr2m-export trt --int8 --calib FRAMES`.

Calibration (writing the Q/DQ graph ``image_int8`` from real frames) lives in calib/, which sits
above export (tr2m <- export <- calib): export never imports it. calib advertises its calibrator
under the entry-point group ``tr2m.calibrators`` (setup.cfg), and the `trt` command looks it up
by name when --calib is given. An installation without calib answers with one line that says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Optional, Tuple

GROUP = "tr2m.calibrators"
INT8 = "int8"


class CalibrationUnavailable(RuntimeError):
    """No calibrator is installed (or it cannot be imported)."""


@dataclass(frozen=True)
class CalibrationRequest:
    """What `tr2m-export trt --int8 --calib ...` asks the calibrator for.

    sources: videos, image folders or images to calibrate on; captions: assigned to them in turn
    (empty: the calibrator's defaults); size, every, seed: how frames are sampled; eval_sources:
    held-out frames on which INT8 is compared with FP32 (empty: no comparison).
    """

    bundle: Path
    sources: Tuple[Path, ...]
    captions: Tuple[str, ...] = ()
    size: int = 128
    every: int = 10
    seed: Optional[int] = None
    eval_sources: Tuple[Path, ...] = ()


# A calibrator writes the calibrated graph into request.bundle and reports progress through echo.
Calibrator = Callable[[CalibrationRequest, Callable[[str], None]], None]


def find_calibrator(name: str = INT8, group: str = GROUP) -> Calibrator:
    """The calibrator registered as ``name`` in the entry-point ``group``."""
    found = entry_points(group=group, name=name)
    if not found:
        raise CalibrationUnavailable(
            f"INT8 calibration needs the calib package, and no calibrator {name!r} is registered in the "
            f"entry-point group {group!r}: install tr2m with its calib package (pip install -e '.[torch]' in a "
            "source checkout)")
    entry = next(iter(found))
    try:
        return entry.load()
    except ImportError as e:
        raise CalibrationUnavailable(
            f"INT8 calibration needs the calib package, which could not be imported ({entry.value}: {e})") from e
