"""Native TensorRT backend: runs a prebuilt engine from the bundle (GPU only).

Works with TensorRT 10/11 (`tensorrt`) and TensorRT for RTX (`tensorrt_rtx`), which share the
name-based tensor API (`set_input_shape`, `set_tensor_address`, `execute_async_v3`). Both may be
installed at once: each engine is opened with the flavour that built it. Device memory goes
through cuda-python, so no torch is needed. An engine's sidecar is checked against this GPU and
TensorRT before anything is deserialized, and the bytes handed to TensorRT are the ones whose
sha256 was verified.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..errors import BundleError
from ..trt_sidecar import FLAVOUR_IDS, EngineError, current_gpu_cc, flavour_for_module, load_engine_bytes, \
    recorded_engines, select_engine
from .base import Backend, BackendUnavailable
from .batching import BatchLimits, run_in_chunks
from .cuda import checked, cuda_problem, import_cudart, native_handle


def _import_tensorrt():
    import tensorrt

    return tensorrt


def _import_tensorrt_rtx():
    import tensorrt_rtx

    return tensorrt_rtx


# One fixed importer per module name of FLAVOUR_IDS: the runtime never imports a module by a name
# computed at run time (a bundle's files could otherwise choose what runs).
_IMPORTERS = {"tensorrt": _import_tensorrt, "tensorrt_rtx": _import_tensorrt_rtx}


def installed_tensorrt() -> Dict[str, object]:
    """Every importable TensorRT flavour: {"tensorrt10": module, "rtx": module, ...}."""
    found = {}
    for module_name in dict.fromkeys(f.module for f in FLAVOUR_IDS.values()):
        try:
            module = _IMPORTERS[module_name]()
            found[flavour_for_module(module_name, module.__version__)] = module
        except (ImportError, EngineError):  # absent, or a TensorRT major we do not support
            continue
    return found


def _versions(modules: Mapping[str, object]) -> Dict[str, str]:
    return {flavour: str(module.__version__) for flavour, module in modules.items()}


class TensorRTBackend(Backend):
    name = "tensorrt"
    requirement = ("a TensorRT engine in the bundle built for this GPU (tr2m-export trt), TensorRT or "
                   "TensorRT for RTX, and cuda-python")

    @classmethod
    def available(cls, bundle) -> bool:
        """Worth trying: the bundle has engines (whether they run here is `refusal`'s question)."""
        return bool(bundle.manifest.get("engines"))

    @classmethod
    def provides(cls, bundle, graph: str) -> bool:
        return bool(recorded_engines(bundle, graph))

    @classmethod
    def refusal(cls, bundle, graphs: Sequence[str]) -> Optional[str]:
        modules = installed_tensorrt()
        if not modules:
            return "neither tensorrt nor tensorrt_rtx is installed (pip install 'tr2m[tensorrt-cu13]' or 'tr2m[rtx]')"
        problem = cuda_problem()
        if problem:
            return problem
        gpu = current_gpu_cc()
        for graph in graphs:
            try:
                select_engine(bundle, graph, versions=_versions(modules), gpu_cc=gpu)
            except EngineError as e:
                return str(e)
        return None

    @classmethod
    def load(cls, bundle, graph: str) -> "TensorRTBackend":
        modules = installed_tensorrt()
        problem = None if modules else cls.requirement
        problem = problem or cuda_problem()
        if problem:
            raise BackendUnavailable(f"TensorRT backend unavailable: {problem}")
        gpu = current_gpu_cc()
        try:
            choice = select_engine(bundle, graph, versions=_versions(modules), gpu_cc=gpu)
            trt = modules[choice.flavour]
            # The bytes TensorRT gets are the bytes whose sha256 was just checked: one read.
            meta, data = load_engine_bytes(choice.sidecar, gpu_cc=gpu, trt_version=str(trt.__version__),
                                           flavour=choice.flavour)
        except EngineError as e:
            raise BackendUnavailable(str(e)) from e
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BackendUnavailable(f"{FLAVOUR_IDS[meta.flavour].label} {trt.__version__} could not deserialize "
                                     f"{choice.engine.name}: rebuild it with tr2m-export trt")
        return cls(trt, import_cudart(), runtime, engine, meta)

    def __init__(self, trt, cudart, runtime, engine, meta=None):
        self.trt, self.cudart, self.runtime, self.engine = trt, cudart, runtime, engine
        self.meta = meta  # the sidecar: which engine runs (key, precision, flavour)
        self.context = engine.create_execution_context()
        self.stream = checked(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = lambda n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT  # noqa: E731
        self.inputs = [n for n in names if is_input(n)]
        self.outputs = [n for n in names if not is_input(n)]
        self.limits = engine_batch_limits(engine, self.inputs)
        self._buffers: Dict[str, tuple] = {}

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (None, 0))
        if size < nbytes:
            if pointer is not None:
                checked(self.cudart, self.cudart.cudaFree(pointer), "cudaFree")
                del self._buffers[name]
            pointer = checked(self.cudart, self.cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return run_in_chunks(self._run_once, {k: feeds[k] for k in self.inputs}, self.limits)

    def _run_once(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cudart = self.cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=numpy_dtype(self.trt, self.engine.get_tensor_dtype(name)))
            if not self.context.set_input_shape(name, array.shape):
                raise BundleError(f"the TensorRT engine refuses {name} of shape {list(array.shape)} (its profile "
                                  f"takes batch {self.limits.min}..{self.limits.max}): rebuild it with a wider "
                                  "--max-batch")
            pointer = self._device_buffer(name, array.nbytes)
            checked(cudart, cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, h2d, self.stream),
                    "cudaMemcpyAsync")
            self.context.set_tensor_address(name, pointer)
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BundleError(f"the TensorRT engine could not infer the shape of {name} ({list(shape)})")
            results[name] = np.empty(shape, dtype=numpy_dtype(self.trt, self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._device_buffer(name, results[name].nbytes))
        if not self.context.execute_async_v3(native_handle(self.stream)):
            raise BundleError("TensorRT execution failed (see the TensorRT messages above)")
        for name, array in results.items():
            checked(cudart, cudart.cudaMemcpyAsync(array.ctypes.data, self._buffers[name][0], array.nbytes, d2h,
                                                   self.stream), "cudaMemcpyAsync")
        checked(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return results

    def close(self) -> None:
        """Free the device buffers and destroy the stream (idempotent)."""
        cudart = getattr(self, "cudart", None)
        if cudart is None:
            return
        for pointer, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(pointer)
        self._buffers = {}
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamSynchronize(self.stream)
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None  # TensorRT objects go before the runtime that made them
        self.engine = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: CUDA may already be gone
            pass


# TensorRT data types by name, for a TensorRT without trt.nptype.
_NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32,
                 "INT64": np.int64, "BOOL": np.bool_}


def numpy_dtype(trt, dtype) -> np.dtype:
    """A TensorRT DataType -> the numpy dtype of its host buffers."""
    if hasattr(trt, "nptype"):
        return np.dtype(trt.nptype(dtype))
    return np.dtype(_NUMPY_DTYPES[dtype.name])


def engine_batch_limits(engine, inputs: Sequence[str], profile_index: int = 0) -> BatchLimits:
    """The batch range of profile 0, read from the engine (get_tensor_profile_shape -> [min, opt, max])."""
    shapes = {}
    for name in inputs:
        low, opt, high = engine.get_tensor_profile_shape(name, profile_index)
        shapes[name] = {"min": tuple(low), "opt": tuple(opt), "max": tuple(high)}
    return BatchLimits.from_profile(shapes)
