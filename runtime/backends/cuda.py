"""The CUDA runtime through cuda-python, for the native TensorRT backend (no torch).

cuda-python's runtime module moved: cuda-bindings >= 12.6 has ``cuda.bindings.runtime``, older
releases only ``cuda.cudart``, and 13.x removed ``cuda.cudart``. Both are tried. cuda-bindings
links the CUDA runtime statically, so its major must not exceed what the driver supports:
cuda-bindings 13 on a CUDA 12 driver (JetPack 6, cu12 desktops) answers every call with
cudaErrorInsufficientDriver. `cuda_problem` turns that into one line naming the fix.
"""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Optional

from ..errors import BundleError

# Which tr2m extra installs cuda-python for a CUDA major (the TensorRT wheels are built per major).
CUDA_EXTRAS = {12: "tensorrt-cu12", 13: "tensorrt-cu13"}


def import_cudart() -> Optional[ModuleType]:
    """cuda-python's runtime module (new or old layout), or None when cuda-python is absent."""
    try:
        from cuda.bindings import runtime
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart
        return cudart
    except ImportError:
        return None


def _cuda_version(encoded: int) -> str:
    """12040 -> '12.4' (CUDA encodes versions as 1000 * major + 10 * minor)."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


@functools.lru_cache(maxsize=1)
def cuda_problem() -> Optional[str]:
    """None when CUDA starts and sees a GPU; otherwise one line saying exactly why not."""
    cudart = import_cudart()
    if cudart is None:
        return ("cuda-python is not installed (the TensorRT backend needs it for GPU memory): "
                f"pip install 'tr2m[{CUDA_EXTRAS[13]}]' (CUDA 13 driver) or 'tr2m[{CUDA_EXTRAS[12]}]' (CUDA 12 driver)")
    err, count = cudart.cudaGetDeviceCount()
    if int(err) == 0:
        return None if count > 0 else "CUDA started but found no GPU (check CUDA_VISIBLE_DEVICES)"
    driver = cudart.cudaDriverGetVersion()[1] or 0
    runtime = cudart.cudaRuntimeGetVersion()[1] or 0
    what = f"CUDA cannot start: {error_text(cudart, err)}"
    if driver == 0:
        return f"{what}; no NVIDIA driver is loaded on this machine"
    if runtime > driver:
        major = driver // 1000
        fix = f"pip install 'tr2m[{CUDA_EXTRAS[major]}]'" if major in CUDA_EXTRAS else "update the NVIDIA driver"
        return (f"{what}; cuda-python is built for CUDA {_cuda_version(runtime)} but the driver supports CUDA "
                f"{_cuda_version(driver)}: install the cuda-python of the driver's CUDA major ({fix})")
    return f"{what} (driver CUDA {_cuda_version(driver)}, cuda-python CUDA {_cuda_version(runtime)})"


def error_text(cudart, err) -> str:
    """'cudaErrorInsufficientDriver (CUDA driver version is insufficient ...)'."""
    name = getattr(err, "name", str(int(err)))
    described = cudart.cudaGetErrorString(err)
    text = described[1] if isinstance(described, tuple) else described
    text = text.decode() if isinstance(text, bytes) else str(text)
    return f"{name} ({text})"


def native_handle(obj) -> int:
    """The address behind a cuda-python object (a cudaStream_t), as TensorRT's
    execute_async_v3(stream_handle: int) takes it; int(obj) is deprecated since cuda-bindings 13."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:  # cuda-python < 12.8, old layout
        return int(obj)
    return int(get_cuda_native_handle(obj))


def checked(cudart, result, call: str = "CUDA call"):
    """cuda-python returns (err, value...): raise on error, return the value(s)."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BundleError(f"{call} failed: {error_text(cudart, err)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest
