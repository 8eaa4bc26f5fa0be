"""Predictors: what the loop calls to turn a batch of frames and captions into depth maps.

A predictor is any callable ``(frames, captions) -> results`` with a ``times`` attribute (a
`StageTimes`) and a ``keyframe_count`` (None when every frame is a full prediction). Two adapt
the runtime's predictors to that shape: `EnginePredictor` (the fused image graph, in batches)
and `KeyframeAdapter` (keyframe mode, one frame at a time).
"""
from __future__ import annotations

from typing import List, Optional, Protocol, Sequence, Tuple

import numpy as np

from .engine import Engine, Prediction, StageTimes
from .sources import Frame

Result = Tuple[np.ndarray, dict]  # depth float32 [H, W] metres, extras for the sinks


class Predictor(Protocol):
    """B Frames + B captions -> B (depth float32 [H, W] metres, extras)."""

    times: StageTimes
    keyframe_count: Optional[int]

    def __call__(self, frames: Sequence[Frame], captions: Sequence[str]) -> List[Result]: ...


class EnginePredictor:
    """Batches of frames through `Engine.predict_batch` (the fused image graph)."""

    keyframe_count = None  # every frame is a full prediction

    def __init__(self, engine: Engine, *, maps: bool = False) -> None:
        self.engine, self.maps = engine, maps
        self.times = engine.times

    def __call__(self, frames: Sequence[Frame], captions: Sequence[str]) -> List[Result]:
        out = self.engine.predict_batch([f.rgb for f in frames], list(captions), return_maps=self.maps)
        return [_result(p, self.maps) for p in out]


class KeyframeAdapter:
    """Frames one at a time through a `KeyframePredictor` (A, B refreshed every K frames)."""

    def __init__(self, keyframes, *, maps: bool = False) -> None:
        self.keyframes, self.maps = keyframes, maps
        self.times = keyframes.times

    @property
    def keyframe_count(self) -> int:
        return self.keyframes.keyframes

    def __call__(self, frames: Sequence[Frame], captions: Sequence[str]) -> List[Result]:
        return [_result(self.keyframes.predict(f.rgb, c, return_maps=self.maps), self.maps)
                for f, c in zip(frames, captions)]


def predictor_for(engine: Engine, *, maps: bool = False, keyframe_every: Optional[int] = None,
                  smoothing: float = 0.0) -> Predictor:
    """The fused-graph predictor, or keyframe mode when ``keyframe_every`` is given."""
    if keyframe_every is None:
        return EnginePredictor(engine, maps=maps)
    from .keyframe import KeyframePredictor

    return KeyframeAdapter(KeyframePredictor(engine, every=keyframe_every, smoothing=smoothing), maps=maps)


def _result(prediction, maps: bool) -> Result:
    if not maps:
        return prediction, {}
    assert isinstance(prediction, Prediction)
    extras = {k: getattr(prediction, k) for k in ("scale", "shift", "rel") if getattr(prediction, k) is not None}
    return prediction.depth, extras
