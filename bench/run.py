"""The benchmark run: one fresh worker process per backend row, then video, then the report.

The parent stays light (no torch, no model): it prepares the INT8 bundle, launches workers one
at a time (so they do not compete for cores), reads their JSON, computes agreement against the
reference from the depth maps they saved, and hands everything to bench.report. Rows measured
one after another can see different machine load, so the latency ratios the targets use come
from a second, interleaved measurement of all rows in one process (bench.paired).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .backends import BENCH_MADE, REFERENCE, BackendSpec, select
from .metrics import agreement

SHARED_DATA = Path(os.environ.get("TR2M_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DEFAULT_FRAMES = ("metric3d_nyu/rgb/rgb_00000.jpg", "metric3d_kitti/rgb/0000000005.png",
                  "open3d_testdata_rgbd/other_formats/SUN_color.jpg")
DEFAULT_VIDEOS = ("videos/sam2_04_coffee.mp4",)


@dataclass
class BenchConfig:
    """Everything one run needs; the CLI fills it from options."""

    bundle: Path
    out: Optional[Path] = Path(__file__).resolve().parent / "RESULTS.md"
    backends: Optional[str] = None
    frames: Sequence[Path] = field(default_factory=lambda: [SHARED_DATA / p for p in DEFAULT_FRAMES])
    videos: Sequence[Path] = field(default_factory=lambda: [SHARED_DATA / p for p in DEFAULT_VIDEOS])
    video_frames: int = 16
    every: int = 8
    smoothing: float = 0.5
    repeats: int = 5
    warmup: int = 1
    batch: int = 4
    caption: str = "an office"
    seed: int = 0
    checkpoint: Optional[Path] = None
    threads: Optional[int] = None
    video: bool = True
    paired_rounds: int = 3
    json_out: Optional[Path] = None
    work_dir: Optional[Path] = None
    worker_timeout_s: float = 3600.0
    command: str = ""

    def __post_init__(self):
        if self.repeats < 1 or self.warmup < 0 or self.batch < 1:
            raise ValueError("repeats and batch must be >= 1, warmup >= 0")
        if self.every < 1 or not 0 <= self.smoothing < 1:
            raise ValueError("every must be >= 1 and smoothing in [0, 1)")
        missing = [str(p) for p in list(self.frames) + list(self.videos) if not Path(p).is_file()]
        if missing:
            raise ValueError(f"not found: {', '.join(missing)} (set TR2M_SHARED_DATA or pass --frame / --video)")


Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_worker(task: Dict, work: Path, name: str, timeout: float, log: Log) -> Dict:
    """Run bench.worker on `task` in a fresh interpreter; its stderr streams through."""
    task_file, result_file = work / f"{name}.task.json", work / f"{name}.result.json"
    task = dict(task, result_file=str(result_file))
    task_file.write_text(json.dumps(task, default=str))
    began = time.perf_counter()
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.worker", str(task_file)], timeout=timeout, env=env,
                              stdout=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout:.0f} s"}
    if not result_file.is_file():
        return {"status": "failed", "reason": f"worker exited with code {proc.returncode} and no result"}
    result = json.loads(result_file.read_text())
    result["worker_s"] = time.perf_counter() - began
    return result


def machine_info() -> Dict[str, object]:
    import numpy
    import onnxruntime

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "os": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
        "memory_gb": mem_gb, "python": platform.python_version(), "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__, "loadavg_start": list(os.getloadavg()),
    }


def _int8_dynamic_bundle(config: BenchConfig, name: str, work: Path, log: Log) -> Tuple[Optional[Path], Dict]:
    per_channel = BENCH_MADE[name]
    log(f"[int8] making the dynamic-INT8 image graph (onnxruntime quantize_dynamic, per_channel={per_channel}) "
        f"in {work / name} ...")
    task = {"task": "quantize", "bundle": str(config.bundle), "out_dir": str(work / name), "per_channel": per_channel}
    result = run_worker(task, work, f"quantize-{name}", config.worker_timeout_s, log)
    if result.get("status") != "ok":
        log(f"[int8] failed: {result.get('reason')}")
        return None, result
    log(f"[int8] done in {result['seconds']:.0f} s ({result['graph_mb']:.0f} MB)")
    return Path(result["bundle"]), result


def launch_backend_rows(config: BenchConfig, specs: List[BackendSpec], work: Path, log: Log) -> Dict[str, Dict]:
    results: Dict[str, Dict] = {}
    int8dyn: Optional[Path] = None
    for i, spec in enumerate(specs, 1):
        bundle = config.bundle
        reason = _cannot_run(spec, config.bundle)
        if reason:
            results[spec.name] = {"name": spec.name, "status": "skipped", "reason": reason}
            log(f"[{i}/{len(specs)}] {spec.name}: skipped ({reason})")
            continue
        if spec.name in BENCH_MADE:
            int8dyn, info = _int8_dynamic_bundle(config, spec.name, work, log)
            if int8dyn is None:
                results[spec.name] = {"name": spec.name, "status": "failed", "reason": info.get("reason")}
                continue
            bundle = int8dyn
        log(f"[{i}/{len(specs)}] {spec.name}: fresh process ...")
        task = {"task": "backend", "backend": spec.name, "bundle": str(bundle), "frames": [str(f) for f in config.frames],
                "caption": config.caption, "repeats": config.repeats, "warmup": config.warmup, "batch": config.batch,
                "cache_dir": str(work / f"cache-{spec.name}"), "depth_file": str(work / f"{spec.name}.depth.npz"),
                "seed": config.seed, "checkpoint": str(config.checkpoint) if config.checkpoint else None,
                "threads": config.threads}
        result = run_worker(task, work, spec.name, config.worker_timeout_s, log)
        result.setdefault("name", spec.name)
        result.setdefault("precision", spec.precision)
        result.setdefault("note", spec.note)
        result["bundle"] = str(bundle)
        if spec.name in BENCH_MADE and result.get("status") == "ok":
            result["quantize_s"] = info.get("seconds")
        results[spec.name] = result
        status = result.get("status")
        detail = result.get("reason", "") if status != "ok" else f"{np.median(result['frame_ms']):.1f} ms/frame"
        log(f"[{i}/{len(specs)}] {spec.name}: {status} {detail}")
    return results


def _cannot_run(spec: BackendSpec, bundle_dir: Path) -> Optional[str]:
    """Why an engine row cannot run here (checked in the parent: no process needed), or None."""
    if spec.kind != "engine":
        return None
    from runtime import Bundle
    from runtime.backends import BACKENDS
    from runtime.engine import PRECISION_GRAPHS

    bundle = Bundle.open(bundle_dir, verify=False)
    backend = BACKENDS[spec.runtime_backend]
    if not backend.available(bundle):
        return f"{spec.runtime_backend} cannot run here: {backend.requirement}"
    if spec.name not in BENCH_MADE and not bundle.has_graph(PRECISION_GRAPHS[spec.precision]):
        hint = " (make it with calib: calibrate_bundle)" if spec.precision == "int8" else ""
        return f"the bundle has no {PRECISION_GRAPHS[spec.precision]} graph{hint}"
    return None


def _load_depths(result: Dict) -> Optional[List[np.ndarray]]:
    path = result.get("depth_file")
    if result.get("status") != "ok" or not path or not Path(path).is_file():
        return None
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


REPRODUCED = 1e-3  # median relative depth error under which PyTorch counts as the bundle's own model


def add_agreement(results: Dict[str, Dict]) -> Optional[str]:
    """Agreement of every row with the reference; returns the reference's name.

    The reference is PyTorch FP32 when it reproduces the bundle (text weights hash as recorded,
    and ORT FP32 within `REPRODUCED` of it); otherwise (model code or weights changed since the
    export) ORT CPU FP32, and the PyTorch row is marked."""
    torch_ref, ort = results.get(REFERENCE, {}), results.get("ort-cpu-fp32", {})
    torch_depths, ort_depths = _load_depths(torch_ref), _load_depths(ort)
    ref_name = REFERENCE if torch_depths is not None else None
    if torch_depths is not None and not torch_ref.get("info", {}).get("weights_match_bundle", True):
        ref_name = None
    if ref_name and ort_depths is not None and agreement(ort_depths, torch_depths).median_rel > REPRODUCED:
        ref_name = None
    if ref_name is None and torch_depths is not None:
        torch_ref["mismatch"] = ("the rebuilt PyTorch model does not reproduce the bundle (re-export it with this "
                                 "code, or pass --seed/--ckpt): agreement is measured against ort-cpu-fp32")
    if ref_name is None and ort_depths is not None:
        ref_name = "ort-cpu-fp32"
    if ref_name is None:
        return None
    reference = _load_depths(results[ref_name])
    for result in results.values():
        depths = _load_depths(result)
        if depths is not None:
            result["agreement"] = agreement(depths, reference).__dict__
    return ref_name


def launch_paired(config: BenchConfig, results: Dict[str, Dict], work: Path, log: Log) -> Optional[Dict]:
    """The reference and every row that ran, interleaved in one process (bench.paired)."""
    rows = {name: r["bundle"] for name, r in results.items() if r.get("status") == "ok"}
    if REFERENCE not in rows or len(rows) < 2 or config.paired_rounds < 1:
        return None
    rows = {REFERENCE: rows.pop(REFERENCE), **rows}
    log(f"[paired] {', '.join(rows)} in one process, calls interleaved, {config.paired_rounds} rounds ...")
    task = {"task": "paired", "rows": rows, "frames": [str(f) for f in config.frames], "caption": config.caption,
            "rounds": config.paired_rounds, "cache_dir": str(work / "cache-paired"), "seed": config.seed,
            "checkpoint": str(config.checkpoint) if config.checkpoint else None, "threads": config.threads}
    return run_worker(task, work, "paired", config.worker_timeout_s, log)


def launch_video(config: BenchConfig, work: Path, log: Log) -> Dict:
    log(f"[video] loop, keyframe mode and cache on {', '.join(Path(v).name for v in config.videos)} "
        f"({config.video_frames} frames each) ...")
    task = {"task": "video", "bundle": str(config.bundle), "backend": "ort-cpu", "precision": "fp32",
            "videos": [str(v) for v in config.videos], "frames": config.video_frames, "every": config.every,
            "smoothings": [0.0, config.smoothing] if config.smoothing else [0.0], "caption": config.caption,
            "cache_dir": str(work / "cache-video"), "work_dir": str(work), "warmup": min(config.warmup, 1),
            "threads": config.threads}
    return run_worker(task, work, "video", config.worker_timeout_s, log)


def run_benchmark(config: BenchConfig, log: Log = _stderr) -> Dict:
    """Measure every selected row, the video loop and keyframe mode; write the report."""
    from runtime import Bundle

    from . import report

    bundle = Bundle.open(config.bundle, verify=False)
    specs = select(config.backends)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tr2m-bench-", dir=config.work_dir) as tmp:
        work = Path(tmp)
        summary: Dict = {"machine": machine_info(), "command": config.command,
                         "bundle": {"path": str(config.bundle), "preset": bundle.manifest.get("preset"),
                                    "size": [bundle.preprocessing.height, bundle.preprocessing.width],
                                    "untrained": bundle.untrained, "graphs": sorted(bundle.manifest["graphs"])},
                         "settings": {"repeats": config.repeats, "warmup": config.warmup, "batch": config.batch,
                                      "frames": [str(f) for f in config.frames], "caption": config.caption,
                                      "threads": config.threads or os.cpu_count()}}
        summary["backends"] = launch_backend_rows(config, specs, work, log)
        summary["reference"] = add_agreement(summary["backends"])
        summary["paired"] = launch_paired(config, summary["backends"], work, log)
        if config.video:
            summary["video"] = launch_video(config, work, log)
    summary["machine"]["loadavg_end"] = list(os.getloadavg())
    summary["wall_s"] = time.perf_counter() - began
    summary["targets"] = report.targets(summary)
    text = report.text_table(summary)
    log(text)
    if config.out:
        report.write_markdown(summary, Path(config.out))
        log(f"wrote {config.out}")
    if config.json_out:
        Path(config.json_out).write_text(json.dumps(summary, indent=1, default=float))
    return summary
