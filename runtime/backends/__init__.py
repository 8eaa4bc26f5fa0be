"""Inference backends behind one interface (`load`, `run`, `warmup`), picked from a registry.

Order of preference for `auto`: native TensorRT (an engine for this GPU is in the bundle), then
ONNX Runtime's TensorRT and CUDA execution providers (onnxruntime-gpu), then ONNX Runtime CPU.
"""
from __future__ import annotations

from typing import Dict, List, Type

from ..errors import BundleError
from .base import Backend
from .ort import OrtCpu, OrtCuda, OrtTensorRT
from .tensorrt import TensorRTBackend

BACKENDS: Dict[str, Type[Backend]] = {
    "tensorrt": TensorRTBackend,
    "ort-trt": OrtTensorRT,
    "ort-cuda": OrtCuda,
    "ort-cpu": OrtCpu,
}


def available_backends(bundle) -> List[str]:
    """Backends that can run `bundle` here, best first."""
    return [name for name, cls in BACKENDS.items() if cls.available(bundle)]


def pick_backend(name: str, bundle) -> Type[Backend]:
    """`auto` -> the best available backend; otherwise the named one, if it can run here."""
    if name == "auto":
        return BACKENDS[available_backends(bundle)[0]]
    if name not in BACKENDS:
        raise BundleError(f"unknown backend {name!r}; choose auto or one of: {', '.join(BACKENDS)}")
    if not BACKENDS[name].available(bundle):
        raise BundleError(f"backend {name!r} cannot run here: {BACKENDS[name].requirement}")
    return BACKENDS[name]


__all__ = ["BACKENDS", "Backend", "available_backends", "pick_backend"]
