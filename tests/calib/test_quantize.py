"""INT8 by explicit Q/DQ: a graph TensorRT accepts, float islands kept, accuracy vs FP32 measured."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from calib import (
    CalibrationConfig, QuantizeOptions, build_calibration_set, evaluate_int8, float_islands, quantize_bundle,
    read_eval_frames,
)
from runtime.bundle import Bundle

MOVES = {"Slice", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat"}
CAPTIONS = ["a bedroom", "a kitchen table", "a roller coaster"]


def _videos(shared_data):
    return [shared_data / "videos" / n for n in ("sam2_bedroom.mp4", "sam2_04_coffee.mp4", "vda_davis_rollercoaster.mp4")]


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, shared_data, tmp_path_factory):
    """A copy of the tiny bundle with image_int8, calibrated on video frames."""
    out = tmp_path_factory.mktemp("calib") / "bundle"
    shutil.copytree(tiny_bundle.bundle, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 30 frames: below the recommended count, on purpose (test time)
        calib = build_calibration_set(out, _videos(shared_data), captions=CAPTIONS,
                                      config=CalibrationConfig(size=30, every=7, seed=0))
    quantize_bundle(out, calib)
    return out


def test_float_islands_keep_layernorm_softmax_and_the_depth_formula(tiny_bundle):
    model = onnx.load(str(tiny_bundle.bundle / "image.onnx"))
    keep = set(float_islands(model))
    by_op = lambda op: {n.name for n in model.graph.node if n.op_type == op}  # noqa: E731
    assert by_op("LayerNormalization") | by_op("Softmax") | by_op("Reciprocal") <= keep
    attention = keep & by_op("MatMul")
    assert attention and len(attention) < len(by_op("MatMul"))  # weight MatMuls stay quantizable
    assert not set(float_islands(model, quantize_attention=True)) & by_op("MatMul")


def test_the_qdq_graph_is_what_tensorrt_accepts(int8_bundle):
    bundle = Bundle.open(int8_bundle)  # checksums include the new graph
    spec = bundle.graph("image_int8")
    assert spec.precision == "int8" and spec.inputs == bundle.graph("image").inputs
    model = onnx.load(str(bundle.graph_path("image_int8")))
    init = {t.name: t for t in model.graph.initializer}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq
    for node in dq + [n for n in model.graph.node if n.op_type == "QuantizeLinear"]:
        zero = onnx.numpy_helper.to_array(init[node.input[2]])
        assert zero.dtype == np.int8 and not zero.any(), node.name  # signed, symmetric: zero point 0
    for node in dq:
        assert not (node.input[0] in init and init[node.input[0]].data_type == onnx.TensorProto.INT32)  # no Int32 bias
        # Q/DQ only in front of Conv/MatMul/Gemm (possibly through pure data movement): never on the
        # input of LayerNorm, Softmax, activations or the depth formula 1 / (A * D_r + B).
        assert {c.op_type for c in consumers[node.output[0]]} <= {"Conv", "MatMul", "Gemm"} | MOVES, node.name
    assert {"Conv", "MatMul"} <= {c.op_type for node in dq for c in consumers[node.output[0]]}
    info = bundle.manifest["graphs"]["image_int8"]["quantization"]
    assert info["method"] == "minmax" and info["per_channel"] and info["calibration"]["frames"] == 30


def test_int8_accuracy_against_fp32_on_held_out_frames(int8_bundle, shared_data):
    frames = read_eval_frames([shared_data / "metric3d_nyu" / "rgb", shared_data / "metric3d_kitti" / "rgb"])
    report = evaluate_int8(int8_bundle, frames, ["a room"] * 3 + ["a street"] * 3)
    print("\n" + report.summary())  # random tiny weights: reported, not held to the 3e-2 goal
    assert report.frames == 6 and 0.0 <= report.delta1_agreement <= 1.0
    assert np.isfinite(report.median_rel_error) and report.median_rel_error < 0.5


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="minmax, percentile, entropy"):
        QuantizeOptions(method="kl")


def test_cli_calibrates_reports_and_builds_an_int8_engine(tiny_bundle, shared_data, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX builds engines without a GPU")
    from export.cli import main

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.bundle, bundle)
    args = ["trt", "--bundle", str(bundle), "--int8", "--graphs", "image", "--flavour", "rtx", "--target", "sm86",
            "--calib", str(shared_data / "videos" / "sam2_bedroom.mp4"), "--calib-caption", "a bedroom",
            "--calib-size", "8", "--calib-every", "25", "--calib-eval", str(shared_data / "metric3d_nyu" / "rgb")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "INT8 vs FP32 on 3 held-out frames" in result.output and "int8" in result.output
    engines = Bundle.open(bundle).manifest["engines"]
    assert [e["precision"] for e in engines.values()] == ["int8"]
