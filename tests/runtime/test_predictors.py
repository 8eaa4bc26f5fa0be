"""runtime.predictors: the loop's adapters over the engine and keyframe mode."""
from __future__ import annotations

import numpy as np

from runtime.captions import CaptionSchedule
from runtime.loop import run
from runtime.predictors import EnginePredictor, KeyframeAdapter, predictor_for
from tests.runtime.fixtures_io import prepared


def test_keyframe_adapter_refreshes_scale_every_k_frames(tiny_engine, bedroom_frames, tmp_path):
    adapter = predictor_for(tiny_engine, maps=True, keyframe_every=3)
    assert isinstance(adapter, KeyframeAdapter)
    assert isinstance(predictor_for(tiny_engine), EnginePredictor)
    report = run(adapter, bedroom_frames[:7], CaptionSchedule.fixed("a bedroom"),
                 prepared(tmp_path / "out", npz=True, maps=True))
    assert report.frames == 7 and report.keyframes == adapter.keyframes.keyframes == 3  # frames 0, 3, 6
    with np.load(tmp_path / "out" / "npz" / "depth_000004.npz") as z:
        assert {"depth", "scale", "shift", "rel"} <= set(z.files)
        assert z["scale"].shape == bedroom_frames[4].rgb.shape[:2]
