"""The rows of the benchmark: which code runs the model, on what, at which precision.

`pytorch-fp32` is the reference (the authors' way: eager PyTorch, FP32). The others run the
exported bundle through `runtime.Engine`. GPU rows are listed always and skipped, with the
reason, where no GPU (or TensorRT) is present.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional


@dataclass(frozen=True)
class BackendSpec:
    """One row. kind: "torch" (eager model) or "engine" (runtime.Engine on a bundle)."""

    name: str
    kind: str
    precision: str
    runtime_backend: Optional[str] = None  # runtime backend name for kind "engine"
    device: str = "cpu"                    # "cpu", "cuda", or "auto" (cuda when present)
    note: str = ""

    def __post_init__(self):
        if self.kind not in ("torch", "engine"):
            raise ValueError(f"kind must be torch or engine, got {self.kind!r}")
        if self.kind == "engine" and not self.runtime_backend:
            raise ValueError(f"{self.name}: an engine row needs runtime_backend")


REFERENCE = "pytorch-fp32"
INT8_DYNAMIC = "ort-cpu-int8dyn"
INT8_DYNAMIC_PER_CHANNEL = "ort-cpu-int8dyn-pc"
# Rows whose graph the bench makes itself (bench.quant), with quantize_dynamic's per_channel.
BENCH_MADE = {INT8_DYNAMIC: False, INT8_DYNAMIC_PER_CHANNEL: True}

_SPECS = [
    BackendSpec(REFERENCE, "torch", "fp32", device="auto", note="eager PyTorch, as the authors run it (the reference)"),
    BackendSpec("ort-cpu-fp32", "engine", "fp32", "ort-cpu", note="fused image graph, FP32"),
    BackendSpec("ort-cpu-fp16", "engine", "fp16", "ort-cpu", note="FP16 image graph (LayerNorm, Softmax, depth in FP32)"),
    BackendSpec("ort-cpu-int8", "engine", "int8", "ort-cpu", note="Q/DQ INT8 graph from calib (image_int8)"),
    BackendSpec(INT8_DYNAMIC, "engine", "int8", "ort-cpu",
                note="ORT dynamic INT8 (MatMul weights int8 per tensor, activations quantized per call), made by the bench"),
    BackendSpec(INT8_DYNAMIC_PER_CHANNEL, "engine", "int8", "ort-cpu",
                note="as ort-cpu-int8dyn with per-channel (per output column) weight scales"),
    BackendSpec("pytorch-fp16", "torch", "fp16", device="cuda", note="eager PyTorch under autocast FP16"),
    BackendSpec("ort-cuda-fp32", "engine", "fp32", "ort-cuda", device="cuda"),
    BackendSpec("ort-cuda-fp16", "engine", "fp16", "ort-cuda", device="cuda"),
    BackendSpec("ort-trt-fp16", "engine", "fp16", "ort-trt", device="cuda", note="ONNX Runtime's TensorRT EP"),
    BackendSpec("tensorrt-fp16", "engine", "fp16", "tensorrt", device="cuda", note="native TensorRT engine"),
    BackendSpec("tensorrt-int8", "engine", "int8", "tensorrt", device="cuda", note="native TensorRT engine, Q/DQ INT8"),
]
BACKENDS: Dict[str, BackendSpec] = {s.name: s for s in _SPECS}


def select(names: Optional[str]) -> List[BackendSpec]:
    """A comma-separated list of row names (None or "all": every row) -> specs, in table order."""
    if names in (None, "", "all"):
        return list(_SPECS)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; choose from: {', '.join(BACKENDS)}")
    return [s for s in _SPECS if s.name in wanted]
