"""tr2m-bench end to end on the tiny bundle (no timing assertions), and its metrics."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from bench import report
from bench.cli import main
from bench.metrics import agreement, flicker, latency, static_masks

ROWS = "pytorch-fp32,ort-cpu-fp32,ort-cpu-fp16,ort-cpu-int8,ort-cpu-int8dyn,ort-cuda-fp32"


def test_bench_runs_end_to_end_and_writes_the_results_file(tiny_bundle, shared_data, tmp_path):
    out, js = tmp_path / "RESULTS.md", tmp_path / "results.json"
    args = ["--bundle", str(tiny_bundle.bundle), "--preset", "tiny", "--size", "56x70", "--backends", ROWS,
            "--repeats", "1", "--warmup", "0", "--batch", "2", "--video-frames", "4", "--every", "2",
            "--paired-rounds", "1",
            "--frame", str(shared_data / "metric3d_nyu" / "rgb" / "rgb_00000.jpg"),
            "--frame", str(shared_data / "metric3d_kitti" / "rgb" / "0000000005.png"),
            "--video", str(shared_data / "videos" / "sam2_bedroom.mp4"),
            "--out", str(out), "--json", str(js), "--work-dir", str(tmp_path / "work")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(js.read_text())
    rows = summary["backends"]
    ran = ("pytorch-fp32", "ort-cpu-fp32", "ort-cpu-fp16", "ort-cpu-int8dyn")
    assert [rows[n]["status"] for n in ran] == ["ok"] * 4
    assert rows["ort-cuda-fp32"]["status"] == "skipped" and rows["ort-cpu-int8"]["status"] == "skipped"
    assert summary["reference"] == "pytorch-fp32"
    assert rows["pytorch-fp32"]["info"]["weights_match_bundle"] is True
    assert rows["ort-cpu-fp32"]["agreement"]["median_rel"] < 1e-4  # the bundle is the PyTorch model
    assert rows["pytorch-fp32"]["flops"]["total"] > 0
    for name in ("pytorch-fp32", "ort-cpu-fp32"):
        assert rows[name]["peak_rss_mb"] > 0 and len(rows[name]["batch_ms"]) == 1
        assert {"preprocess", "image", "postprocess"} <= set(rows[name]["stages_ms"])
    paired = summary["paired"]
    assert paired["reference"] == "pytorch-fp32"
    assert set(paired["rows"]) == {n for n in rows if rows[n]["status"] == "ok"}
    assert all(len(r["wall_ms"]) == 1 for r in paired["rows"].values())
    video = summary["video"]["videos"][0]
    assert video["frames"] == 4 and video["loop"]["frames"] == 4 and video["loop"]["ratio_wall"] > 0
    assert [k["keyframes"] for k in video["keyframe"]] == [2, 2] and video["keyframe"][0]["keyframes_exact"]
    text = out.read_text()
    assert report.BEGIN in text and report.END in text
    for needle in ("| backend | frame ms (med/p90)", "| pytorch-fp32 |", "| ort-cpu-int8dyn |", "### Targets",
                   "Interleaved", "ORT CPU FP32 latency / PyTorch eager FP32", "keyframe K=2", "GFLOP"):
        assert needle in text, needle


def test_markdown_keeps_hand_written_notes(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# notes before\n\n{report.BEGIN}\nold\n{report.END}\n\n## Optimization log\nkept\n")
    summary = {"machine": {"date": "d", "cpu": "c", "cores": 2, "memory_gb": 1.0, "os": "o", "python": "3",
                           "numpy": "2", "onnxruntime": "1", "loadavg_start": [1, 1, 1], "loadavg_end": [1, 1, 1]},
               "bundle": {"path": "b", "preset": "tiny", "size": [56, 70], "untrained": True, "graphs": ["image"]},
               "settings": {}, "backends": {"ort-cpu-fp32": {"status": "skipped", "reason": "no"}},
               "reference": None, "targets": []}
    report.write_markdown(summary, path)
    text = path.read_text()
    assert text.startswith("# notes before") and text.rstrip().endswith("kept") and "old" not in text
    assert "ort-cpu-fp32: skipped: no" in text


def test_metrics():
    rng = np.random.default_rng(0)
    depth = [rng.uniform(1, 5, (20, 30)).astype(np.float32) for _ in range(3)]
    same = agreement(depth, depth)
    assert same.median_rel == 0 and same.delta1 == 1 and same.pixels == 3 * 600
    off = agreement([d * 1.1 for d in depth], depth)
    assert off.median_rel == pytest.approx(0.1, rel=1e-5) and off.delta1 == 1
    assert agreement([d * 2 for d in depth], depth).delta1 == 0
    frames = [np.full((40, 60, 3), 100, np.uint8)] * 3
    masks = static_masks(frames)
    assert len(masks) == 2 and all(m.all() for m in masks)
    assert flicker(depth[:1] * 3, masks).percent == 0
    jitter = flicker([depth[0], depth[0] * 1.02, depth[0]], masks)
    assert jitter.percent == pytest.approx(100 * 0.02 / 1.01, rel=1e-3) and jitter.pairs == 2
    stats = latency([1, 2, 3, 4, 100])
    assert stats["median"] == 3 and stats["n"] == 5
