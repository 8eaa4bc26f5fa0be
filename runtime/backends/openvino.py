"""OpenVINO backend: runs the bundle's OpenVINO IR graphs (made by `tr2m-export openvino`).

The IR of each graph lies in the bundle with its checksums, under the manifest's ``openvino``
section (``graphs: {name: {xml, bin, inputs, outputs, ...}}``), named like the ONNX graph it came
from (``image``, ``relative``, ``scale_shift``, ``text``) plus ``image_int8`` (NNCF INT8).

OpenVINO chooses the arithmetic itself: on CPUs with bf16 (AVX-512 BF16, AMX) its default
inference precision is bf16, elsewhere f32. `OpenVINOOptions.inference_precision` forces one,
and `describe()` reports what the compiled model really uses, so each run states its precision.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..errors import BundleError
from .base import Backend

SECTION = "openvino"
DEVICES = ("CPU", "GPU", "NPU", "AUTO")
PRECISIONS = ("default", "f32", "bf16", "f16")
HINTS = ("latency", "throughput")
EXTRA = "pip install 'tr2m[openvino]'"


@dataclass(frozen=True)
class OpenVINOOptions:
    """How graphs are compiled. device: CPU, GPU, NPU or AUTO; inference_precision: default
    (OpenVINO's choice for the device: bf16 where the CPU has it) or f32/bf16/f16; hint: latency
    or throughput; cache_dir: compiled-model cache (None: <user cache dir>/tr2m/openvino;
    "" turns it off)."""

    device: str = "CPU"
    inference_precision: str = "default"
    hint: str = "latency"
    cache_dir: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "device", self.device.upper())
        for field, value, valid in (("device", self.device, DEVICES),
                                    ("inference precision", self.inference_precision, PRECISIONS),
                                    ("performance hint", self.hint, HINTS)):
            if value not in valid:
                raise BundleError(f"unknown OpenVINO {field} {value!r}; choose one of: {', '.join(valid)}")

    def properties(self, cache: Optional[Path]) -> Dict[str, str]:
        """compile_model properties (string keys, so no OpenVINO import is needed to build them)."""
        props = {"PERFORMANCE_HINT": self.hint.upper()}
        if self.inference_precision != "default":
            props["INFERENCE_PRECISION_HINT"] = self.inference_precision
        if cache is not None:
            props["CACHE_DIR"] = str(cache)
        threads = int(os.environ.get("TR2M_THREADS", 0))
        if threads and self.device == "CPU":
            props["INFERENCE_NUM_THREADS"] = str(threads)
        return props

    def cache_path(self) -> Optional[Path]:
        if self.cache_dir == "":
            return None
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        import platformdirs  # only needed for the default folder

        return Path(platformdirs.user_cache_dir("tr2m")) / "openvino"


def _openvino():
    try:
        import openvino
    except ImportError as e:
        raise BundleError(f"OpenVINO is not installed: {EXTRA}") from e
    return openvino


def ir_graphs(bundle) -> Dict[str, dict]:
    """The manifest's IR entries by graph name ({} when the bundle has no IR)."""
    return bundle.manifest.get(SECTION, {}).get("graphs", {})


class OpenVINOBackend(Backend):
    name = "openvino"
    requirement = f"{EXTRA}, and OpenVINO IR in the bundle (tr2m-export openvino --bundle B)"
    options = OpenVINOOptions()

    @classmethod
    def available(cls, bundle) -> bool:
        return bool(ir_graphs(bundle)) and importlib.util.find_spec("openvino") is not None

    @classmethod
    def unavailable_reason(cls, bundle) -> str:
        if importlib.util.find_spec("openvino") is None:
            return f"OpenVINO is not installed: {EXTRA}"
        return f"the bundle has no OpenVINO IR: tr2m-export openvino --bundle {bundle.directory}"

    @classmethod
    def provides(cls, bundle, graph: str) -> bool:
        """IR of `graph` is in the bundle. There is no FP16 IR: FP16 is a weight format here, and
        the arithmetic is `OpenVINOOptions.inference_precision`."""
        return graph in ir_graphs(bundle)

    @classmethod
    def refusal(cls, bundle, graphs: Sequence[str]) -> Optional[str]:
        missing = [g for g in graphs if not cls.provides(bundle, g)]
        return (f"the bundle has no OpenVINO IR of the {', '.join(missing)} graph (tr2m-export openvino"
                f"{' --int8' if 'image_int8' in missing else ''})") if missing else None

    @classmethod
    def load(cls, bundle, graph: str) -> "OpenVINOBackend":
        ov = _openvino()
        entry = ir_graphs(bundle).get(graph)
        if entry is None:
            raise BundleError(f"the bundle has no OpenVINO IR of the {graph} graph (it has: "
                              f"{', '.join(sorted(ir_graphs(bundle))) or 'none'}): tr2m-export openvino --bundle "
                              f"{bundle.directory}")
        cache = cls.options.cache_path()
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        core = ov.Core()
        try:
            model = core.read_model(str(bundle.resolve(entry["xml"])), str(bundle.resolve(entry["bin"])))
            compiled = core.compile_model(model, cls.options.device, cls.options.properties(cache))
        except RuntimeError as e:  # OpenVINO reports broken IR and unknown devices as RuntimeError
            raise BundleError(f"OpenVINO cannot load the {graph} IR on {cls.options.device} "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__}): re-export it with "
                              "tr2m-export openvino, or choose another --ov-device") from e
        _check_io(compiled, entry, graph)
        return cls(compiled, cls.options)

    def __init__(self, compiled, options: OpenVINOOptions):
        self.compiled = compiled
        self.options = options
        self.request = compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in compiled.inputs]
        self.outputs = [(port.get_any_name(), port) for port in compiled.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        results = self.request.infer({name: np.ascontiguousarray(feeds[name]) for name in self.input_names})
        return {name: np.array(results[port]) for name, port in self.outputs}  # copies: the request reuses buffers

    def close(self) -> None:
        """Drop the compiled model and its request (OpenVINO frees their memory with them)."""
        self.request = self.compiled = None

    def describe(self) -> Dict[str, str]:
        """What the compiled model really runs with: device(s), inference precision, hint."""
        get = self.compiled.get_property
        devices = get("EXECUTION_DEVICES")
        try:
            precision = precision_name(get("INFERENCE_PRECISION_HINT"))
        except RuntimeError:  # AUTO and some plugins do not report it
            precision = self.options.inference_precision
        return {"device": ",".join(devices) if isinstance(devices, (list, tuple)) else str(devices),
                "inference_precision": precision, "performance_hint": str(get("PERFORMANCE_HINT")).split(".")[-1]}


def precision_name(value) -> str:
    """OpenVINO element type -> short name: <Type: 'float32'> -> f32, bfloat16 -> bf16."""
    name = getattr(value, "get_type_name", lambda: str(value))()
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "f32": "f32", "bf16": "bf16",
            "f16": "f16"}.get(name, name)


def _check_io(compiled, entry: dict, graph: str) -> None:
    """The IR must take and give exactly the tensors the manifest names, as the ONNX graph does."""
    ins = {port.get_any_name() for port in compiled.inputs}
    outs = {port.get_any_name() for port in compiled.outputs}
    problems = [f"no input {n!r}" for n in entry["inputs"] if n not in ins]
    problems += [f"an unknown input {n!r}" for n in ins if n not in entry["inputs"]]
    problems += [f"no output {n!r}" for n in entry["outputs"] if n not in outs]
    if problems:
        raise BundleError(f"the {graph} IR ({entry['xml']}) does not match the manifest: {'; '.join(problems)}: "
                          "re-export it with tr2m-export openvino")
