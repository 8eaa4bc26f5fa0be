"""Video measurements (one worker process): the loop vs the bare engine, keyframe mode, the cache.

On the first `frames` frames of each real video:
- bare engine: `Engine.predict` on frames already decoded into memory (the ceiling);
- loop (first video): what `tr2m-run` does, source -> prefetch thread -> engine -> sink (H.264
  colourized depth), wall time from opening the video to the closed output file;
- keyframe mode (`runtime.keyframe.KeyframePredictor`, every K, without and with smoothing):
  throughput vs the bare engine, deviation of depth from the per-frame depth, flicker (see
  bench.metrics) against the per-frame mode's;
- caption-cache hit: `Engine.embed` of a caption already seen, vs a frame.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from .metrics import agreement, flicker, latency, static_masks
from .worker import log, rss_mb


def decode(path: str, count: int) -> List[np.ndarray]:
    from runtime.sources import open_source

    frames = []
    with open_source(path) as source:
        for frame in source:
            frames.append(frame.rgb)
            if len(frames) == count:
                break
    return frames


def _per_frame(engine, frames, caption) -> Dict:
    walls, depths = [], []
    for frame in frames:
        began = time.perf_counter()
        depths.append(engine.predict(frame, caption=caption))
        walls.append((time.perf_counter() - began) * 1e3)
    return {"ms": walls, "depths": depths}


def _loop(engine, path: str, count: int, caption: str, out_dir: Path) -> Dict:
    """source -> prefetch -> engine -> VideoSink, as the video CLI runs it; wall time of it all."""
    from runtime.sinks import VideoSink
    from runtime.sources import open_source, prefetch

    began = time.perf_counter()
    sink_ms, done = [], 0
    with open_source(path) as source:
        fps = source.info.fps or 30.0
        with VideoSink(out_dir / "loop.mp4", min_m=0.1, max_m=20.0, fps=fps) as sink, prefetch(source) as frames:
            for frame in frames:
                depth = engine.predict(frame.rgb, caption=caption)
                t = time.perf_counter()
                sink.write(frame, depth, {"timings_ms": dict(engine.times.last)})
                sink_ms.append((time.perf_counter() - t) * 1e3)
                done += 1
                if done == count:
                    break
    wall = time.perf_counter() - began
    return {"frames": done, "wall_s": wall, "fps": done / wall, "sink_ms": latency(sink_ms)}


def _keyframe(engine, frames, caption, every: int, smoothing: float, reference, masks) -> Dict:
    from runtime.keyframe import KeyframePredictor

    kf = KeyframePredictor(engine, every=every, smoothing=smoothing)
    walls, depths, keys = [], [], []
    for frame in frames:
        began = time.perf_counter()
        depths.append(kf.predict(frame, caption=caption))
        walls.append((time.perf_counter() - began) * 1e3)
        keys.append(kf.last_was_keyframe)
    between = [i for i, k in enumerate(keys) if not k]
    result = {
        "every": every, "smoothing": smoothing, "ms": walls, "keyframes": int(sum(keys)),
        "fps": len(frames) / (sum(walls) / 1e3),
        "stages_ms": {k: v / kf.times.calls[k] for k, v in kf.times.totals.items()},
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


def run_video(task: Dict) -> Dict:
    from runtime import Engine

    engine = Engine.open(task["bundle"], backend=task.get("backend", "ort-cpu"), precision=task.get("precision", "fp32"),
                         cache_dir=task["cache_dir"], verify=False)
    caption, count, every = task["caption"], task["frames"], task["every"]
    result: Dict = {"status": "ok", "backend": engine.backend_name, "precision": engine.precision, "videos": []}
    work = Path(task.get("work_dir") or tempfile.mkdtemp(prefix="tr2m-bench-video-"))
    for n, path in enumerate(task["videos"]):
        log(f"{Path(path).name}: decoding {count} frames ...")
        began = time.perf_counter()
        frames = decode(path, count)
        entry: Dict = {"video": Path(path).name, "frames": len(frames), "size": list(frames[0].shape[:2]),
                       "decode_fps": len(frames) / (time.perf_counter() - began)}
        for _ in range(task.get("warmup", 1)):
            engine.predict(frames[0], caption=caption)
        log(f"{Path(path).name}: per-frame engine on {len(frames)} frames ...")
        bare = _per_frame(engine, frames, caption)
        entry["bare"] = {"ms": latency(bare["ms"]), "fps": len(frames) / (sum(bare["ms"]) / 1e3)}
        masks = static_masks(frames)
        entry["bare"]["flicker"] = flicker(bare["depths"], masks).__dict__
        if n == 0 and task.get("loop", True):
            log(f"{Path(path).name}: video loop (source -> prefetch -> engine -> H.264 sink) ...")
            entry["loop"] = _loop(engine, path, len(frames), caption, work)
        entry["keyframe"] = []
        for smoothing in task.get("smoothings", (0.0, 0.5)):
            log(f"{Path(path).name}: keyframe mode every={every} smoothing={smoothing} ...")
            entry["keyframe"].append(_keyframe(engine, frames, caption, every, smoothing, bare["depths"], masks))
        result["videos"].append(entry)
    result["cache_hit_ms"] = _cache_hit(engine, caption)
    result["rss_mb"] = rss_mb()
    return result
