"""Evaluation: depth metrics under the BTS / ZoeDepth protocol (`metrics`), and `evaluate` over a
dataset for a PyTorch model or an exported bundle (`tr2m-eval`)."""
from .evaluate import BundlePredictor, TorchPredictor, evaluate
from .metrics import (
    CROPS, METRIC_NAMES, PROTOCOLS, EvalProtocol, MetricAccumulator, compute_errors, crop_mask,
    evaluate_image, get_protocol, prepare_prediction, resize_bilinear, valid_mask,
)

__all__ = [
    "BundlePredictor", "TorchPredictor", "evaluate",
    "CROPS", "METRIC_NAMES", "PROTOCOLS", "EvalProtocol", "MetricAccumulator", "compute_errors", "crop_mask",
    "evaluate_image", "get_protocol", "prepare_prediction", "resize_bilinear", "valid_mask",
]
