"""What precision the built engine really runs in, read from the builder's own layer report.

"Built FP16" engines that run FP32 are a known trap (a strongly typed network follows the graph's
types, a weakly typed one may fall back per layer). With ProfilingVerbosity.DETAILED the builder
logs every fused kernel with its tensors' data types; this module parses that report and decides.

Three report shapes are read (all observed in the wild; the first one checked here):
- Myelin / TensorRT for RTX and TensorRT >= 10 transformer regions, one line per kernel:
  ``Name: N, LayerType: gemm, Inputs: [ { Name: x, Dimensions: [..], Datatype: Half, ... } ], ...``
  (``Format/Datatype: Half`` in TensorRT 10);
- the classic "Engine Layer Information" lines:
  ``Layer(CaskConvolution): N, Tactic: 0x.., in[Half(1,3,224,224)] -> out[Half(...)]``;
- IEngineInspector JSON (needs a deserialized engine, hence a GPU):
  ``{"Layers": [{"Name", "LayerType", "Inputs": [{"Format/Datatype": "Channel major FP16 ..."}]}]}``
  in TensorRT 10; TensorRT 11 split that field into ``"DataType": "Half"`` and ``"Format"`` (and
  replaced "Bindings" by "I/O Tensors"); TensorRT for RTX writes ``"Datatype"``. Keys are matched
  without regard to case, the data-type field first.

A layer counts as compute when its type is a convolution, deconvolution, GEMM/matrix multiply,
fused fully-connected or attention kernel; its precision is the data type of its first
floating-point or Int8 activation input (the operand the math runs on).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from .errors import PrecisionError

# Substrings of compute layer types (lower case), across the three report shapes.
COMPUTE_TYPES = ("conv", "correlation", "gemm", "matrixmultiply", "matmul", "fullyconnected",
                 "runtime_fusion", "attention", "mha")
# Data type spellings -> our precision names; anything else (Int32, Int64, Bool) is index data.
_DTYPES = (("uint8", None), ("bfloat16", "bf16"), ("bf16", "bf16"), ("half", "fp16"), ("fp16", "fp16"), ("int8", "int8"),
           ("fp8", "fp8"), ("e4m3", "fp8"), ("int4", "int4"), ("fp4", "fp4"), ("float", "fp32"),
           ("fp32", "fp32"))
REDUCED = ("fp16", "bf16", "int8", "fp8", "int4", "fp4")

_MYELIN = re.compile(r"^Name: (?P<name>.*?), LayerType: (?P<type>[^,]*), Inputs: (?P<rest>.*)$")
_CLASSIC = re.compile(r"^Layer\((?P<type>[^)]*)\): (?P<name>.*?), Tactic: [^,]*, (?P<io>.*)$")
_MYELIN_DTYPE = re.compile(r"(?:Format/)?Datatype: ([A-Za-z0-9]+)")
_CLASSIC_DTYPE = re.compile(r"\[([A-Za-z0-9]+)\(")


@dataclass(frozen=True)
class LayerInfo:
    """One engine layer (kernel): its type and the precision of its activation input (None: index/shape data)."""

    name: str
    kind: str
    precision: Optional[str]

    @property
    def compute(self) -> bool:
        kind = self.kind.lower()
        return any(t in kind for t in COMPUTE_TYPES)


@dataclass(frozen=True)
class LayerReport:
    layers: Sequence[LayerInfo]

    def compute_counts(self) -> Dict[str, int]:
        """Compute layers per precision, e.g. {"fp16": 57, "fp32": 3}."""
        return dict(Counter(layer.precision or "other" for layer in self.layers if layer.compute))

    def summary(self) -> str:
        counts = self.compute_counts()
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def dtype_name(text: str) -> Optional[str]:
    """'Half', 'FP16 format', 'Int8', 'Float' ... -> 'fp16', 'int8', 'fp32'; None for index types."""
    low = text.lower()
    for spelling, name in _DTYPES:
        if spelling in low:
            return name
    return None


def _first_precision(dtypes: Iterable[str]) -> Optional[str]:
    for text in dtypes:
        name = dtype_name(text)
        if name is not None:
            return name
    return None


def _parse_myelin(line: str) -> Optional[LayerInfo]:
    match = _MYELIN.match(line)
    if not match:
        return None
    rest = match.group("rest")
    inputs, _, outputs = rest.partition("Outputs:")
    inputs = inputs.split("Constants:")[0]
    outputs = outputs.split("TacticName:")[0]
    precision = _first_precision(_MYELIN_DTYPE.findall(inputs)) or _first_precision(_MYELIN_DTYPE.findall(outputs))
    return LayerInfo(match.group("name"), match.group("type").strip(), precision)


def _parse_classic(line: str) -> Optional[LayerInfo]:
    match = _CLASSIC.match(line)
    if not match:
        return None
    inputs, _, outputs = match.group("io").partition(" -> ")
    precision = _first_precision(_CLASSIC_DTYPE.findall(inputs)) or _first_precision(_CLASSIC_DTYPE.findall(outputs))
    return LayerInfo(match.group("name"), match.group("type"), precision)


def parse_build_log(messages: Iterable[str]) -> LayerReport:
    """The layer report inside the builder's log messages (DETAILED verbosity, VERBOSE severity)."""
    layers: List[LayerInfo] = []
    for message in messages:
        if "LayerType: " not in message and "Layer(" not in message:
            continue
        for line in message.splitlines():
            info = _parse_myelin(line.strip()) or _parse_classic(line.strip())
            if info is not None:
                layers.append(info)
    return LayerReport(tuple(layers))


