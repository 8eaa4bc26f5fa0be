"""runtime.run_options: one frozen RunOptions, every contradiction one OptionsError at the edge."""
from __future__ import annotations

import dataclasses

import pytest

from runtime.captions import CaptionSchedule
from runtime.errors import OptionsError
from runtime.run_options import RunOptions
from runtime.sinks import Intrinsics

CAMERA = Intrinsics(fx=500, fy=500, cx=320, cy=240)

CONTRADICTIONS = {
    "no output": (dict(video=False), "no output selected"),
    "fov without ply": (dict(fov=60.0), "add --ply"),
    "fov and intrinsics": (dict(ply=True, fov=60.0, intrinsics=CAMERA), "not both"),
    "ply without camera": (dict(ply=True), "--fov DEG"),
    "maps without npz": (dict(maps=True), "add --npz"),
    "side by side without video": (dict(side_by_side=True, video=False, npz=True), "--no-video"),
    "smooth without keyframes": (dict(smooth=0.5), "add --keyframe-every"),
    "keyframes in batches": (dict(keyframe_every=4, batch=2), "drop --batch"),
    "empty caption": (dict(caption="  "), "--caption is empty"),
    "bad batch": (dict(batch=0), "--batch"),
    "bad range": (dict(depth_range=(10.0, 1.0)), "--range"),
}


@pytest.mark.parametrize("case", list(CONTRADICTIONS))
def test_contradictions_are_one_options_error(case):
    changes, message = CONTRADICTIONS[case]
    with pytest.raises(OptionsError, match=message):
        RunOptions(**changes)


def test_built_once_from_parsed_parameters_and_frozen(tmp_path):
    options = RunOptions.from_params({"caption": "an office", "npz": True, "quiet": True, "source": "x.mp4"})
    assert (options.caption, options.npz, options.video) == ("an office", True, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.batch = 4
    assert options.replace(batch=4).batch == 4 and options.batch == 1
    assert options.outputs(tmp_path).selected() == ["video", "npz"]


def test_the_schedule_comes_from_the_file_the_caption_or_the_fallback(tmp_path):
    scenes = tmp_path / "scenes.json"
    scenes.write_text('{"ranges": [{"start_frame": 0, "end_frame": 2, "caption": "a kitchen"}]}')
    from_file = RunOptions(caption="a house", captions_file=scenes).schedule()
    assert from_file.caption_at(0, None) == "a kitchen" and from_file.caption_at(5, None) == "a house"
    assert RunOptions(caption=" an office ").schedule().caption_at(9, 1.0) == "an office"
    fallback = CaptionSchedule.fixed("a corridor")
    assert RunOptions().schedule(fallback) is fallback
