"""INT8 OpenVINO IR by NNCF post-training quantization, with an accuracy gate.

The FP32 image IR is quantized by `nncf.quantize` with the transformer model type (which keeps
LayerNorm, Softmax, GELU and the attention's activation-by-activation products float, and applies
SmoothQuant to the MatMuls) on the calibration set `calib.data` builds through the runtime's exact
preprocessing and the bundle's own text graph. Its depth is then compared with ONNX Runtime FP32 on
frames NOT used for calibration; a graph past `Int8Options.max_error` is refused unless
`accept_error` (the report says by how much).

Knobs NNCF offers for transformers that lose too much (each one a field, so tries are recorded
in the manifest): SmoothQuant's alpha for MatMuls (`smooth_quant_alpha`; -1 turns it off),
layers kept float by type or name (`ignored_types`, `ignored_names`), and the preset (mixed:
asymmetric activations).
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from export.openvino_ir import Int8Options, IRResult, OpenVINOExportError, ir_entry, openvino_module
from runtime.bundle import Bundle

from .data import CalibrationSet
from .quantize import AccuracyReport, compare_depth

class Int8AccuracyError(OpenVINOExportError):
    """The INT8 IR loses more than the tolerance allows (nothing was written)."""


def quantize_ir(model, calib: CalibrationSet, options: Int8Options):
    """FP32 openvino.Model -> INT8 openvino.Model (NNCF post-training quantization)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    advanced = None
    if options.smooth_quant_alpha is not None:
        advanced = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=options.smooth_quant_alpha))
    ignored = None
    if options.ignored_types or options.ignored_names:
        ignored = nncf.IgnoredScope(types=list(options.ignored_types), names=list(options.ignored_names),
                                    validate=False)
    dataset = nncf.Dataset(list(calib.feeds(1)))
    preset = nncf.QuantizationPreset.MIXED if options.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    return nncf.quantize(model, dataset, preset=preset, subset_size=len(calib), model_type=nncf.ModelType.TRANSFORMER,
                         fast_bias_correction=options.fast_bias_correction, ignored_scope=ignored,
                         advanced_parameters=advanced)


def ir_depth(ov, xml: Path, precision: str = "f32") -> Callable:
    """A depth runner over IR `xml` on the CPU ({"image", "text_emb"} -> depth)."""
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": precision})
    depth = next(port for port in compiled.outputs if port.get_any_name() == "depth")
    return lambda feeds: np.asarray(compiled(feeds)[depth])


def int8_ir(bundle: Bundle, staging: Path, fp32: IRResult, calib: CalibrationSet, eval_frames: Sequence[np.ndarray],
            eval_captions: Sequence[str], options: Int8Options, log: Callable[[str], None] = print) -> IRResult:
    """The FP32 image IR in `staging` -> image_int8 IR beside it, checked on held-out frames."""
    from export.parity import run_ort

    ov = openvino_module()
    started = time.perf_counter()
    log(f"quantizing the image IR with NNCF on {len(calib)} calibration frames ...")
    quantized = quantize_ir(ov.Core().read_model(str(fp32.staged)), calib, options)
    xml = staging / "image_int8.xml"
    ov.save_model(quantized, str(xml), compress_to_fp16=fp32.entry["weights"] == "fp16")
    seconds = time.perf_counter() - started
    reference = bundle.graph_path("image")
    accuracy = compare_depth(bundle, lambda feeds: run_ort(reference, feeds)[0], ir_depth(ov, xml), eval_frames,
                             eval_captions)
    log(accuracy.summary().replace("INT8 vs FP32", "OpenVINO INT8 vs ONNX Runtime FP32"))
    _gate(accuracy, options)
    entry = ir_entry("image_int8", bundle.graph("image"), fp32.entry["weights"], "int8", quantization={
        "method": "nncf.quantize", "nncf": _nncf_version(), "model_type": "transformer", **options.record(),
        "calibration": dict(calib.meta), "seconds": round(seconds, 1), "accuracy": asdict(accuracy)})
    return IRResult("image_int8", entry, xml)


def _gate(accuracy: AccuracyReport, options: Int8Options) -> None:
    if accuracy.median_rel_error <= options.max_error:
        return
    message = (f"the INT8 IR's median relative depth error {accuracy.median_rel_error:.2e} is past the tolerance "
               f"{options.max_error:.0e}")
    if options.accept_error:
        return
    raise Int8AccuracyError(f"{message}: nothing was written; try --smooth-quant-alpha, --int8-ignore-type (e.g. "
                            "MatMul of the attention) or more calibration frames, or pass --accept-int8-error")


def _nncf_version() -> str:
    import nncf

    return nncf.__version__