def parse_inspector_json(text: str) -> LayerReport:
    """IEngineInspector.get_engine_information(LayerInformationFormat.JSON) -> LayerReport
    (TensorRT 10, 11 and TensorRT for RTX spellings)."""
    layers: List[LayerInfo] = []
    for layer in json.loads(text).get("Layers", []):
        if not isinstance(layer, dict):  # ProfilingVerbosity below DETAILED lists names only
            continue
        dtypes = [_tensor_dtype(t) for t in [*layer.get("Inputs", []), *layer.get("Outputs", [])] if isinstance(t, dict)]
        layers.append(LayerInfo(layer.get("Name", ""), layer.get("LayerType", ""), _first_precision(dtypes)))
    return LayerReport(tuple(layers))


# Where a tensor's data type is written, most specific first: TensorRT 11 "DataType", RTX
# "Datatype", TensorRT 10 "Format/Datatype" (a format description naming the type).
_DTYPE_KEYS = ("datatype", "format/datatype", "format")


def _tensor_dtype(tensor: Dict[str, object]) -> str:
    fields = {str(k).lower(): v for k, v in tensor.items()}
    for key in _DTYPE_KEYS:
        value = fields.get(key)
        if isinstance(value, str) and dtype_name(value) is not None:
            return value
    return ""


def check_precision(report: LayerReport, precision: str, *, what: str = "engine") -> Dict[str, int]:
    """Fail when FP16/INT8 was asked for but most compute runs in FP32; returns the counts.

    fp16: compute layers in reduced precision must outnumber FP32 ones. int8: the same, and at
    least one Int8 compute kernel must exist. fp32: nothing to check.
    """
    counts = report.compute_counts()
    if precision == "fp32":
        return counts
    total = sum(n for p, n in counts.items() if p != "other")  # layers whose precision is known
    if total == 0:
        unknown = f" ({counts['other']} compute layers of unknown precision)" if counts.get("other") else ""
        raise PrecisionError(
            f"{what}: the layer report gives no compute layer's precision{unknown}, so the {precision.upper()} "
            "precision cannot be verified (profiling verbosity DETAILED is required, and a dynamic-shape "
            "engine must be inspected through an execution context with its shapes set)")
    fp32 = counts.get("fp32", 0)
    reduced = sum(counts.get(p, 0) for p in REDUCED)
    if fp32 > reduced:
        raise PrecisionError(
            f"{what}: {precision.upper()} was asked for, but {fp32} of {total} compute layers run in FP32 "
            f"({report.summary()}): the graph does not carry the reduced precision; use the "
            f"{'FP16 graph (tr2m-export onnx --half)' if precision == 'fp16' else 'Q/DQ graph (calibrate with --calib)'}")
    if precision == "int8" and counts.get("int8", 0) == 0:
        raise PrecisionError(f"{what}: INT8 was asked for, but no compute layer runs in Int8 ({report.summary()}): "
                             "the Q/DQ nodes were not honoured")
    return counts
