"""tr2m-eval end to end on the real NYU and KITTI samples (split lists written to tmp_path), the
bundle mode through runtime.Engine, and one-line errors for bad inputs.

A random-init model's numbers are meaningless; these tests check the pipeline, not the values.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tr2m.checkpoint import save_checkpoint
from tr2m.data import DatasetConfig, build_dataset
from tr2m.evaluation import METRIC_NAMES, PROTOCOLS, compute_errors, prepare_prediction
from tr2m.evaluation.cli import main as eval_cli
from tr2m.evaluation.evaluate import TorchPredictor, evaluate, format_table

NYU_FRAMES = ["00000", "00050", "00100"]
KITTI_FRAMES = ["0000000005", "0000000050", "0000000100"]


@pytest.fixture
def nyu_split(tmp_path) -> Path:
    path = tmp_path / "nyu_test.txt"
    path.write_text("".join(f"rgb/rgb_{f}.jpg depth/sync_depth_{f}.png 518.8579\n" for f in NYU_FRAMES))
    return path


@pytest.fixture
def kitti_split(tmp_path) -> Path:
    path = tmp_path / "kitti_test.txt"
    path.write_text("".join(f"rgb/{f}.png depth/{f}.png 707.0493\n" for f in KITTI_FRAMES))
    return path


def _run(args):
    return CliRunner().invoke(eval_cli, [*args, "--quiet"])


def _check_report(path: Path, dataset: str, crop: str, count: int = 3) -> dict:
    report = json.loads(path.read_text())
    assert report["dataset"] == dataset and report["protocol"]["crop"] == crop
    assert report["count"] == count and report["skipped"] == 0
    assert set(report["metrics"]) == set(METRIC_NAMES)
    assert all(math.isfinite(v) for v in report["metrics"].values())
    assert 0 <= report["metrics"]["d1"] <= report["metrics"]["d2"] <= report["metrics"]["d3"] <= 1
    assert len(report["per_image"]) == count and all(set(METRIC_NAMES) <= set(r) for r in report["per_image"])
    return report


def test_eval_nyu_real_samples(shared_data, nyu_split, tmp_path):
    out = tmp_path / "nyu.json"
    result = _run(["--dataset", "nyu", "--root", str(shared_data / "metric3d_nyu"), "--split", str(nyu_split),
                   "--default-caption", "a basement", "--preset", "tiny", "--random-init", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "nyu (nyu protocol): 3 images" in result.output and "abs_rel" in result.output
    report = _check_report(out, "nyu", "eigen_nyu")
    assert report["model"]["kind"] == "torch" and report["model"]["random_init"] is True
    assert [r["name"] for r in report["per_image"]] == [f"rgb/rgb_{f}" for f in NYU_FRAMES]


def test_eval_kitti_real_samples(shared_data, kitti_split, tmp_path):
    out = tmp_path / "kitti.json"
    result = _run(["--dataset", "kitti", "--root", str(shared_data / "metric3d_kitti"), "--split", str(kitti_split),
                   "--default-caption", "a street", "--preset", "tiny", "--random-init", "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = _check_report(out, "kitti", "garg")
    assert report["protocol"]["max_depth"] == 80.0
    # An explicit --preset keeps its own size, and the run says so.
    assert "model input 56x70 (--preset tiny; the authors evaluate kitti at 350x1204)" in result.output
    assert report["model"]["input_size"] == [56, 70]


def test_eval_uses_the_datasets_size_over_the_checkpoints_config(shared_data, kitti_split, tiny_model, tmp_path):
    # A tr2m checkpoint stores its config (tiny: 56x70); KITTI is scored at the authors' 350x1204.
    checkpoint = tmp_path / "head.safetensors"
    save_checkpoint(tiny_model.head, tiny_model.config, checkpoint)
    out = tmp_path / "kitti.json"
    result = _run(["--dataset", "kitti", "--root", str(shared_data / "metric3d_kitti"), "--split", str(kitti_split),
                   "--default-caption", "a street", "--checkpoint", str(checkpoint), "--random-init", "--limit", "1",
                   "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "model input 350x1204 (the authors' size for kitti; the checkpoint's config says 56x70)" in result.output
    report = json.loads(out.read_text())
    assert report["model"]["input_size"] == [350, 1204] and report["model"]["preset"] == "tiny"


def test_evaluate_api_uses_the_kitti_crop_box(shared_data, kitti_split, tiny_model):
    dataset = build_dataset(DatasetConfig(name="kitti", root=str(shared_data / "metric3d_kitti"), split=str(kitti_split),
                                          default_caption="a street"))
    report = evaluate(TorchPredictor(tiny_model), dataset, "kitti", limit=2, progress=False)
    assert report.count == 2 and report.model["preset"] == "tiny"
    assert dataset[0]["crop_box"].tolist() == [23, 13, 375, 1242]  # KB crop of a 375x1242 frame
    table = format_table(report.metrics).splitlines()
    assert table[0].split() == list(METRIC_NAMES) and len(table[1].split()) == len(METRIC_NAMES)


def test_kitti_is_scored_on_the_kb_window_as_the_authors_do(shared_data, kitti_split, tiny_model):
    # The authors' eval loader KB-crops the GT, so the Garg fractions apply to 352x1216 itself:
    # rows 143:349, cols 43:1172 of the window (mapping the full-frame box gave rows 130:348).
    dataset = build_dataset(DatasetConfig(name="kitti", root=str(shared_data / "metric3d_kitti"), split=str(kitti_split),
                                          default_caption="a street"))
    predictor = TorchPredictor(tiny_model)
    report = evaluate(predictor, dataset, "kitti", limit=1, progress=False)
    sample = dataset[0]
    gt = sample["depth"][0].numpy().astype(np.float64)
    assert gt.shape == (352, 1216)
    pred = prepare_prediction(predictor.predict(sample["image"], sample["caption"]), gt.shape, PROTOCOLS["kitti"])
    authors = np.zeros(gt.shape, dtype=bool)
    authors[143:349, 43:1172] = True
    authors &= (gt > 1e-3) & (gt < 80.0)
    assert authors.sum() == 82930  # valid pixels of frame 5 (the full-frame mapping scored 87504)
    expected = compute_errors(gt[authors], pred[authors])
    for name in METRIC_NAMES:
        assert report.per_image[0][name] == pytest.approx(expected[name], rel=1e-9), name


def test_eval_bundle_mode_matches_pytorch(shared_data, nyu_split, tmp_path, tiny_model, tiny_bundle):
    pytest.importorskip("onnxruntime")
    try:
        from runtime import Engine  # noqa: F401
    except ImportError as e:
        pytest.skip(f"runtime.Engine is not available yet ({e})")
    # tiny_bundle is exported from the same seeded tiny model (randomize_for_demo) as the tiny_model fixture.
    dataset = build_dataset(DatasetConfig(name="nyu", root=str(shared_data / "metric3d_nyu"), split=str(nyu_split),
                                          default_caption="a basement"))
    torch_report = evaluate(TorchPredictor(tiny_model), dataset, "nyu", progress=False)
    out = tmp_path / "bundle.json"
    result = _run(["--dataset", "nyu", "--root", str(shared_data / "metric3d_nyu"), "--split", str(nyu_split),
                   "--default-caption", "a basement", "--bundle", str(tiny_bundle.bundle), "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = _check_report(out, "nyu", "eigen_nyu")
    assert report["model"]["kind"] == "bundle"
    for name in ("abs_rel", "rmse", "d1"):  # the runtime resizes in numpy: close, not identical
        assert report["metrics"][name] == pytest.approx(torch_report.metrics[name], rel=0.02, abs=0.01), name


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nyux", "--root", "."], "unknown dataset 'nyux'; valid: c3vd, folder, kitti, nyu, void"),
    (["--dataset", "nyu", "--root", "/no/such/nyu"], "dataset folder /no/such/nyu not found"),
    (["--dataset", "nyu", "--root", "NYU"], "needs a split file"),
    (["--dataset", "nyu", "--root", "NYU", "--split", "SPLIT", "--checkpoint", "BAD"], "bad.pth"),
    (["--dataset", "nyu", "--root", "NYU", "--split", "SPLIT", "--checkpoint", "/no/such.pth"], "checkpoint not found"),
    (["--dataset", "nyu", "--root", "NYU", "--split", "SPLIT"], "no caption for rgb/rgb_00000"),
    (["--dataset", "nyu", "--root", "NYU", "--split", "SPLIT", "--protocol", "moon"], "unknown evaluation protocol"),
    (["--dataset", "folder", "--root", "NYU", "--depth-scale", "1000"], "has no default protocol"),
    (["--dataset", "nyu", "--root", "NYU", "--split", "SPLIT", "--bundle", "/no/bundle"], "bundle folder /no/bundle"),
])
def test_eval_bad_inputs_give_one_line_errors(shared_data, nyu_split, tmp_path, args, message):
    (tmp_path / "bad.pth").write_bytes(b"\x00 definitely not a checkpoint")
    swap = {"NYU": str(shared_data / "metric3d_nyu"), "SPLIT": str(nyu_split), "BAD": str(tmp_path / "bad.pth")}
    base = [] if "--bundle" in args else ["--preset", "tiny", "--random-init"]
    result = _run([swap.get(a, a) for a in args] + base)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
