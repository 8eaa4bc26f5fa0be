"""ONNX graph -> TensorRT engine + sidecar, for any flavour in `flavours.FLAVOURS`.

One function, `build_engine`: parse (the parser's own errors on failure), one optimization
profile covering every dynamic input's batch axis, build with the DETAILED layer report, check
that FP16/INT8 requests really run in FP16/INT8, then write engine, sidecar and build log
atomically under a key naming the target GPU, flavour + version, precision and shapes.
"""
from __future__ import annotations

import datetime
import functools
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from runtime.atomic import atomic_write_bytes
from runtime.backends.batching import DEFAULT_MAX_BATCH
from runtime.bundle import sha256_file
from runtime.trt_sidecar import ENGINES_DIR, EngineMeta, current_gpu_cc, engine_key, sha256_bytes, write_sidecar

from .errors import EngineBuildError, OnnxParseError
from .flavours import Flavour, resolve_flavour, resolve_target
from .report import LayerReport, check_precision, parse_build_log, parse_inspector_json

PRECISIONS = ("fp32", "fp16", "int8")
# Logged by TensorRT for RTX on every ahead-of-time build on a machine without a CUDA driver.
_NO_DRIVER_NOISE = ("cudaError 35", "CUDA driver version is insufficient")


@dataclass(frozen=True)
class BatchRange:
    """The optimization profile's batch sizes: min <= opt <= max."""

    min: int = 1
    opt: int = 1
    max: int = DEFAULT_MAX_BATCH

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch sizes must satisfy 1 <= min <= opt <= max, got {self.min}, {self.opt}, {self.max}")

    def as_tuple(self) -> Tuple[int, int, int]:
        return (self.min, self.opt, self.max)


@dataclass(frozen=True)
class EngineResult:
    """A built engine: its files and its sidecar content."""

    engine_path: Path
    sidecar_path: Path
    log_path: Path
    meta: EngineMeta

    @property
    def key(self) -> str:
        return self.meta.key


class _Log:
    """Keeps the build messages that matter: INFO and above, and the layer report (VERBOSE)."""

    def __init__(self, trt: ModuleType, echo: Optional[Callable[[str], None]] = None):
        self.severity = trt.ILogger.Severity
        self.records: List[Tuple[str, str]] = []
        self.echo = echo

    def log(self, severity, message: str) -> None:
        if severity == self.severity.VERBOSE and "LayerType: " not in message and "Layer(" not in message:
            return
        self.records.append((severity.name, message))
        if self.echo and severity <= self.severity.WARNING and not _is_noise(message):
            self.echo(f"[{severity.name}] {message}")

    def errors(self) -> List[str]:
        return [m for s, m in self.records if s in ("ERROR", "INTERNAL_ERROR") and not _is_noise(m)]

    def text(self) -> str:
        return "\n".join(f"[{s}] {m}" for s, m in self.records) + "\n"


def _is_noise(message: str) -> bool:
    return any(n in message for n in _NO_DRIVER_NOISE) and _no_gpu()


@functools.lru_cache(maxsize=1)
def _no_gpu() -> bool:
    return current_gpu_cc() is None


def _trt_logger(trt: ModuleType, sink: _Log):
    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            sink.log(severity, msg)

    return Logger()


