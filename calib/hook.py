"""calib's answer to export's calibration hook (export/calibration.py).

setup.cfg registers `calibrate` under the entry-point group ``tr2m.calibrators`` as ``int8``, so
`tr2m-export trt --int8 --calib FRAMES` finds it without export importing calib; and
`openvino_int8` as ``openvino-int8`` for `tr2m-export openvino --int8` (NNCF on the image IR).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from export.calibration import CalibrationRequest
from runtime.bundle import Bundle

from .data import CalibrationConfig, build_calibration_set
from .quantize import calibrate_bundle


def calibrate(request: CalibrationRequest, echo: Callable[[str], None]) -> None:
    """Write the bundle's Q/DQ graph from the requested frames; report INT8 vs FP32 when asked."""
    sampling = CalibrationConfig(size=request.size, every=request.every, seed=request.seed)
    report = calibrate_bundle(request.bundle, request.sources, captions=list(request.captions) or None,
                              sampling=sampling, eval_sources=request.eval_sources, echo=echo)
    if report.accuracy is not None:
        echo(report.accuracy.summary())


def openvino_int8(request: CalibrationRequest, echo: Callable[[str], None], *, staging: Path, fp32, options):
    """The image IR `fp32` (an export.openvino_ir.IRResult, staged) -> image_int8 IR beside it, by
    NNCF on the requested frames, checked on the held-out ones (request.eval_sources)."""
    from .openvino_int8 import int8_ir
    from .quantize import read_eval_frames

    sampling = CalibrationConfig(size=request.size, every=request.every, seed=request.seed)
    calib = build_calibration_set(request.bundle, request.sources, captions=list(request.captions) or None,
                                  config=sampling)
    captions = list(request.captions) or list(calib.meta["captions"][:1])
    bundle = Bundle.open(request.bundle, verify=False)
    return int8_ir(bundle, staging, fp32, calib, read_eval_frames(request.eval_sources), captions, options, log=echo)
