"""One measurement in a fresh process, so peak RSS belongs to that backend alone.

    python -m bench.worker TASK.json     # writes the result JSON named in the task

Tasks: "backend" (latency per stage, throughput at batch 1 and B, text miss, cache hit, peak
RSS, depth on the real frames; FLOPs for the PyTorch reference), "paired" (bench.paired),
"video" (bench.video) and "quantize" (bench.quant). Progress goes to stderr, one line per step.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List

import numpy as np


def log(message: str) -> None:
    print(f"    {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        return 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss is KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def read_frames(paths: List[str]) -> List[np.ndarray]:
    from runtime.sources import read_image

    return [np.ascontiguousarray(read_image(p)[:, :, :3]) for p in paths]


def timed(fn, *args, **kwargs):
    """fn(*args, **kwargs) -> (its result, wall ms, CPU ms of this process: all its threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


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
    from .backends import BACKENDS
    from .runners import Skip, make_runner

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


TASKS = {"backend": run_backend}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    task = json.loads(Path(argv[0]).read_text())
    if task.get("threads"):
        os.environ["TR2M_THREADS"] = str(task["threads"])
    kind = task["task"]
    if kind == "video":
        from .video import run_video as run
    elif kind == "paired":
        from .paired import run_paired as run
    elif kind == "quantize":
        from .quant import run_quantize as run
    else:
        run = TASKS[kind]
    try:
        result = run(task)
    except Exception as e:  # noqa: BLE001 - reported as a failed row, the benchmark goes on
        traceback.print_exc()
        result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    result.setdefault("peak_rss_mb", peak_rss_mb())
    Path(task["result_file"]).write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
