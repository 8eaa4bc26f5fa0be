"""Footprint: each weight stored once (shared weight files), the same graphs as an in-memory
export, bundles from before still open, and `tr2m-export info`."""
import hashlib
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from export.cli import main as export_main
from export.fp16 import prescale_attention
from export.graphs import GRAPHS, example_inputs
from export.onnx_export import OPSET, _quiet, export_onnx, simplify
from export.weights import MIN_BYTES, WeightStore, weight_file
from runtime import Engine
from runtime.bundle import Bundle, write_manifest

FP32_GRAPHS = ("image", "relative", "scale_shift", "text")


def _tensors(path):
    """sha256 -> byte count of every initializer of at least MIN_BYTES in the graph at `path`."""
    model = onnx.load(str(path))
    blobs = (onnx.numpy_helper.to_array(t).tobytes() for t in model.graph.initializer)
    return {hashlib.sha256(b).hexdigest(): len(b) for b in blobs if len(b) >= MIN_BYTES}


def _locations(path):
    model = onnx.load(str(path), load_external_data=False)
    return {tuple(sorted((e.key, e.value) for e in t.external_data)) for t in model.graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL}


def test_each_fp32_weight_is_stored_once(tiny_bundle):
    bundle = tiny_bundle.bundle
    unique = {}
    for name in FP32_GRAPHS:
        unique.update(_tensors(bundle / f"{name}.onnx"))
    stored = (bundle / weight_file("fp32")).stat().st_size
    # Before: each graph carried its own copy (image + relative + scale_shift ~ 2x the image weights).
    assert sum(unique.values()) <= stored <= 1.1 * sum(unique.values())
    halves = _locations(bundle / "relative.onnx") | _locations(bundle / "scale_shift.onnx")
    assert halves and halves <= _locations(bundle / "image.onnx")  # the halves read the fused graph's bytes
    graph_files = sum((bundle / f"{name}.onnx").stat().st_size for name in FP32_GRAPHS)
    assert graph_files < 0.05 * stored  # graph files hold nodes, not weights
    manifest = Bundle.open(bundle).manifest
    assert {weight_file("fp32"), weight_file("fp16")} <= set(manifest["files"])  # every byte read is checksummed


def test_export_through_the_weight_file_gives_the_in_memory_graph(tiny_model, tmp_path):
    """Simplifying with the weights on disk must give the graph (and outputs) an in-memory export
    gives. The text graph: its position table feeds an Add, a constant the simplifier inspects."""
    definition = GRAPHS["text"]
    module = definition.wrap(tiny_model).eval()
    inputs = example_inputs(tiny_model, definition.inputs)
    store = WeightStore(tmp_path / weight_file("fp32"))
    ours = export_onnx(module, inputs, definition.outputs, tmp_path / "text.onnx", metadata={}, store=store)
    batch = torch.export.Dim("batch", min=1, max=64)
    with _quiet():
        program = torch.onnx.export(module, tuple(inputs.values()), dynamo=True, opset_version=OPSET,
                                    input_names=list(inputs), output_names=list(definition.outputs),
                                    dynamic_shapes={n: {0: batch} for n in inputs}, optimize=True, verify=False,
                                    report=False)
    reference = simplify(program.model_proto)
    prescale_attention(reference)  # as export_onnx does
    onnx.load_external_data_for_model(ours, str(tmp_path))
    assert [(n.op_type, list(n.input), list(n.output)) for n in ours.graph.node] == \
           [(n.op_type, list(n.input), list(n.output)) for n in reference.graph.node]
    values = lambda m: {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}  # noqa: E731
    a, b = values(ours), values(reference)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    feeds = {k: v.numpy() for k, v in inputs.items()}
    got = ort.InferenceSession(str(tmp_path / "text.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    want = ort.InferenceSession(reference.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))  # bit for bit


def _old_layout(bundle, out):
    """The bundle as exports before shared weight files wrote it: every graph with its own weights."""
    out.mkdir()
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in ("image", "image_fp16", "relative", "scale_shift", "text"):
        onnx.save_model(onnx.load(str(bundle / f"{name}.onnx")), str(out / f"{name}.onnx"))
    shutil.copy(bundle / "tokenizer.json", out / "tokenizer.json")
    manifest["graphs"] = {k: v for k, v in manifest["graphs"].items() if k in
                          ("image", "image_fp16", "relative", "scale_shift", "text")}
    manifest["extra_files"] = []
    for key in ("files", "format", "format_version"):
        manifest.pop(key)
    write_manifest(out, manifest)
    return out


@pytest.fixture(scope="module")
def old_bundle(tiny_bundle, tmp_path_factory):
    return _old_layout(tiny_bundle.bundle, tmp_path_factory.mktemp("old") / "bundle")


def test_bundles_from_before_still_open_and_give_the_same_depth(tiny_bundle, old_bundle, real_frames, tmp_path):
    new = Engine.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path / "a")
    old = Engine.open(old_bundle, backend="ort-cpu", cache_dir=tmp_path / "b")
    for frame in real_frames[:2]:
        assert np.array_equal(new.predict(frame, caption="an office"), old.predict(frame, caption="an office"))


def test_info_lists_graphs_shared_weights_and_checksums(tiny_bundle, old_bundle, tmp_path):
    runner = CliRunner()
    result = runner.invoke(export_main, ["info", str(tiny_bundle.bundle)])
    assert result.exit_code == 0, result.output
    assert "read by image, relative, scale_shift, text" in result.output
    assert "read by image_fp16, relative_fp16, scale_shift_fp16" in result.output
    assert "scale_shift_fp16   fp16" in result.output and "checksums: all" in result.output
    old = runner.invoke(export_main, ["info", str(old_bundle)])
    assert old.exit_code == 0 and "re-export with `tr2m-export onnx`" in old.output
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle.bundle, copy)
    with open(copy / weight_file("fp32"), "r+b") as f:
        f.write(b"\x01\x02")
    bad = runner.invoke(export_main, ["info", str(copy)])
    assert bad.exit_code == 1 and f"{weight_file('fp32')} MISMATCH" in bad.output
    assert "Traceback" not in bad.output
    with open(copy / "scale_shift.onnx", "ab") as f:  # a graph cut or grown in transfer no longer parses
        f.write(b"x")
    damaged = runner.invoke(export_main, ["info", str(copy)])
    assert damaged.exit_code == 1 and not isinstance(damaged.exception, Exception)  # SystemExit(1), not a crash
    assert "scale_shift.onnx MISMATCH" in damaged.output and "cannot be read (damaged)" in damaged.output
