"""Video measurements (one worker process): the loop vs the bare engine, keyframe mode, the cache.

On the first `frames` frames of each real video:
- bare engine: `Engine.predict` on frames already decoded into memory (the ceiling);
- keyframe mode (`runtime.keyframe.KeyframePredictor`, every K, without and with smoothing),
  called in turn with the bare engine on each frame (so both see the same machine load):
  throughput ratio, deviation of depth from the per-frame depth, flicker (see bench.metrics);
- loop (first video): `tr2m-run`'s loop (runtime.source_run.run_source: source -> prefetch thread ->
  engine -> writer thread -> H.264 colourized depth), wall time from opening the video to the
  closed output file, run between two bare passes (bare, loop, bare) and compared with the
  faster one; also the share of the loop's wall time spent inside the engine;
- caption-cache hit: `Engine.embed` of a caption already seen, vs a frame.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from .metrics import agreement, flicker, latency, static_masks
from .measure import log, rss_mb, timed


def decode(path: str, count: int) -> List[np.ndarray]:
    from runtime.sources import open_source

    frames = []
    with open_source(path) as source:
        for frame in source:
            frames.append(frame.rgb)
            if len(frames) == count:
                break
    return frames


ENGINE_STAGES = ("text", "preprocess", "image", "postprocess")


def _bare(engine, frames, caption) -> Dict:
    """The per-frame engine over frames in memory: wall and CPU ms per frame."""
    wall, cpu = [], []
    for frame in frames:
        _, w, c = timed(engine.predict, frame, caption=caption)
        wall.append(w)
        cpu.append(c)
    return {"ms": wall, "cpu_ms": cpu}


def _loop(engine, path: str, count: int, caption: str, out_dir: Path) -> Dict:
    """The `tr2m-run` loop itself (runtime.source_run.run_source: source -> prefetch thread -> engine ->
    writer thread -> H.264 video sink) on the first `count` frames; wall and CPU time of it all."""
    from runtime.run_options import RunOptions
    from runtime.source_run import run_source

    began, cpu = time.perf_counter(), time.process_time()
    report = run_source(engine, path, out_dir / "loop", RunOptions(caption=caption, max_frames=count))
    wall = time.perf_counter() - began
    return {"frames": report.frames, "wall_s": wall, "cpu_s": time.process_time() - cpu, "fps": report.frames / wall,
            "stage_ms": report.stage_ms}


def _interleaved(engine, frames, caption, every: int, smoothings) -> Dict:
    """Per frame, in turn: the per-frame engine, then keyframe mode at each smoothing, so that the
    throughput ratio sees the same machine load; also the depth maps for deviation and flicker."""
    from runtime.keyframe import KeyframePredictor

    kfs = [KeyframePredictor(engine, every=every, smoothing=s) for s in smoothings]
    bare = {"ms": [], "cpu_ms": [], "depths": []}
    runs = [{"ms": [], "cpu_ms": [], "depths": [], "keys": []} for _ in kfs]
    for frame in frames:
        depth, w, c = timed(engine.predict, frame, caption=caption)
        bare["ms"].append(w), bare["cpu_ms"].append(c), bare["depths"].append(depth)
        for kf, run in zip(kfs, runs):
            depth, w, c = timed(kf.predict, frame, caption=caption)
            run["ms"].append(w), run["cpu_ms"].append(c), run["depths"].append(depth)
            run["keys"].append(kf.last_was_keyframe)
    for kf, run in zip(kfs, runs):
        run["stages_ms"] = {k: v / kf.times.calls[k] for k, v in kf.times.totals.items()}
    return {"bare": bare, "keyframe": runs}


def _keyframe_result(run: Dict, bare: Dict, every: int, smoothing: float, masks) -> Dict:
    keys, depths, reference = run["keys"], run["depths"], bare["depths"]
    between = [i for i, k in enumerate(keys) if not k]
    result = {
        "every": every, "smoothing": smoothing, "ms": run["ms"], "keyframes": int(sum(keys)),
        "fps": len(depths) / (sum(run["ms"]) / 1e3),
        "ratio_wall": sum(bare["ms"]) / sum(run["ms"]), "ratio_cpu": sum(bare["cpu_ms"]) / sum(run["cpu_ms"]),
        "stages_ms": run["stages_ms"],
        "deviation_all": agreement(depths, reference).__dict__,
        "flicker": flicker(depths, masks).__dict__,
    }
    if between:
        result["deviation_between"] = agreement([depths[i] for i in between], [reference[i] for i in between]).__dict__
    if smoothing == 0:
        result["keyframes_exact"] = all(np.array_equal(depths[i], reference[i]) for i, k in enumerate(keys) if k)
    return result


def _cache_hit(engine, caption: str, calls: int = 1000) -> Dict:
    engine.embed([caption])
    ms = []
    for _ in range(calls):
        began = time.perf_counter()
        engine.embed([caption])
        ms.append((time.perf_counter() - began) * 1e3)
    return latency(ms)


def _video(engine, path: str, task: Dict, work: Path, with_loop: bool) -> Dict:
    caption, count, every = task["caption"], task["frames"], task["every"]
    smoothings = task.get("smoothings", (0.0, 0.5))
    name = Path(path).name
    log(f"{name}: decoding {count} frames ...")
    began = time.perf_counter()
    frames = decode(path, count)
    entry: Dict = {"video": name, "frames": len(frames), "size": list(frames[0].shape[:2]),
                   "decode_fps": len(frames) / (time.perf_counter() - began)}
    for _ in range(task.get("warmup", 1)):
        engine.predict(frames[0], caption=caption)
    log(f"{name}: per-frame engine and keyframe mode (every={every}, smoothing {list(smoothings)}), "
        f"interleaved, on {len(frames)} frames ...")
    both = _interleaved(engine, frames, caption, every, smoothings)
    masks = static_masks(frames)
    bare = both["bare"]
    entry["bare"] = {"ms": latency(bare["ms"]), "fps": len(frames) / (sum(bare["ms"]) / 1e3),
                     "flicker": flicker(bare["depths"], masks).__dict__}
    entry["keyframe"] = [_keyframe_result(run, bare, every, s, masks) for run, s in zip(both["keyframe"], smoothings)]
    if with_loop:  # bare, loop, bare; load only ever slows a pass, so the faster bare pass is the baseline
        log(f"{name}: the tr2m-run loop on the same frames, then the bare engine again ...")
        loop = _loop(engine, path, len(frames), caption, work)
        again = _bare(engine, frames, caption)
        passes = [sum(bare["ms"]) / 1e3, sum(again["ms"]) / 1e3]
        cpu_passes = [sum(bare["cpu_ms"]) / 1e3, sum(again["cpu_ms"]) / 1e3]
        share = loop["frames"] / len(frames)
        engine_ms = sum(v for k, v in loop["stage_ms"].items() if k in ENGINE_STAGES)
        loop.update(bare_passes_s=passes, bare_fps=len(frames) / min(passes),
                    ratio_wall=min(passes) * share / loop["wall_s"], ratio_cpu=min(cpu_passes) * share / loop["cpu_s"],
                    engine_share=engine_ms * loop["frames"] / 1e3 / loop["wall_s"])
        entry["loop"] = loop
    return entry


def run_video(task: Dict) -> Dict:
    from runtime import Engine

    engine = Engine.open(task["bundle"], backend=task.get("backend", "ort-cpu"), precision=task.get("precision", "fp32"),
                         cache_dir=task["cache_dir"], verify=False)
    result: Dict = {"status": "ok", "backend": engine.backend_name, "precision": engine.precision, "videos": []}
    work = Path(task.get("work_dir") or tempfile.mkdtemp(prefix="tr2m-bench-video-"))
    for n, path in enumerate(task["videos"]):
        result["videos"].append(_video(engine, path, task, work, with_loop=n == 0 and task.get("loop", True)))
    result["cache_hit_ms"] = _cache_hit(engine, task["caption"])
    result["rss_mb"] = rss_mb()
    return result
