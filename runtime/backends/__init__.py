"""Inference backends behind one interface (`load`, `run`, `warmup`), picked from a registry.

Order of preference for `auto`: native TensorRT (an engine for this GPU is in the bundle), then
ONNX Runtime's TensorRT and CUDA execution providers (onnxruntime-gpu), then OpenVINO (when the
bundle has OpenVINO IR: faster than ONNX Runtime on CPUs, bench/RESULTS.md), then ONNX Runtime CPU.
`auto` trusts what can run, not what exists: a backend whose engines target another GPU or
TensorRT, that lacks an engine for a graph the caller needs, or whose ONNX Runtime session did not
get its provider, is skipped with one warning line saying why.
"""
from __future__ import annotations

import warnings
from typing import Dict, Iterator, Sequence, Type

from ..errors import BundleError, Tr2mRuntimeWarning
from .base import Backend, BackendUnavailable
from .openvino import OpenVINOBackend
from .ort import OrtCpu, OrtCuda, OrtTensorRT
from .tensorrt import TensorRTBackend

BACKENDS: Dict[str, Type[Backend]] = {
    "tensorrt": TensorRTBackend,
    "ort-trt": OrtTensorRT,
    "ort-cuda": OrtCuda,
    "openvino": OpenVINOBackend,
    "ort-cpu": OrtCpu,
}


def backend_candidates(name: str, bundle, graphs: Sequence[str] = ("image",)) -> Iterator[Type[Backend]]:
    """The backends that can run `graphs` of `bundle`, best first: for `auto` every one that passes
    its checks (a warning line for each one skipped), otherwise the named one or a one-line error."""
    if name != "auto":
        yield _named(name, bundle, graphs)
        return
    reasons = []
    for cls in BACKENDS.values():
        if not cls.available(bundle):
            continue
        reason = cls.refusal(bundle, graphs)
        if reason is None:
            yield cls
            continue
        reasons.append(f"{cls.name}: {reason}")
        skipped(cls.name, reason)
    raise BundleError(f"no backend can run the {', '.join(graphs)} graph(s) of this bundle here "
                      f"({'; '.join(reasons) or 'ONNX Runtime is not installed'})")


def _named(name: str, bundle, graphs: Sequence[str]) -> Type[Backend]:
    if name not in BACKENDS:
        raise BundleError(f"unknown backend {name!r}; choose auto or one of: {', '.join(BACKENDS)}")
    cls = BACKENDS[name]
    if not cls.available(bundle):
        raise BundleError(f"backend {name!r} cannot run here: {cls.unavailable_reason(bundle)}")
    reason = cls.refusal(bundle, graphs)
    if reason:
        raise BackendUnavailable(f"backend {name!r} cannot run this bundle here: {reason}")
    return cls


def skipped(name: str, reason: str) -> None:
    """The one line `auto` prints for a backend it passes over."""
    warnings.warn(f"not using {name}: {reason}; trying the next backend", Tr2mRuntimeWarning, stacklevel=3)


def with_options(cls: Type[Backend], options) -> Type[Backend]:
    """`cls` with `options` applied when they are its kind of options (e.g. `OpenVINOOptions` for
    openvino); any other backend is returned as it is, so options never stop `auto` falling back."""
    if options is None or cls.options is None or not isinstance(options, type(cls.options)):
        return cls
    return cls.configured(options)


def pick_backend(name: str, bundle, graphs: Sequence[str] = ("image",)) -> Type[Backend]:
    """`auto` -> the best backend that can run `graphs`; otherwise the named one, if it can."""
    return next(backend_candidates(name, bundle, graphs))


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "backend_candidates", "pick_backend", "with_options"]
