"""runtime.labelled_sink: the UNTRAINED stamp on the video."""
from __future__ import annotations

import av

from runtime.captions import CaptionSchedule
from runtime.loop import run
from runtime.predictors import EnginePredictor
from tests.runtime.fixtures_io import prepared


def test_untrained_label_is_stamped_on_the_video(tiny_engine, bedroom_frames, tmp_path):
    outputs = prepared(tmp_path / "out", label="UNTRAINED")
    run(EnginePredictor(tiny_engine), bedroom_frames[:2], CaptionSchedule.fixed("a bedroom"), outputs)
    with av.open(str(tmp_path / "out" / "depth.mp4")) as container:
        picture = next(container.decode(video=0)).to_ndarray(format="rgb24")
    corner = picture[:20, :60].astype(int)
    assert ((corner[..., 0] > 150) & (corner[..., 1] < 110)).any()  # red text on black
    assert (corner.sum(axis=2) < 60).mean() > 0.3
