"""The CPU INT8 graph: ONNX Runtime dynamic quantization of the image graph's MatMuls.

`quantize_dynamic` stores the weights of every MatMul with a constant operand (each Linear of
Depth Anything, DINOv2 and the head) as int8, one scale per output column, and quantizes their
activations on the fly at each call (DynamicQuantizeLinear -> MatMulInteger), which MLAS runs on
integer SIMD (VNNI where the CPU has it). Convolutions, attention's activation-by-activation
MatMuls, LayerNorm, Softmax and the depth formula stay FP32. No calibration data is needed, so
any bundle gets `--precision int8` on ort-cpu (graph image_int8_cpu). Measured on the paper
preset: 0.33x PyTorch eager, 1.6x ORT FP32, median relative depth error 2.0e-2 (bench/RESULTS.md).

The error against FP32 on the parity frames is recorded in the manifest; a graph past
the tolerance (CPU_INT8_TOLERANCE unless told) is refused.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Callable, Dict, Sequence

import numpy as np

from runtime.bundle import Bundle, write_manifest

from .parity import bundle_feeds, compare, run_ort
from .weights import graph_bytes

GRAPH = "image_int8_cpu"
CPU_INT8_TOLERANCE = 3e-2  # median relative depth error vs FP32 (the INT8 goal of the benchmark)
LARGE_MODEL_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with margin: external data above


@contextlib.contextmanager
def quiet_quantizer():
    """Drop ORT's generic 'consider pre-processing' advice (the graph is exported clean)."""
    class _Filter(logging.Filter):
        def filter(self, record):
            return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    flt = _Filter()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def quantize_dynamic_graph(src: Path, dst: Path, *, per_channel: bool = True) -> Dict[str, object]:
    """FP32 ONNX graph `src` -> dynamic-INT8 graph `dst` (plus `dst`.data when large)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    large = graph_bytes(src) > LARGE_MODEL_BYTES
    with quiet_quantizer():
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], per_channel=per_channel,
                         weight_type=QuantType.QInt8, use_external_data_format=large)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "op_types": ["MatMul"], "per_channel": per_channel,
            "weights": "int8", "activations": "dynamic uint8"}


def add_cpu_int8(bundle_dir: str | Path, frames: Sequence[np.ndarray] = (), *, per_channel: bool = True,
                 max_error: float = CPU_INT8_TOLERANCE, log: Callable[[str], None] = print) -> Path:
    """Write graph image_int8_cpu into the bundle, checked against FP32, and record it."""
    bundle_dir = Path(bundle_dir)
    bundle = Bundle.open(bundle_dir)
    spec = bundle.graph("image")
    log("quantizing the image graph's MatMuls to INT8 (dynamic, no calibration) ...")
    with tempfile.TemporaryDirectory(dir=bundle_dir, prefix=".int8-cpu-") as tmp:
        staged = Path(tmp) / f"{GRAPH}.onnx"
        info = quantize_dynamic_graph(bundle.graph_path("image"), staged, per_channel=per_channel)
        feeds = {k: v for k, v in bundle_feeds(bundle, frames).items() if k in spec.inputs}
        stats = compare(GRAPH, ["depth"], run_ort(staged, feeds)[:1], run_ort(bundle.graph_path("image"), feeds)[:1])
        error = stats[0].median_rel
        log(f"  {GRAPH}: median relative depth error vs FP32 {error:.2e} (tolerance {max_error:.0e})")
        if error > max_error:
            raise ValueError(f"the CPU INT8 graph's median relative depth error {error:.2e} is past {max_error:.0e}: "
                             "nothing was written; use --precision fp32 on ort-cpu (or raise --max-error)")
        produced = sorted(Path(tmp).glob(staged.name + "*"))
        for path in produced:
            path.replace(bundle_dir / path.name)
    manifest = dict(Bundle.open(bundle_dir, verify=False).manifest)
    manifest["graphs"] = dict(manifest["graphs"], **{GRAPH: {
        "file": staged.name, "precision": "int8", "source": "image",
        "inputs": {k: list(v) for k, v in spec.inputs.items()}, "outputs": {k: list(v) for k, v in spec.outputs.items()},
        "quantization": dict(info, parity=[s.__dict__ for s in stats])}})
    extra = [p.name for p in produced if p.name != staged.name]
    manifest["extra_files"] = sorted(set(manifest.get("extra_files", [])) | set(extra))
    write_manifest(bundle_dir, manifest)
    return bundle_dir / staged.name
