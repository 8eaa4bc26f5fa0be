import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import tr2m
from export import parity
from export.bundle import ExportError, ExportOptions, export_bundle
from export.cli import main as export_main
from runtime.bundle import Bundle
from runtime.errors import BundleError
from tests.conftest import real_frame_paths
from tr2m.transforms import prepare, to_tensor


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _same_model(seed=0):
    torch.manual_seed(seed)
    return tr2m.randomize_for_demo(tr2m.create_model("tiny", pretrained=False), seed=seed)


def test_fp32_graphs_match_pytorch_on_real_frames(tiny_bundle, real_frames):
    bundle = Bundle.open(tiny_bundle.bundle)
    model = _same_model()
    cfg = model.config
    images = torch.cat([prepare(to_tensor(f)[None], cfg.input_size, cfg.mean, cfg.std) for f in real_frames[:2]])
    text = model.encode_text(["an office", "a road"])
    with torch.no_grad():
        ref = model(images, text)
    got = _session(bundle.graph_path("image")).run(None, {"image": images.numpy(), "text_emb": text.numpy()})
    for name, value in zip(("depth", "scale", "shift", "rel"), got):
        assert value.shape == (2, 1, *cfg.input_size)
        err = parity.relative_error(value, ref[name].numpy())
        assert np.median(err) <= 1e-4, name
    # The exporter's own parity report covers batch 1 and 2 for every graph.
    reported = {(s.graph, s.output, s.batch) for s in tiny_bundle.parity}
    for graph in ("image", "relative", "scale_shift", "text", "image_fp16"):
        assert {b for g, _, b in reported if g == graph} == {1, 2}


def test_text_graph_matches_pytorch_with_the_bundled_tokenizer(tiny_bundle):
    from runtime.tokenizer import ClipTokenizer

    bundle = Bundle.open(tiny_bundle.bundle)
    captions = ["a street at night", "Tom &amp; Jerry's kitchen", ""]
    ids = ClipTokenizer.from_file(bundle.tokenizer_path)(captions)
    emb = _session(bundle.graph_path("text")).run(None, {"token_ids": ids})[0]
    np.testing.assert_allclose(emb, _same_model().encode_text(captions).numpy(), rtol=1e-4, atol=1e-5)


def test_keyframe_halves_recompose_the_fused_graph(tiny_bundle, real_frames):
    bundle = Bundle.open(tiny_bundle.bundle)
    model = _same_model()
    image = prepare(to_tensor(real_frames[0])[None], model.config.input_size, model.config.mean, model.config.std).numpy()
    text = model.encode_text("a kitchen").numpy()
    depth = _session(bundle.graph_path("image")).run(["depth"], {"image": image, "text_emb": text})[0]
    rel = _session(bundle.graph_path("relative")).run(None, {"image": image})[0]
    scale, shift = _session(bundle.graph_path("scale_shift")).run(None, {"image": image, "text_emb": text})
    np.testing.assert_allclose(1.0 / (scale * rel + shift), depth, rtol=1e-5)


def test_fp16_graph_is_close_and_keeps_fp32_islands(tiny_bundle):
    bundle = Bundle.open(tiny_bundle.bundle)
    stats = [s for s in tiny_bundle.parity if s.graph == "image_fp16" and s.output == "depth"]
    assert stats and all(s.median_rel <= 5e-3 for s in stats)
    assert all(s.median_rel > 0 for s in stats)  # it really is a different precision
    model = onnx.load(str(bundle.graph_path("image_fp16")))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in
             list(onnx.shape_inference.infer_shapes(model).graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    fp16 = onnx.TensorProto.FLOAT16
    assert all(t == onnx.TensorProto.FLOAT for n, t in types.items() if n in {"image", "text_emb", "depth"})
    exp_inputs = {n.input[0] for n in model.graph.node if n.op_type == "Exp"}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    before_exp = [n for n in convs if n.output[0] in exp_inputs]
    assert len(before_exp) == 2 and all(types.get(n.input[0]) == onnx.TensorProto.FLOAT for n in before_exp)
    assert all(types.get(n.input[0]) == fp16 for n in convs if n not in before_exp)
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "Reciprocal"):
            assert types.get(node.input[0]) != fp16, node.name


def test_manifest_records_contract_and_checksums(tiny_bundle):
    bundle = Bundle.open(tiny_bundle.bundle)
    manifest = bundle.manifest
    assert manifest["untrained"] is True
    assert manifest["preprocessing"]["height"] == 56 and manifest["preprocessing"]["align_corners"] is True
    assert manifest["graphs"]["image"]["inputs"]["image"] == ["batch", 3, 56, 70]
    assert manifest["graphs"]["image_fp16"]["precision"] == "fp16"
    assert set(manifest["files"]) >= {"image.onnx", "image_fp16.onnx", "text.onnx", "tokenizer.json"}
    assert manifest["text_encoder"]["id"].startswith("random:tiny@")
    meta = {p.key: p.value for p in onnx.load(str(bundle.graph_path("image")), load_external_data=False).metadata_props}
    assert meta["tr2m.graph"] == "image" and meta["tr2m.input_size"] == "56x70"


def test_tampered_or_missing_files_are_rejected(tiny_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle.bundle, copy)
    with open(copy / "image.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    with pytest.raises(BundleError, match="image.onnx does not match its checksum"):
        Bundle.open(copy)
    (copy / "text.onnx").unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"].pop("image.onnx")  # a graph the manifest names must keep its checksum
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="names image.onnx but records no checksum"):
        Bundle.open(copy)
    shutil.copy(tiny_bundle.bundle / "image.onnx", copy / "image.onnx")
    shutil.copy(tiny_bundle.bundle / "manifest.json", copy / "manifest.json")
    with pytest.raises(BundleError, match="missing text.onnx"):
        Bundle.open(copy)


def test_manifest_paths_cannot_escape_the_bundle(tiny_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle.bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["../secret"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outside the bundle"):
        Bundle.open(copy)


def test_second_size_exports_and_matches(tmp_path, shared_data):
    report = export_bundle(ExportOptions(out=tmp_path / "b", preset="tiny", random_init=True, input_size=(70, 84),
                                         graphs=("image",), parity_frames=real_frame_paths(shared_data)[:2]),
                           log=lambda m: None)
    assert max(s.median_rel for s in report.parity if s.output == "depth") <= 1e-4
    out = _session(report.bundle / "image.onnx").run(
        ["depth"], {"image": np.zeros((3, 3, 70, 84), np.float32), "text_emb": np.zeros((3, 32), np.float32)})[0]
    assert out.shape == (3, 1, 70, 84)


def test_failed_parity_leaves_nothing_on_disk(tmp_path, monkeypatch):
    monkeypatch.setitem(parity.TOLERANCES, "fp32", 0.0)
    with pytest.raises(ExportError, match="parity check failed"):
        export_bundle(ExportOptions(out=tmp_path / "b", preset="tiny", random_init=True, graphs=("text",)),
                      log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_cli_errors_are_one_line(tmp_path, tiny_bundle):
    runner = CliRunner()
    result = runner.invoke(export_main, ["onnx", "--preset", "tiny", "--random-init", "--size", "50x70", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "multiples of 14" in result.output
    result = runner.invoke(export_main, ["onnx", "--preset", "tiny", "--random-init", "--out", str(tiny_bundle.bundle)])
    assert result.exit_code == 2 and "already exists" in result.output and "Traceback" not in result.output
    result = runner.invoke(export_main, ["onnx", "--preset", "nope", "--random-init", "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "unknown preset 'nope'" in result.output
    assert not (tmp_path / "y").exists()
