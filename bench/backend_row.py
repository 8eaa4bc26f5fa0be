"""The "backend" task: one backend row measured alone in its worker process (latency per stage,
throughput at batch 1 and B, text encoder on a cache miss, cache hit, peak RSS, depth on the
real frames; FLOPs for the PyTorch reference)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from .backends import BACKENDS
from .measure import log, peak_rss_mb, read_frames, rss_mb, timed
from .runners import Skip, make_runner


def _timed_calls(runner, frames, caption, calls: int, batch: int, start: int = 0):
    """`calls` predict calls of `batch` frames each, cycling over frames -> (walls, cpus, stages, depths)."""
    walls, cpus, stages, depths = [], [], [], []
    for c in range(calls):
        chunk = [frames[(start + c * batch + i) % len(frames)] for i in range(batch)]
        (out, stage), wall, cpu = timed(runner.predict, chunk, caption)
        walls.append(wall)
        cpus.append(cpu)
        stages.append(stage)
        depths.append(out)
    return walls, cpus, stages, depths


def run_backend(task: Dict) -> Dict:
    spec = BACKENDS[task["backend"]]
    result: Dict = {"name": spec.name, "kind": spec.kind, "precision": spec.precision, "note": spec.note,
                    "loadavg_start": os.getloadavg()[0]}
    runner = make_runner(spec, Path(task["bundle"]), cache_dir=Path(task["cache_dir"]), seed=task.get("seed", 0),
                         checkpoint=task.get("checkpoint"), threads=task.get("threads"))
    frames = read_frames(task["frames"])
    caption, repeats, warmup, batch = task["caption"], task["repeats"], task["warmup"], task["batch"]
    began = time.perf_counter()
    try:
        runner.load()
    except Skip as e:
        return {**result, "status": "skipped", "reason": str(e)}
    result["load_s"] = time.perf_counter() - began
    result["rss_after_load_mb"] = rss_mb()
    result["info"] = runner.describe()
    log(f"loaded in {result['load_s']:.1f} s, RSS {result['rss_after_load_mb']:.0f} MB")
    if spec.kind == "torch" and task.get("flops", True):
        log("counting FLOPs (one forward under FlopCounterMode) ...")
        result["flops"] = runner.count_flops(frames[0], caption)
    for i in range(warmup):
        log(f"warmup {i + 1}/{warmup} ...")
        runner.predict([frames[0]], caption)
    calls = max(repeats, len(frames))
    log(f"batch 1: {calls} timed calls ...")
    walls, cpus, stages, depths = _timed_calls(runner, frames, caption, calls, 1)
    result["frame_ms"], result["frame_cpu_ms"], result["stages_ms"] = walls, cpus, _by_stage(stages)
    np.savez(task["depth_file"], *[d[0] for d in depths[:len(frames)]])
    result["depth_file"] = task["depth_file"]
    if batch > 1:
        batch_calls = max(1, repeats // 2)
        log(f"batch {batch}: {min(warmup, 1)} warmup + {batch_calls} timed calls ...")
        _timed_calls(runner, frames, caption, min(warmup, 1), batch)
        result["batch_ms"] = _timed_calls(runner, frames, caption, batch_calls, batch, start=1)[0]
    result["batch"] = batch
    log("text encoder on cache misses, and cache hits ...")
    result["text_miss_ms"] = [runner.text_miss(f"{caption}, variant {i}") for i in range(max(2, min(repeats, 5)))]
    hits = [runner.cache_hit(caption) for _ in range(200)]
    result["cache_hit_ms"] = [h for h in hits if h is not None]
    result["peak_rss_mb"] = peak_rss_mb()
    result["loadavg_end"] = os.getloadavg()[0]
    return {**result, "status": "ok"}


def _by_stage(stages: List[Dict[str, float]]) -> Dict[str, List[float]]:
    names = sorted({k for s in stages for k in s})
    return {k: [s[k] for s in stages if k in s] for k in names}
