"""Errors of the TensorRT engine builder: one line each, saying what to do."""
from __future__ import annotations


class TrtError(Exception):
    """Base of every error the engine builder raises on purpose."""

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class TensorRTNotInstalled(TrtError, ImportError):
    """No TensorRT module of the requested flavour can be imported."""


class TargetError(TrtError, ValueError):
    """The target GPU cannot be built for with this flavour (or no GPU to build on)."""


class OnnxParseError(TrtError):
    """TensorRT's ONNX parser rejected the graph; the message carries the parser's own errors."""


class EngineBuildError(TrtError):
    """The builder returned no engine, or the request cannot be built (e.g. FP16 from an FP32
    graph on a strongly typed flavour)."""


class PrecisionError(EngineBuildError):
    """The engine was built, but most of its compute does not run in the precision asked for."""
