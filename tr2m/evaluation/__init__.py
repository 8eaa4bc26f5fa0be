"""Evaluation: depth metrics under the BTS / ZoeDepth protocol (see `metrics`)."""
from .metrics import (
    CROPS, METRIC_NAMES, PROTOCOLS, EvalProtocol, MetricAccumulator, compute_errors, crop_mask,
    evaluate_image, get_protocol, prepare_prediction, resize_bilinear, valid_mask,
)

__all__ = [
    "CROPS", "METRIC_NAMES", "PROTOCOLS", "EvalProtocol", "MetricAccumulator", "compute_errors", "crop_mask",
    "evaluate_image", "get_protocol", "prepare_prediction", "resize_bilinear", "valid_mask",
]
