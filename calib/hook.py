"""calib's answer to export's calibration hook (export/calibration.py).

setup.cfg registers `calibrate` under the entry-point group ``tr2m.calibrators`` as ``int8``, so
`tr2m-export trt --int8 --calib FRAMES` finds it without export importing calib.
"""
from __future__ import annotations

from typing import Callable

from export.calibration import CalibrationRequest

from .data import CalibrationConfig
from .quantize import calibrate_bundle


def calibrate(request: CalibrationRequest, echo: Callable[[str], None]) -> None:
    """Write the bundle's Q/DQ graph from the requested frames; report INT8 vs FP32 when asked."""
    sampling = CalibrationConfig(size=request.size, every=request.every, seed=request.seed)
    report = calibrate_bundle(request.bundle, request.sources, captions=list(request.captions) or None,
                              sampling=sampling, eval_sources=request.eval_sources, echo=echo)
    if report.accuracy is not None:
        echo(report.accuracy.summary())
