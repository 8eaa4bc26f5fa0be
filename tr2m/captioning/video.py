"""Caption schedules for videos and image sequences: one caption per detected scene.

The schedule is written in the two forms `tr2m-run --captions` reads (runtime/captions.py):
SRT cues, or JSON ranges (seconds for videos, frame indices for image folders, which have no
timing). Range starts are floored to the millisecond, so the first frame of a scene (timestamp
t) always satisfies start <= t, also after SRT's millisecond rounding.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..atomic import atomic_target
from .models import Describer
from .prompts import DESCRIBE_PROMPTS, DescribePrompt
from .scenes import Scene, SceneConfig, detect_scenes
from .text import cap_tokens, clean_line

SCHEDULE_SUFFIXES = (".srt", ".json")
# One description per scene: the evaluation line (first prompt), one sample.
SCENE_PROMPT = DescribePrompt(DESCRIBE_PROMPTS[0].text, samples=1)


class ScheduleError(ValueError):
    """The schedule cannot be written in the asked form."""


def _floor_ms(seconds: float) -> float:
    return math.floor(seconds * 1000) / 1000


def representative_frames(spec: str, indices: Sequence[int]) -> Dict[int, np.ndarray]:
    """The RGB frames at `indices` (a second decoding pass; frames are not kept during detection)."""
    from runtime.sources import open_source

    wanted, found = set(indices), {}
    with open_source(spec) as frames:
        for frame in frames:
            if frame.index in wanted:
                found[frame.index] = frame.rgb
                if len(found) == len(wanted):
                    break
    return found


def find_scenes(spec: str, config: SceneConfig, on_frame: Callable[[int], None] = lambda n: None
                ) -> tuple[List[Scene], Optional[float]]:
    """The scenes of a video file or image folder, and its frame rate (None when unknown)."""
    from runtime.sources import open_source

    with open_source(spec) as frames:
        def counted():
            for frame in frames:
                yield frame
                on_frame(1)
        return detect_scenes(counted(), config), frames.info.fps


def describe_scenes(spec: str, scenes: Sequence[Scene], describer: Describer, *, batch: int, seed: int,
                    on_done: Callable[[int], None] = lambda n: None) -> List[str]:
    """One cleaned, CLIP-sized description per scene, from its middle frame."""
    frames = representative_frames(spec, [s.middle for s in scenes])
    captions: List[str] = []
    for start in range(0, len(scenes), batch):
        chunk = scenes[start:start + batch]
        texts = describer.describe([frames[s.middle] for s in chunk], SCENE_PROMPT, seed=seed + start)
        captions += [cap_tokens(clean_line(t[0])) if clean_line(t[0]) else "" for t in texts]
        on_done(len(chunk))
    # An empty answer (rare, tiny models) takes the previous scene's caption rather than none.
    for i, caption in enumerate(captions):
        captions[i] = caption or (captions[i - 1] if i else "") or "An image of a scene."
    return captions


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def schedule_text(path: Path, scenes: Sequence[Scene], captions: Sequence[str], fps: Optional[float]) -> str:
    """The schedule as SRT or JSON text, by the suffix of `path`."""
    timed = all(s.start_s is not None for s in scenes)
    if path.suffix.lower() == ".srt":
        if not timed:
            raise ScheduleError(f"{path}: image folders have no timestamps; write the schedule as .json "
                                "(frame ranges) instead")
        last = scenes[-1]
        tail = last.end_s if last.end_s is not None else last.start_s + (last.end - last.start) / (fps or 30.0)
        ends = [_floor_ms(s.end_s) if s.end_s is not None else math.ceil(tail * 1000) / 1000 for s in scenes]
        cues = [f"{i + 1}\n{_srt_time(_floor_ms(s.start_s))} --> {_srt_time(end)}\n{c}\n"
                for i, (s, end, c) in enumerate(zip(scenes, ends, captions))]
        return "\n".join(cues)
    if path.suffix.lower() == ".json":
        ranges = []
        for s, c in zip(scenes, captions):
            if timed:
                item = {"start": _floor_ms(s.start_s), "caption": c}
                if s.end_s is not None:
                    item["end"] = _floor_ms(s.end_s)
            else:
                item = {"start_frame": s.start, "end_frame": s.end, "caption": c}
            ranges.append(item)
        return json.dumps({"ranges": ranges}, indent=2) + "\n"
    raise ScheduleError(f"{path}: the schedule must be a {' or '.join(SCHEDULE_SUFFIXES)} file")


def write_schedule(path: Path, scenes: Sequence[Scene], captions: Sequence[str], fps: Optional[float]) -> Path:
    """Write the schedule atomically; returns `path`."""
    text = schedule_text(path, scenes, captions, fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
