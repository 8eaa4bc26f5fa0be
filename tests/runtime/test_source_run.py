"""runtime.source_run: one source into one output folder, the unit a batch front end reuses."""
from __future__ import annotations

import json

import pytest

from runtime.errors import SourceError
from runtime.run_options import RunOptions
from runtime.source_run import SourceRun, run_source
from tests.runtime.fixtures_io import BEDROOM, NYU_RGB, UNIDEPTH_RGB, count_video_frames, require


def test_a_run_holds_only_the_image_graph_while_it_predicts(tiny_engine, tmp_path, monkeypatch):
    """Every caption the schedule can give is embedded before the first frame, then the text graph
    is released, so the two graphs' weights are never in memory together while frames run."""
    image = tiny_engine.image
    text_loaded = []
    run = image.run
    monkeypatch.setattr(image, "run", lambda feeds: text_loaded.append(tiny_engine.text._graph is not None) or run(feeds))
    report = run_source(tiny_engine, require(BEDROOM), tmp_path / "out", RunOptions(caption="a room", max_frames=3))
    assert report.frames == 3 and text_loaded == [False] * len(text_loaded) and text_loaded
    assert report.caption_cache == {"hits": 3, "misses": 1}


def test_the_cpu_session_plans_no_memory_pattern(tiny_engine):
    # the pattern's block would sit on top of the arena the first run filled (+0.39 GB, paper preset)
    assert tiny_engine.image.session.get_session_options().enable_mem_pattern is False


def test_one_engine_runs_several_sources_each_into_its_folder(tiny_engine, tmp_path):
    options = RunOptions(caption="a room", npz=True, max_frames=3)
    first = run_source(tiny_engine, require(BEDROOM), tmp_path / "video", options)
    second = run_source(tiny_engine, require(NYU_RGB), tmp_path / "image", options)
    assert (first.frames, second.frames) == (3, 1)
    # The caption cache is the engine's, shared; each report counts its own source: hits are frames
    # served from the cache, misses the captions its text graph embedded (before the first frame).
    assert first.caption_cache == {"hits": 3, "misses": 1} and second.caption_cache == {"hits": 1, "misses": 0}
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
