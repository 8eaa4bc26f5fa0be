"""`tr2m-export openvino`: the bundle's ONNX graphs as OpenVINO IR, checked, in the bundle.

Each graph goes through OpenVINO's own converter (`openvino.convert_model` on the ONNX file) and
is saved as IR (.xml + .bin) under <bundle>/openvino/, recorded in the manifest's ``openvino``
section with checksums like every other graph.

Weights: FP16 on disk halves the bundle, but rounds every weight to 11 bits of mantissa. With
``weights="auto"`` a graph keeps FP16 weights only when its outputs, computed in f32, stay within
FP16_WEIGHT_TOLERANCE of ONNX Runtime FP32 on the parity frames; otherwise it is stored FP32.

Parity (median relative error per output, IR with f32 arithmetic forced vs ONNX Runtime FP32):
FP32 weights 1e-4 (the ONNX tolerance: kernels sum in another order); FP16 weights 1e-3
(observed 3-6e-4 on the tiny preset: the weight rounding, not the arithmetic).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from runtime.backends.openvino import SECTION
from runtime.bundle import Bundle, write_manifest

from .parity import ParityStat, bundle_feeds, compare

IR_DIR = "openvino"
WEIGHTS = ("auto", "fp16", "fp32")
FP32_TOLERANCE = 1e-4
FP16_WEIGHT_TOLERANCE = 1e-3
DEFAULT_GRAPHS = ("image", "relative", "scale_shift", "text")
OV_INT8 = "openvino-int8"  # the calibrator (entry point in tr2m.calibrators) that writes image_int8
PRESETS = ("performance", "mixed")
INT8_TOLERANCE = 3e-2  # median relative depth error vs FP32 on held-out frames (calib.ACCURACY_GOAL)


class OpenVINOExportError(RuntimeError):
    """The IR could not be made or failed its parity check (the bundle is left as it was)."""


@dataclass(frozen=True)
class IROptions:
    """graphs: ONNX graphs of the bundle to convert; weights: auto, fp16 or fp32 (see module doc)."""

    graphs: Tuple[str, ...] = DEFAULT_GRAPHS
    weights: str = "auto"

    def __post_init__(self):
        if self.weights not in WEIGHTS:
            raise ValueError(f"unknown weight format {self.weights!r}; choose one of: {', '.join(WEIGHTS)}")


@dataclass(frozen=True)
class Int8Options:
    """NNCF settings and the accuracy gate (median relative depth error vs FP32, held-out frames)."""

    preset: str = "performance"
    smooth_quant_alpha: Optional[float] = None  # None: NNCF's transformer default; -1: off
    ignored_types: Tuple[str, ...] = ()
    ignored_names: Tuple[str, ...] = ()
    fast_bias_correction: bool = True
    max_error: float = INT8_TOLERANCE
    accept_error: bool = False

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown NNCF preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")
        if self.max_error <= 0:
            raise ValueError(f"the INT8 error tolerance must be positive, got {self.max_error}")

    def record(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class IRResult:
    """One converted graph: its manifest entry and the parity of what was kept."""

    name: str
    entry: Dict
    staged: Path  # the .xml in the staging folder (its .bin beside it)
    parity: List[ParityStat] = field(default_factory=list)


def openvino_module():
    try:
        import openvino
    except ImportError as e:
        raise OpenVINOExportError("OpenVINO is not installed: pip install 'tr2m[openvino]'") from e
    return openvino


def ir_parity(ov, xml: Path, name: str, feeds: Dict[str, np.ndarray], reference: Dict[str, np.ndarray]
              ) -> List[ParityStat]:
    """IR at ``xml`` with f32 arithmetic forced vs the reference outputs (ONNX Runtime FP32)."""
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    inputs = [port.get_any_name() for port in compiled.inputs]
    results = compiled({k: feeds[k] for k in inputs})
    outputs = [port.get_any_name() for port in compiled.outputs]
    got = [np.asarray(results[port]) for port in compiled.outputs]
    return compare(name, outputs, got, [reference[k] for k in outputs])


def convert_graph(ov, bundle: Bundle, name: str, staging: Path, feeds, weights: str,
                  log: Callable[[str], None]) -> IRResult:
    """ONNX graph `name` -> IR in `staging`, FP16 weights if allowed and close enough."""
    spec = bundle.graph(name)
    onnx_path = bundle.graph_path(name)
    graph_feeds = {k: feeds[k] for k in spec.inputs}
    reference = _ort_outputs(onnx_path, graph_feeds)
    model = ov.convert_model(str(onnx_path))
    tried = ("fp16", "fp32") if weights == "auto" else (weights,)
    for fmt in tried:
        xml = staging / f"{name}.{fmt}.xml"
        ov.save_model(model, str(xml), compress_to_fp16=fmt == "fp16")
        stats = ir_parity(ov, xml, name, graph_feeds, reference)
        limit = FP16_WEIGHT_TOLERANCE if fmt == "fp16" else FP32_TOLERANCE
        worst = max(s.median_rel for s in stats)
        if worst <= limit:
            log(f"  {name}: {fmt} weights, median relative error vs ONNX Runtime FP32 {worst:.1e} (<= {limit:.0e})")
            return IRResult(name, ir_entry(name, spec, fmt, "fp32", parity=stats), xml, stats)
        log(f"  {name}: {fmt} weights give {worst:.1e} > {limit:.0e}" + (", trying fp32" if fmt != tried[-1] else ""))
    raise OpenVINOExportError(f"the {name} IR does not match ONNX Runtime FP32 (median relative error {worst:.1e} > "
                              f"{limit:.0e}): OpenVINO {ov.__version__} may mis-convert an operator of this graph")


def _ort_outputs(path: Path, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def ir_entry(name: str, spec, weights: str, precision: str, **extra) -> Dict:
    """The manifest entry of IR graph `name` made from ONNX graph `spec` (a runtime GraphSpec)."""
    extra = {k: [s.__dict__ for s in v] if k == "parity" else v for k, v in extra.items()}
    return {"xml": f"{IR_DIR}/{name}.xml", "bin": f"{IR_DIR}/{name}.bin", "source": spec.name,
            "precision": precision, "weights": weights,
            "inputs": {k: list(v) for k, v in spec.inputs.items()},
            "outputs": {k: list(v) for k, v in spec.outputs.items()}, **extra}


def install(bundle_dir: Path, results: Sequence[IRResult]) -> None:
    """Move staged IR into <bundle>/openvino/ and record it in the manifest (IR of other graphs
    already there is kept). The manifest is written last, atomically: a crash before it leaves
    the old manifest, whose checksums refuse any half-replaced file."""
    ov = openvino_module()
    target = bundle_dir / IR_DIR
    target.mkdir(exist_ok=True)
    manifest = dict(Bundle.open(bundle_dir, verify=False).manifest)
    section = dict(manifest.get(SECTION, {}))
    graphs = dict(section.get("graphs", {}))
    for result in results:
        result.staged.replace(bundle_dir / result.entry["xml"])
        result.staged.with_suffix(".bin").replace(bundle_dir / result.entry["bin"])
        graphs[result.name] = result.entry
    section.update(graphs=graphs, version=ov.__version__)
    manifest[SECTION] = section
    write_manifest(bundle_dir, manifest)


def export_openvino(bundle_dir: str | Path, options: IROptions = IROptions(), frames: Sequence[np.ndarray] = (),
                    log: Callable[[str], None] = print, after: Optional[Callable] = None) -> List[IRResult]:
    """Convert the bundle's graphs to IR, check each, then install them all at once.

    after(bundle, staging, results) may add results (e.g. an INT8 IR made from the FP32 one)
    before anything is installed; a failure there leaves the bundle untouched too."""
    ov = openvino_module()
    bundle_dir = Path(bundle_dir)
    bundle = Bundle.open(bundle_dir)
    missing = [g for g in options.graphs if not bundle.has_graph(g)]
    if missing:
        raise OpenVINOExportError(f"the bundle has no {', '.join(missing)} graph (it has: "
                                  f"{', '.join(sorted(bundle.manifest['graphs']))})")
    feeds = bundle_feeds(bundle, frames)
    staging = Path(tempfile.mkdtemp(prefix=".openvino-partial-", dir=bundle_dir))
    try:
        results = []
        for name in options.graphs:
            log(f"converting {name} to OpenVINO IR ...")
            results.append(convert_graph(ov, bundle, name, staging, feeds, options.weights, log))
        if after is not None:
            results += after(bundle, staging, results)
        install(bundle_dir, results)
        return results
    finally:
        shutil.rmtree(staging, ignore_errors=True)
