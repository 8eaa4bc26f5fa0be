"""ONNX Runtime backends: CPU, and CUDA / TensorRT execution providers with onnxruntime-gpu."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping

import numpy as np

from ..errors import BundleError
from ..trt_sidecar import ENGINES_DIR
from .base import Backend, BackendUnavailable
from .batching import DEFAULT_MAX_BATCH, BatchLimits, run_in_chunks


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BundleError("ONNX Runtime is not installed: pip install 'tr2m[cpu]' (or 'tr2m[gpu]' for CUDA)") from e
    return onnxruntime


class _OrtBackend(Backend):
    providers: List = []
    missing_hint = ""  # why ONNX Runtime may not give the provider, and what to do
    memory_pattern = True  # ONNX Runtime's planned activation block, allocated from the second run on

    @classmethod
    def available(cls, bundle) -> bool:
        try:
            have = set(_ort().get_available_providers())
        except BundleError:
            return False
        return all(p in have for p in cls.providers)

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
        options.enable_mem_pattern = cls.memory_pattern
        try:
            session = ort.InferenceSession(str(cls.graph_file(bundle, graph)), options,
                                           providers=cls.provider_list(bundle, graph))
        except Exception as e:  # ORT raises its own exception types for broken graphs
            raise BundleError(f"ONNX Runtime cannot load the {graph} graph ({e}): re-export the bundle") from e
        _check_io(session, bundle.graph(cls.serving_graph(bundle, graph) or graph))
        _check_providers(session, cls, graph)
        return cls(session)

    @classmethod
    def provider_list(cls, bundle, graph: str) -> List:
        return list(dict.fromkeys([*cls.providers, "CPUExecutionProvider"]))  # CPU once, last

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, outputs))


def _check_providers(session, cls, graph: str) -> None:
    """ONNX Runtime lists the CUDA and TensorRT providers whenever onnxruntime-gpu is installed and
    silently falls back to the CPU when their libraries (cuDNN, TensorRT) fail to load: the
    session's own providers say what really runs."""
    wanted = cls.providers[0]
    got = session.get_providers()
    if wanted not in got:
        raise BackendUnavailable(f"ONNX Runtime did not give the {graph} graph the {wanted} (the session got "
                                 f"{', '.join(got)}): {cls.missing_hint or 'its libraries failed to load'}")


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
    # image_int8_cpu: dynamic MatMul INT8 (no calibration), 1.6x FP32 on CPUs; the Q/DQ graph
    # made for TensorRT also runs here, slower.
    serving = {"image_int8": ("image_int8_cpu", "image_int8")}
    # The pattern's block comes on top of the arena chunks the first run already holds: +0.39 GB
    # of peak RSS on the paper preset (1.87 -> 2.26 GB for a 1.38 GB image graph), for no
    # measurable speed on the CPU (bench/RESULTS.md, Footprint).
    memory_pattern = False


class OrtCuda(_OrtBackend):
    name = "ort-cuda"
    requirement = "onnxruntime-gpu and a CUDA GPU (pip install 'tr2m[gpu]')"
    providers = ["CUDAExecutionProvider"]
    missing_hint = ("the CUDA or cuDNN libraries onnxruntime-gpu was built for are missing or do not match the "
                    "driver (no GPU, or see ONNX Runtime's CUDA requirements for this version)")


class OrtTensorRT(_OrtBackend):
    name = "ort-trt"
    requirement = "onnxruntime-gpu built with TensorRT, and TensorRT libraries"
    providers = ["TensorrtExecutionProvider"]
    missing_hint = ("the TensorRT libraries onnxruntime-gpu was built against are not installed or not on the "
                    "library path (install the matching tensorrt wheel or use --backend ort-cuda)")

    limits = BatchLimits(1, DEFAULT_MAX_BATCH)  # the profile passed in provider_list

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        # A batch outside the profile would make the provider build a new engine (minutes).
        return run_in_chunks(super().run, {k: feeds[k] for k in self.input_names}, self.limits)

    @classmethod
    def provider_list(cls, bundle, graph: str) -> List:
        cache = str(trt_cache_dir(bundle, graph))
        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                   "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
                   **profile_options(bundle.graph(graph).inputs, cls.limits.max)}
        return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider", "CPUExecutionProvider"]


def profile_options(inputs: Mapping[str, tuple], max_batch: int, opt_batch: int = 1) -> Dict[str, str]:
    """Explicit min/opt/max shapes for ONNX Runtime's TensorRT provider ("name:1x3x434x560,..."):
    without them the provider builds for the first batch it sees and rebuilds as the batch grows."""
    def shapes(batch: int) -> str:
        return ",".join(f"{name}:" + "x".join(str(batch if i == 0 else int(d)) for i, d in enumerate(shape))
                        for name, shape in inputs.items())
    return {"trt_profile_min_shapes": shapes(1), "trt_profile_opt_shapes": shapes(opt_batch),
            "trt_profile_max_shapes": shapes(max_batch)}


def trt_cache_dir(bundle, graph: str) -> Path:
    """Where ONNX Runtime's TensorRT provider keeps engines: <bundle>/engines/ort-trt-cache, created
    here (the provider creates only the last folder); a read-only bundle uses the user cache folder."""
    folder = bundle.directory / ENGINES_DIR / "ort-trt-cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    import platformdirs

    files = bundle.manifest.get("files", {})
    key = files.get(bundle.graph(graph).file, "")[:16] or bundle.directory.resolve().name  # one folder per graph file
    fallback = Path(platformdirs.user_cache_dir("tr2m")) / "ort-trt" / key
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback
