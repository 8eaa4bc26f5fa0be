"""Shot boundaries of a video or an image sequence, from an HSV content difference.

The measure is the one PySceneDetect's ContentDetector uses by default (Castellano, PySceneDetect
docs, "Detection Algorithms: content-aware detector"): both frames in HSV (OpenCV's 8-bit ranges),
the mean absolute difference of each channel over all pixels, averaged over hue, saturation and
value; a cut is placed where that score reaches a threshold (27 there and here). It is computed
here with OpenCV + numpy on frames scaled to 256 px wide, because PySceneDetect itself requires
the GUI build of OpenCV (opencv-python), which cannot share an environment with the headless
build this project installs.

Short shots are merged (PySceneDetect's minimum scene length, 15 frames by default), but not by
dropping whichever cut comes second: a shot shorter than `min_frames` is a flicker (a flash, a
dropped frame, a camera bump) when the frames just before and just after it look alike, and then
both of its cuts go; otherwise only its weaker cut goes, so it joins the neighbour it resembles.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional

import cv2
import numpy as np

ANALYSIS_WIDTH = 256


@dataclass(frozen=True)
class SceneConfig:
    """threshold: content score (0-255 scale) at which a cut is placed; min_frames: shots shorter
    than this are merged into a neighbour."""

    threshold: float = 27.0
    min_frames: int = 15

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 255 or self.min_frames < 1:
            raise ValueError(f"need 0 < threshold < 255 and min_frames >= 1, got {self}")


@dataclass(frozen=True)
class Scene:
    """Frames [start, end) (0-based); start_s / end_s their timestamps (None without timing, and
    end_s None for a scene that runs to the end of the stream)."""

    start: int
    end: int
    start_s: Optional[float] = None
    end_s: Optional[float] = None

    @property
    def middle(self) -> int:
        return (self.start + self.end - 1) // 2


@dataclass
class _Cut:
    index: int        # first frame of the new shot
    score: float
    before: np.ndarray  # HSV thumbnails either side of the cut
    after: np.ndarray


def hsv_thumbnail(rgb: np.ndarray) -> np.ndarray:
    """[H,W,3] RGB uint8 (or uint16) -> HSV uint8 scaled to ANALYSIS_WIDTH wide."""
    if rgb.dtype != np.uint8:
        rgb = (rgb >> 8).astype(np.uint8)
    h, w = rgb.shape[:2]
    if w > ANALYSIS_WIDTH:
        rgb = cv2.resize(rgb, (ANALYSIS_WIDTH, max(1, round(h * ANALYSIS_WIDTH / w))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2HSV)


def content_score(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over H, S and V of the mean absolute pixel difference of two HSV thumbnails (0-255)."""
    if a.shape != b.shape:
        return 255.0  # a change of frame size is a cut
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(diff.reshape(-1, 3).mean(axis=0).mean())


def detect_scenes(frames: Iterable, config: SceneConfig = SceneConfig()) -> List[Scene]:
    """Scenes of a stream of runtime `Frame`s (index, timestamp_s, rgb), covering every frame."""
    cuts: List[_Cut] = []
    times: List[Optional[float]] = []
    previous = None
    for frame in frames:
        hsv = hsv_thumbnail(frame.rgb)
        times.append(frame.timestamp_s)
        if previous is not None:
            score = content_score(previous, hsv)
            if score >= config.threshold:
                cuts.append(_Cut(len(times) - 1, score, previous, hsv))
        previous = hsv
    if not times:
        raise ValueError("no frames to split into scenes")
    cuts = _merge_short(cuts, len(times), config)
    starts = [0] + [c.index for c in cuts]
    ends = starts[1:] + [len(times)]
    return [Scene(s, e, times[s], times[e] if e < len(times) else None) for s, e in zip(starts, ends)]


def _merge_short(cuts: List[_Cut], frames: int, config: SceneConfig) -> List[_Cut]:
    """Remove cuts until every shot has min_frames frames (or only one shot is left)."""
    cuts = list(cuts)
    while cuts:
        bounds = [0] + [c.index for c in cuts] + [frames]
        lengths = [b - a for a, b in zip(bounds, bounds[1:])]
        shortest = int(np.argmin(lengths))
        if lengths[shortest] >= config.min_frames:
            break
        left = cuts[shortest - 1] if shortest > 0 else None
        right = cuts[shortest] if shortest < len(cuts) else None
        if left and right and content_score(left.before, right.after) < config.threshold:
            cuts.remove(left)   # a flicker: the picture comes back, so neither cut was a shot change
            cuts.remove(right)
        else:
            cuts.remove(min((c for c in (left, right) if c), key=lambda c: c.score))
    return cuts
