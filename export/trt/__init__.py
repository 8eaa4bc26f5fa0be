"""TensorRT engines from bundle graphs: one builder over TensorRT 10, 11 and TensorRT for RTX.

    from export.trt import build_engine
    result = build_engine("bundle/image_fp16.onnx", flavour="rtx", precision="fp16",
                          batch=(1, 1, 8), target="sm86")

Nothing here imports TensorRT at import time; a missing TensorRT is reported when a build starts,
with the pip extra that installs it.
"""
from runtime.trt_sidecar import EngineError, EngineMeta, check_engine, read_sidecar

from .build import BatchRange, EngineResult, build_engine, graph_precision
from .bundle_engines import build_bundle_engines, choose_graph, record_engines
from .errors import EngineBuildError, OnnxParseError, PrecisionError, TargetError, TensorRTNotInstalled, TrtError
from .flavours import FLAVOURS, Flavour, resolve_flavour
from .report import LayerReport, check_precision, parse_build_log, parse_inspector_json

__all__ = [
    "BatchRange", "EngineBuildError", "EngineError", "EngineMeta", "EngineResult", "FLAVOURS", "Flavour",
    "LayerReport", "OnnxParseError", "PrecisionError", "TargetError", "TensorRTNotInstalled", "TrtError",
    "build_bundle_engines", "build_engine", "check_engine", "check_precision", "choose_graph", "graph_precision",
    "parse_build_log", "parse_inspector_json", "read_sidecar", "record_engines", "resolve_flavour",
]
