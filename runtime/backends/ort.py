"""ONNX Runtime backends: CPU, and CUDA / TensorRT execution providers with onnxruntime-gpu."""
from __future__ import annotations

import os
from typing import Dict, List, Mapping

import numpy as np

from ..errors import BundleError
from .base import Backend


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BundleError("ONNX Runtime is not installed: pip install 'tr2m[cpu]' (or 'tr2m[gpu]' for CUDA)") from e
    return onnxruntime


class _OrtBackend(Backend):
    providers: List = []

    @classmethod
    def available(cls, bundle) -> bool:
        try:
            have = set(_ort().get_available_providers())
        except BundleError:
            return False
        return all((p[0] if isinstance(p, tuple) else p) in have for p in cls.providers)

    def __init__(self, session):
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]
        self.input_names = [i.name for i in session.get_inputs()]

    @classmethod
    def load(cls, bundle, graph: str) -> "_OrtBackend":
        ort = _ort()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(os.environ.get("TR2M_THREADS", 0)) or (os.cpu_count() or 1)
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(cls.graph_file(bundle, graph)), options, providers=cls.provider_list(bundle))
        except Exception as e:  # ORT raises its own exception types for broken graphs
            raise BundleError(f"ONNX Runtime cannot load the {graph} graph ({e}): re-export the bundle") from e
        _check_io(session, bundle.graph(graph))
        return cls(session)

    @classmethod
    def provider_list(cls, bundle) -> List:
        return list(dict.fromkeys([*cls.providers, "CPUExecutionProvider"]))  # CPU once, last

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, outputs))


def _check_io(session, spec) -> None:
    """The graph must take exactly the inputs the manifest names and give its outputs, with the
    same rank and static sizes; otherwise a run would fail on a missing feed or a wrong shape."""
    ins = {i.name: i.shape for i in session.get_inputs()}
    outs = {o.name: o.shape for o in session.get_outputs()}
    problems = [f"no input {n!r}" for n in spec.inputs if n not in ins]
    problems += [f"an unknown input {n!r}" for n in ins if n not in spec.inputs]
    problems += [f"no output {n!r}" for n in spec.outputs if n not in outs]
    for name, want in [*spec.inputs.items(), *spec.outputs.items()]:
        have = ins.get(name, outs.get(name))
        if have is not None and not _same_shape(have, want):
            problems.append(f"{name} is {list(have)}, not {list(want)}")
    if problems:
        raise BundleError(f"the {spec.name} graph ({spec.file}) does not match the manifest: {'; '.join(problems)}: "
                          "re-export the bundle")


def _same_shape(have, want) -> bool:
    """Same rank; where both sides give a number (not a symbolic or -1 dimension), the same number."""
    fixed = lambda d: isinstance(d, int) and d >= 0  # noqa: E731
    return len(have) == len(want) and all(a == b for a, b in zip(have, want) if fixed(a) and fixed(b))


class OrtCpu(_OrtBackend):
    name = "ort-cpu"
    requirement = "pip install 'tr2m[cpu]'"
    providers = ["CPUExecutionProvider"]


class OrtCuda(_OrtBackend):
    name = "ort-cuda"
    requirement = "onnxruntime-gpu and a CUDA GPU (pip install 'tr2m[gpu]')"
    providers = ["CUDAExecutionProvider"]


class OrtTensorRT(_OrtBackend):
    name = "ort-trt"
    requirement = "onnxruntime-gpu built with TensorRT, and TensorRT libraries"
    providers = ["TensorrtExecutionProvider"]

    @classmethod
    def provider_list(cls, bundle) -> List:
        cache = str(bundle.directory / "engines" / "ort-trt-cache")
        trt = ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                                              "trt_timing_cache_enable": True, "trt_timing_cache_path": cache})
        return [trt, "CUDAExecutionProvider", "CPUExecutionProvider"]