def graph_precision(onnx_path: Path) -> Optional[str]:
    """The precision a graph carries: int8 (Q/DQ nodes), fp16 (float16 tensors) or fp32; None if
    the file is not readable ONNX (TensorRT's parser then reports why)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: the parser says it better
        return None
    graph = model.graph
    if {"QuantizeLinear", "DequantizeLinear"} & {node.op_type for node in graph.node}:
        return "int8"
    half = onnx.TensorProto.FLOAT16
    typed = list(graph.input) + list(graph.output) + list(graph.value_info)
    if (any(t.data_type == half for t in graph.initializer)
            or any(v.type.tensor_type.elem_type == half for v in typed)
            or any(a.name == "to" and a.i == half for n in graph.node if n.op_type == "Cast" for a in n.attribute)):
        return "fp16"
    return "fp32"


def build_engine(
    onnx_path: str | Path, *, flavour: str = "auto", precision: str = "fp32", batch: BatchRange | Sequence[int] = BatchRange(),
    workspace: Optional[int] = None, timing_cache: Optional[str | Path] = None, target: Optional[str] = None,
    out_dir: Optional[str | Path] = None, graph: Optional[str] = None, optimization_level: Optional[int] = None,
    verify_precision: bool = True, echo: Optional[Callable[[str], None]] = None,
) -> EngineResult:
    """Build one engine from one ONNX graph.

    onnx_path: the graph (external data beside it is read too). flavour: auto, tensorrt, rtx,
    tensorrt10, tensorrt11. precision: fp32, fp16, int8; strongly typed flavours take it from the
    graph (an FP16 graph, a Q/DQ graph); TensorRT 10 can also build fp16 from an FP32 graph.
    batch: (min, opt, max) of the batch axis of every dynamic input (e.g. image [B,3,H,W],
    text_emb [B,D], token_ids [B,77]); other axes must be static. workspace: bytes.
    timing_cache: file read before and written after the build (flavours that have one).
    target: compute capability ("sm86"); required for an ahead-of-time rtx build without a GPU.
    out_dir: default <onnx folder>/engines. graph: name for the key (default: the file stem).
    Returns EngineResult; raises OnnxParseError, EngineBuildError, PrecisionError, TargetError,
    TensorRTNotInstalled with one-line messages.
    """
    onnx_path = Path(onnx_path)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX graph not found: {onnx_path}")
    batch = batch if isinstance(batch, BatchRange) else BatchRange(*batch)
    flav, trt = resolve_flavour(flavour)
    target = resolve_target(flav, trt, target)
    strong = _typing(flav, graph_precision(onnx_path), precision, onnx_path.name)
    graph = graph or onnx_path.stem
    out_dir = Path(out_dir) if out_dir is not None else onnx_path.parent / ENGINES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)

    sink = _Log(trt, echo)
    logger = _trt_logger(trt, sink)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path, strong, flav)  # parser owns weights: keep it
    profile = _profile_shapes(network, batch, onnx_path.name)
    key = engine_key(graph, target=target, flavour=flav.name, trt_version=trt.__version__, precision=precision,
                     shape=_main_shape(profile), batch=batch.as_tuple())
    log_path = out_dir / f"{key}.log"
    config = _config(trt, builder, flav, target, strong, profile, workspace, optimization_level)
    cache_path = _attach_timing_cache(trt, config, flav, timing_cache)

    start = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        atomic_write_bytes(log_path, sink.text().encode())
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineBuildError(f"{flav.label} {trt.__version__} could not build {onnx_path.name}: "
                               f"{' | '.join(sink.errors()[-3:]) or 'no error logged'} (build log: {log_path})")
    if cache_path is not None:
        atomic_write_bytes(cache_path, memoryview(config.get_timing_cache().serialize()))

    report = _layer_report(trt, sink, logger, serialized, profile)
    counts = check_precision(report, precision, what=f"{key}") if verify_precision else report.compute_counts()
    engine_path = atomic_write_bytes(out_dir / f"{key}.engine", memoryview(serialized))
    meta = EngineMeta(
        graph=graph, engine=engine_path.name, engine_sha256=sha256_bytes(serialized), onnx=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path), flavour=flav.name, trt_version=trt.__version__, target=target,
        precision=precision, batch=batch.as_tuple(), profile=profile, key=key, typing="strong" if strong else "weak",
        layer_precisions=counts, build_seconds=round(seconds, 3),
        built=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        extra={"workspace": workspace, "optimization_level": optimization_level,
               "timing_cache": str(cache_path) if cache_path else None},
    )
    sidecar_path = write_sidecar(out_dir / f"{key}.json", meta)
    return EngineResult(engine_path=engine_path, sidecar_path=sidecar_path, log_path=log_path, meta=meta)


def _typing(flav: Flavour, graph: Optional[str], precision: str, name: str) -> bool:
    """True for a strongly typed build (precision from the graph), False for weak FP16 flags."""
    if graph is None or graph == precision:
        return True
    if precision == "fp16" and graph == "fp32" and flav.weak_typing:
        return False
    if precision == "fp16" and graph == "fp32":
        raise EngineBuildError(f"{flav.label} is strongly typed: FP16 comes from the graph, and {name} is FP32; "
                               "export the FP16 graph (tr2m-export onnx --half) and build image_fp16")
    if precision == "int8":
        raise EngineBuildError(f"INT8 needs a graph with explicit Q/DQ nodes and {name} is {graph}: "
                               "calibrate first (tr2m-export trt --int8 --calib FRAMES) and build image_int8")
    raise EngineBuildError(f"{name} is a {graph} graph: build it with --{graph} (precision {precision!r} was asked)")


def _parse(trt: ModuleType, builder, logger, onnx_path: Path, strong: bool, flav: Flavour):
    flags = 0
    if strong and "STRONGLY_TYPED" in trt.NetworkDefinitionCreationFlag.__members__:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise OnnxParseError(f"{flav.label} {trt.__version__} cannot parse {onnx_path.name}: "
                             + " | ".join(errors or ["no parser error reported"]))
    if network.num_outputs == 0:
        raise OnnxParseError(f"{onnx_path.name} parsed to a network without outputs: it is not an exported "
                             "tr2m graph (re-export it with `tr2m-export onnx`)")
    return network, parser


def _parser_error(error) -> str:
    desc = " ".join(line for line in error.desc().splitlines() if not _is_noise(line))
    node = error.node_name() or (f"#{error.node()}" if error.node() >= 0 else "")
    where = f"node {node} ({error.node_operator()}): " if node else ""
    return f"{where}{desc}"


def _profile_shapes(network, batch: BatchRange, name: str) -> Dict[str, Dict[str, Tuple[int, ...]]]:
    """{input: {min, opt, max}}: the batch axis of every input; any other dynamic axis is an error."""
    profile = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise EngineBuildError(f"{name}: input {tensor.name} {list(shape)} has a dynamic axis besides the batch; "
                                   "export the graph with a fixed size (only the batch axis may be dynamic)")
        if shape and shape[0] >= 0 and batch.as_tuple() != (shape[0],) * 3:
            raise EngineBuildError(f"{name}: input {tensor.name} has a fixed batch of {shape[0]}; "
                                   f"use --min-batch/--opt-batch/--max-batch {shape[0]} or re-export with a dynamic batch")
        profile[tensor.name] = {k: (b,) + shape[1:] for k, b in zip(("min", "opt", "max"), batch.as_tuple())}
    return profile


def _main_shape(profile: Dict[str, Dict[str, Tuple[int, ...]]]) -> Tuple[int, ...]:
    """The non-batch shape of the largest input (the image for image graphs)."""
    def volume(shape):
        out = 1
        for d in shape:
            out *= d
        return out
    largest = max(profile.values(), key=lambda p: (len(p["opt"]), volume(p["opt"])), default=None)
    return tuple(largest["opt"][1:]) if largest else ()


def _config(trt, builder, flav: Flavour, target: str, strong: bool, profile, workspace, optimization_level):
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the layer report the check reads
    if workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if optimization_level is not None:
        config.builder_optimization_level = int(optimization_level)
    if flav.ahead_of_time:
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, target.upper()), 0)
    if not strong:  # TensorRT 10 weak typing: FP16 allowed wherever TensorRT finds it faster
        config.set_flag(trt.BuilderFlag.FP16)
    opt = builder.create_optimization_profile()
    for name, shapes in profile.items():
        opt.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(opt)
    return config


def _attach_timing_cache(trt, config, flav: Flavour, path: Optional[str | Path]) -> Optional[Path]:
    if path is None:
        return None
    if not flav.timing_cache:
        warnings.warn(f"{flav.label} has no builder timing cache (timing-cache calls are no-ops): ignored {path}",
                      stacklevel=3)
        return None
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        warnings.warn(f"timing cache {path} does not fit this TensorRT/GPU: starting a new one", stacklevel=3)
        config.set_timing_cache(config.create_timing_cache(b""), False)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _layer_report(trt, sink: _Log, logger, serialized, profile) -> LayerReport:
    """The layer report from the build log; with a GPU present, IEngineInspector as a fallback."""
    report = parse_build_log(m for _, m in sink.records)
    if any(layer.compute for layer in report.layers) or _no_gpu():
        return report
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        return report
    return inspect_engine(trt, engine, profile)


def inspect_engine(trt, engine, profile: Dict[str, Dict[str, Tuple[int, ...]]]) -> LayerReport:
    """IEngineInspector's layer report of a deserialized engine (GPU only).

    A dynamic-shape engine inspected on its own reports every shape-dependent format, hence every
    data type, as unknown; through an execution context with the profile's opt shapes set, each
    layer's tensors have concrete formats and data types.
    """
    context = engine.create_execution_context()
    for name, shapes in profile.items():
        if not context.set_input_shape(name, tuple(shapes["opt"])):
            raise EngineBuildError(f"the built engine refuses its own opt shape {list(shapes['opt'])} for {name}")
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    return parse_inspector_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
