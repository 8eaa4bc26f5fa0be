"""INT8 by explicit Q/DQ: ONNX Runtime's static quantizer writes graph image_int8 into the bundle.

TensorRT 11 and TensorRT for RTX have no INT8 flag or calibrator: INT8 must be in the graph as
QuantizeLinear/DequantizeLinear pairs, which TensorRT fuses into Int8 kernels. The quantizer's
defaults produce graphs TensorRT rejects or mis-fuses, hence the settings below (measured with
TensorRT for RTX 1.7): biases stay float (QuantizeBias False: TensorRT wants float biases, not
ORT's Int32 ones); only Conv, MatMul and Gemm inputs are quantized (quantizing every op also
quantizes a scalar constant feeding a Mul, which TensorRT refuses); activations and weights are
signed Int8 and symmetric (TensorRT supports zero point 0 only); weights per output channel.

Kept in float: LayerNormalization, Softmax, the final depth = 1 / (A * D_r + B) and, unless asked,
the attention's activation-by-activation MatMuls (Q K^T and softmax(.) V): their operands are the
softmax probabilities and raw keys, whose long tails lose the most to an 8-bit grid.

Accuracy is then measured against the FP32 graph with ONNX Runtime on held-out frames.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set

import numpy as np
import onnx

from export.cpu_int8 import quiet_quantizer
from export.fp16 import depth_formula_nodes
from export.weights import graph_bytes
from runtime.bundle import Bundle, write_manifest
from runtime.preprocess import Preprocessor
from runtime.text_embedder import TextEmbedder

from .data import CalibrationConfig, CalibrationSet, build_calibration_set

METHODS = ("minmax", "percentile", "entropy")
ACCURACY_GOAL = 3e-2  # median relative depth error vs FP32 on a trained model
_LARGE_MODEL_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with margin: use external data above


@dataclass(frozen=True)
class QuantizeOptions:
    """Settings of the Q/DQ quantization (see the module docstring for why these defaults)."""

    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    op_types: tuple = ("Conv", "MatMul", "Gemm")
    quantize_attention: bool = False
    keep_float: tuple = ()  # more node names to leave unquantized (e.g. found by a sensitivity sweep)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}; choose one of: {', '.join(METHODS)}")


@dataclass
class AccuracyReport:
    """INT8 vs FP32 depth on held-out frames (pixels pooled over all frames)."""

    frames: int
    median_rel_error: float
    p90_rel_error: float
    delta1_agreement: float
    goal: float = ACCURACY_GOAL

    @property
    def meets_goal(self) -> bool:
        return self.median_rel_error <= self.goal

    def summary(self) -> str:
        verdict = "meets" if self.meets_goal else "misses"
        return (f"INT8 vs FP32 on {self.frames} held-out frames: median relative depth error "
                f"{self.median_rel_error:.3e} (p90 {self.p90_rel_error:.3e}), delta1 agreement "
                f"{self.delta1_agreement:.4f}; {verdict} the {self.goal:.0e} goal")


@dataclass
class CalibrationReport:
    graph: str
    path: Path
    frames: int
    seconds: float
    quantized_nodes: int
    kept_float: List[str] = field(default_factory=list)
    accuracy: Optional[AccuracyReport] = None


def float_islands(model: onnx.ModelProto, *, quantize_attention: bool = False) -> List[str]:
    """Names of nodes that must stay float: LayerNorm, Softmax, the depth formula, attention MatMuls."""
    keep = {n.name for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")}
    keep |= depth_formula_nodes(model)
    if not quantize_attention:
        constants = _constant_tensors(model)
        keep |= {n.name for n in model.graph.node
                 if n.op_type == "MatMul" and not any(i in constants for i in n.input)}
    return sorted(keep)


def _constant_tensors(model: onnx.ModelProto) -> Set[str]:
    """Initializers and anything computed from initializers alone (Transpose/Reshape of a weight)."""
    constants = {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # nodes are topologically sorted in a valid graph
        if node.op_type == "Constant" or (node.input and all(i in constants or not i for i in node.input)):
            constants.update(node.output)
    return constants


def quantize_graph(src: str | Path, dst: str | Path, calib: CalibrationSet,
                   options: QuantizeOptions = QuantizeOptions()) -> Dict[str, object]:
    """FP32 ONNX graph -> Q/DQ INT8 graph at ``dst``; returns what was done (for the manifest)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    keep = sorted(set(float_islands(model, quantize_attention=options.quantize_attention)) | set(options.keep_float))
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    large = graph_bytes(src) > _LARGE_MODEL_BYTES
    extra = {"QuantizeBias": False, "ActivationSymmetric": True, "WeightSymmetric": True,
             "OpTypesToExcludeOutputQuantization": list(options.op_types), "CalibPercentile": options.percentile}
    with quiet_quantizer():
        quantize_static(
            str(src), str(dst), calib.reader(), quant_format=QuantFormat.QDQ, per_channel=options.per_channel,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(options.op_types), nodes_to_exclude=keep,
            calibrate_method=methods[options.method], use_external_data_format=large, extra_options=extra,
        )
    quantized = onnx.load(str(dst), load_external_data=False)
    n_q = sum(1 for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    return {"method": options.method, "per_channel": options.per_channel, "op_types": list(options.op_types),
            "quantize_attention": options.quantize_attention, "kept_float": keep, "quantize_nodes": n_q,
            "frames": len(calib), **({"percentile": options.percentile} if options.method == "percentile" else {})}


def quantize_bundle(bundle_dir: str | Path, calib: CalibrationSet, *, source: str = "image",
                    target: Optional[str] = None, options: QuantizeOptions = QuantizeOptions()) -> Path:
    """Write graph ``<source>_int8`` into the bundle and record it in the manifest; returns its path."""
    bundle_dir = Path(bundle_dir)
    bundle = Bundle.open(bundle_dir)
    spec = bundle.graph(source)
    if spec.precision != "fp32":
        raise ValueError(f"quantize the FP32 graph, not {source} ({spec.precision})")
    target = target or f"{source}_int8"
    path = bundle_dir / f"{target}.onnx"
    with tempfile.TemporaryDirectory(dir=bundle_dir, prefix=".int8-") as tmp:
        staged = Path(tmp) / path.name
        info = quantize_graph(bundle.graph_path(source), staged, calib, options)
        outputs = sorted(Path(tmp).glob(path.name + "*"))
        for produced in outputs:  # the graph and any external data file, moved in atomically
            produced.replace(bundle_dir / produced.name)
    info["calibration"] = dict(calib.meta)
    manifest = dict(Bundle.open(bundle_dir, verify=False).manifest)
    manifest["graphs"] = dict(manifest["graphs"])
    manifest["graphs"][target] = {"file": path.name, "precision": "int8", "inputs": _raw_shapes(spec.inputs),
                                  "outputs": _raw_shapes(spec.outputs), "source": source, "quantization": info}
    extra_data = [p.name for p in outputs if p.name != path.name]
    manifest["extra_files"] = sorted(set(manifest.get("extra_files", [])) | set(extra_data))
    write_manifest(bundle_dir, manifest)
    return path


def _raw_shapes(shapes: Dict[str, tuple]) -> Dict[str, list]:
    return {k: list(v) for k, v in shapes.items()}


DepthFn = Callable[[Dict[str, np.ndarray]], np.ndarray]  # {"image", "text_emb"} feeds -> depth [1,1,H,W]


def evaluate_int8(bundle_dir: str | Path, frames: Sequence[np.ndarray], captions: Sequence[str], *,
                  reference: str = "image", candidate: str = "image_int8") -> AccuracyReport:
    """Depth of ``candidate`` vs ``reference`` (ONNX Runtime CPU) on frames not used for calibration."""
    import onnxruntime as ort

    bundle = Bundle.open(bundle_dir)
    sessions = [ort.InferenceSession(str(bundle.graph_path(g)), providers=["CPUExecutionProvider"])
                for g in (reference, candidate)]
    ref, got = ((lambda feeds, s=s: s.run(["depth"], feeds)[0]) for s in sessions)
    return compare_depth(bundle, ref, got, frames, captions)


def compare_depth(bundle: Bundle, reference: DepthFn, candidate: DepthFn, frames: Sequence[np.ndarray],
                  captions: Sequence[str]) -> AccuracyReport:
    """Depth of ``candidate`` vs ``reference`` (any runners) on frames not used for calibration.

    frames: RGB uint8 [H,W,3]; captions: one per frame, or one for all. Relative error |d8-d32|/d32
    and delta1 agreement max(d8/d32, d32/d8) < 1.25 are pooled over all pixels of all frames.
    """
    if not frames:
        raise ValueError("no evaluation frames given")
    captions = list(captions) * len(frames) if len(captions) == 1 else list(captions)
    if len(captions) != len(frames):
        raise ValueError(f"got {len(captions)} captions for {len(frames)} frames: give one, or one per frame")
    preprocess = Preprocessor.for_bundle(bundle)
    unique = list(dict.fromkeys(captions))
    table = dict(zip(unique, TextEmbedder.open(bundle, backend="ort-cpu")(unique)))
    rel, agree = [], []
    for frame, caption in zip(frames, captions):
        feeds = {"image": preprocess(frame), "text_emb": table[caption][None]}
        ref, got = (np.asarray(run(feeds), dtype=np.float64) for run in (reference, candidate))
        valid = np.isfinite(ref) & np.isfinite(got) & (ref > 0) & (got > 0)
        rel.append(np.abs(got[valid] - ref[valid]) / ref[valid])
        ratio = got[valid] / ref[valid]
        agree.append(np.maximum(ratio, 1.0 / ratio) < 1.25)
    rel, agree = np.concatenate(rel), np.concatenate(agree)
    return AccuracyReport(frames=len(frames), median_rel_error=float(np.median(rel)),
                          p90_rel_error=float(np.percentile(rel, 90)), delta1_agreement=float(agree.mean()))


def read_eval_frames(sources: Sequence[str | Path], limit: int = 32) -> List[np.ndarray]:
    """Up to ``limit`` RGB frames from images, folders or videos, in order."""
    from runtime.sources import open_source

    frames: List[np.ndarray] = []
    for spec in sources:
        with open_source(spec) as source:
            for frame in source:
                frames.append(frame.rgb)
                if len(frames) >= limit:
                    return frames
    return frames


def calibrate_bundle(bundle_dir: str | Path, sources: Sequence[str | Path], *, captions: Optional[Sequence[str]] = None,
                     sampling: CalibrationConfig = CalibrationConfig(), options: QuantizeOptions = QuantizeOptions(),
                     eval_sources: Sequence[str | Path] = (), eval_captions: Optional[Sequence[str]] = None,
                     echo: Callable[[str], None] = print) -> CalibrationReport:
    """Calibration set -> image_int8 in the bundle -> (optional) accuracy on held-out frames."""
    start = time.perf_counter()
    calib = build_calibration_set(bundle_dir, sources, captions=captions, config=sampling)
    echo(f"calibrating on {len(calib)} frames ({options.method}) ...")
    path = quantize_bundle(bundle_dir, calib, options=options)
    info = Bundle.open(bundle_dir, verify=False).manifest["graphs"][path.stem]["quantization"]
    report = CalibrationReport(graph=path.stem, path=path, frames=len(calib), seconds=time.perf_counter() - start,
                               quantized_nodes=int(info["quantize_nodes"]), kept_float=list(info["kept_float"]))
    echo(f"wrote {path.name}: {report.quantized_nodes} QuantizeLinear nodes, {len(report.kept_float)} nodes kept "
         f"float, {report.seconds:.1f} s")
    if eval_sources:
        frames = read_eval_frames(eval_sources)
        report.accuracy = evaluate_int8(bundle_dir, frames, list(eval_captions or calib.meta["captions"][:1]))
        _record_accuracy(bundle_dir, path.stem, report.accuracy)
    return report


def _record_accuracy(bundle_dir: Path, graph: str, accuracy: AccuracyReport) -> None:
    manifest = dict(Bundle.open(bundle_dir, verify=False).manifest)
    manifest["graphs"][graph]["quantization"]["accuracy"] = asdict(accuracy)
    write_manifest(Path(bundle_dir), manifest)
