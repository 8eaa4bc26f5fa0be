"""Calibration data and INT8 quantization (explicit Q/DQ) for TensorRT.

    from calib import CalibrationConfig, calibrate_bundle
    report = calibrate_bundle("bundles/paper", ["clips/office.mp4"], captions=["an office"],
                              sampling=CalibrationConfig(size=256, every=5, seed=0),
                              eval_sources=["data/nyu/rgb"])
    print(report.accuracy.summary())
"""
from .data import (
    DEFAULT_CAPTIONS, MIN_RECOMMENDED_FRAMES, CalibrationConfig, CalibrationSet, CalibrationWarning,
    build_calibration_set, sample_frames,
)
from .quantize import (
    ACCURACY_GOAL, AccuracyReport, CalibrationReport, QuantizeOptions, calibrate_bundle, evaluate_int8, float_islands,
    quantize_bundle, quantize_graph, read_eval_frames,
)

__all__ = [
    "ACCURACY_GOAL", "AccuracyReport", "CalibrationConfig", "CalibrationReport", "CalibrationSet", "CalibrationWarning",
    "DEFAULT_CAPTIONS", "MIN_RECOMMENDED_FRAMES", "QuantizeOptions", "build_calibration_set",
    "calibrate_bundle", "evaluate_int8", "float_islands", "quantize_bundle", "quantize_graph",
    "read_eval_frames", "sample_frames",
]
