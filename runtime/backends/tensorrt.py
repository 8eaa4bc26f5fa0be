"""Native TensorRT backend: runs a prebuilt engine from the bundle (GPU only).

Works with TensorRT 10/11 (`tensorrt`) and TensorRT for RTX (`tensorrt_rtx`), which share the
name-based tensor API (`set_input_shape`, `set_tensor_address`, `execute_async_v3`). Device
memory goes through cuda-python (`cuda.bindings.runtime`), so no torch is needed. The engine's
sidecar is checked against this GPU and TensorRT before anything is deserialized.
"""
from __future__ import annotations

import importlib
from typing import Dict, Mapping

import numpy as np

from ..errors import BundleError
from .base import Backend

_MODULES = ("tensorrt", "tensorrt_rtx")


def _import_tensorrt():
    for name in _MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        return None
    count = runtime.cudaGetDeviceCount()
    return runtime if count[0] == runtime.cudaError_t.cudaSuccess and count[1] > 0 else None


def _check(result):
    """cuda-python returns (err, value...): raise on error, return the value(s)."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BundleError(f"CUDA call failed with error {int(err)}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTBackend(Backend):
    name = "tensorrt"
    requirement = "a TensorRT engine in the bundle built for this GPU (tr2m-export trt), TensorRT and cuda-python"

    @classmethod
    def available(cls, bundle) -> bool:
        return bool(bundle.manifest.get("engines")) and _import_tensorrt() is not None and _cudart() is not None

    @classmethod
    def load(cls, bundle, graph: str) -> "TensorRTBackend":
        from ..trt_sidecar import select_engine

        trt, cudart = _import_tensorrt(), _cudart()
        if trt is None or cudart is None:
            raise BundleError(f"TensorRT backend unavailable: {cls.requirement}")
        engine_path = select_engine(bundle, graph, trt_module=trt)  # refuses a mismatched engine
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise BundleError(f"TensorRT could not deserialize {engine_path.name}: rebuild it with tr2m-export trt")
        return cls(trt, cudart, engine)

    def __init__(self, trt, cudart, engine):
        self.trt, self.cudart, self.engine = trt, cudart, engine
        self.context = engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = lambda n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT  # noqa: E731
        self.inputs = [n for n in names if is_input(n)]
        self.outputs = [n for n in names if not is_input(n)]
        self._buffers: Dict[str, tuple] = {}

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (None, 0))
        if size < nbytes:
            if pointer is not None:
                _check(self.cudart.cudaFree(pointer))
            pointer = _check(self.cudart.cudaMalloc(nbytes))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        h2d = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_input_shape(name, array.shape)
            pointer = self._device_buffer(name, array.nbytes)
            _check(self.cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, h2d, self.stream))
            self.context.set_tensor_address(name, pointer)
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            results[name] = np.empty(shape, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._device_buffer(name, results[name].nbytes))
        if not self.context.execute_async_v3(self.stream):
            raise BundleError("TensorRT execution failed")
        for name, array in results.items():
            _check(self.cudart.cudaMemcpyAsync(array.ctypes.data, self._buffers[name][0], array.nbytes, d2h, self.stream))
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        return results

    def __del__(self):
        for pointer, _ in getattr(self, "_buffers", {}).values():
            self.cudart.cudaFree(pointer)
