"""runtime.source_run: one source into one output folder, the unit a batch front end reuses."""
from __future__ import annotations

import json

import pytest

from runtime.errors import SourceError
from runtime.run_options import RunOptions
from runtime.source_run import SourceRun, run_source
from tests.runtime.fixtures_io import BEDROOM, NYU_RGB, UNIDEPTH_RGB, count_video_frames, require


def test_one_engine_runs_several_sources_each_into_its_folder(tiny_engine, tmp_path):
    options = RunOptions(caption="a room", npz=True, max_frames=3)
    first = run_source(tiny_engine, require(BEDROOM), tmp_path / "video", options)
    second = run_source(tiny_engine, require(NYU_RGB), tmp_path / "image", options)
    assert (first.frames, second.frames) == (3, 1)
    # The caption cache is the engine's, shared; each report counts its own source's lookups.
    assert first.caption_cache == {"hits": 2, "misses": 1} and second.caption_cache == {"hits": 1, "misses": 0}
    video = json.loads((tmp_path / "video" / "run.json").read_text())
    assert video["frames"] == 3 and video["source"] == str(BEDROOM) and video["caption_cache"]["misses"] == 1
    assert count_video_frames(tmp_path / "video" / "depth.mp4")[0] == 3
    assert json.loads((tmp_path / "image" / "run.json").read_text())["frames"] == 1


def test_the_run_is_configured_from_the_source_and_the_bundle(tiny_engine, tmp_path):
    with SourceRun(tiny_engine, require(UNIDEPTH_RGB), tmp_path / "out", RunOptions(depth_range=(1.0, 5.0))) as job:
        assert job.expected_frames == 1 and job.outputs.range_m == (1.0, 5.0)
        assert job.outputs.label == "UNTRAINED"  # the tiny bundle has random weights
        assert not (tmp_path / "out").exists()  # nothing on disk before prepare/run


def test_a_bad_source_is_one_error_and_leaves_no_folder(tiny_engine, tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        run_source(tiny_engine, tmp_path / "missing.mp4", tmp_path / "out", RunOptions())
    assert not (tmp_path / "out").exists()
