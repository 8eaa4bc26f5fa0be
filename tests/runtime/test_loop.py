"""runtime.loop: the frame loop on real frames and the tiny bundle, in-process (batches, Ctrl-C,
errors, bounded read-ahead)."""
from __future__ import annotations

import itertools
import signal
import threading

import numpy as np
import pytest

from runtime.captions import CaptionSchedule
from runtime.errors import OutputError, SourceError
from runtime.loop import run
from runtime.output_folder import Outputs
from runtime.predictors import EnginePredictor
from tests.runtime.fixtures_io import FailingSink, count_video_frames, prepared

SCENE = CaptionSchedule.fixed("a bedroom")


@pytest.fixture
def frames(bedroom_frames):
    return bedroom_frames


@pytest.fixture
def engine(tiny_engine):
    return tiny_engine


class Interrupting:
    """A predictor that raises KeyboardInterrupt (as Ctrl-C would) on call number `at`."""

    def __init__(self, inner, at: int):
        self.inner, self.at, self.calls = inner, at, 0
        self.times = inner.times

    def __call__(self, frames, captions):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.inner(frames, captions)


def test_batches_write_every_frame_with_per_frame_timings(engine, frames, tmp_path):
    outputs = prepared(tmp_path / "out", png16=True, csv=True)
    report = run(EnginePredictor(engine), frames[:7], SCENE, outputs, batch=3)
    assert (report.frames, report.interrupted) == (7, False)
    assert sorted(p.name for p in (tmp_path / "out" / "png16").iterdir()) == [f"depth_{i:06d}.png" for i in range(7)]
    assert count_video_frames(tmp_path / "out" / "depth.mp4")[0] == 7
    rows = (tmp_path / "out" / "depth.csv").read_text().splitlines()
    assert len(rows) == 8 and "image_ms" in rows[0] and "preprocess_ms" in rows[0]
    assert {"decode_wait", "preprocess", "image", "postprocess", "write_video", "write_png16", "write_csv"} <= set(
        report.stage_ms)
    assert report.range_m == (0.5, 10.0)


def test_ctrl_c_writes_the_frames_done_and_finalizes_the_video(engine, frames, tmp_path):
    outputs = prepared(tmp_path / "out", npz=True)
    report = run(Interrupting(EnginePredictor(engine), at=6), frames, SCENE, outputs)
    assert report.interrupted and report.frames == 5
    assert count_video_frames(tmp_path / "out" / "depth.mp4")[0] == 5
    assert len(list((tmp_path / "out" / "npz").glob("*.npz"))) == 5
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp" in p.name]


def test_a_real_sigint_stops_after_the_batch_in_progress_with_all_outputs_equal(engine, frames, tmp_path):
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has a non-default handler in this test process")
    inner, calls = EnginePredictor(engine), []

    def pressing(chunk, captions):
        calls.append(len(chunk))
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while this batch is being predicted
        return inner(chunk, captions)
    pressing.times = engine.times
    report = run(pressing, frames, SCENE, prepared(tmp_path / "out", npz=True), batch=3)
    assert report.interrupted and report.frames == 6 and calls == [3, 3]
    assert count_video_frames(tmp_path / "out" / "depth.mp4")[0] == 6
    assert len(list((tmp_path / "out" / "npz").glob("*.npz"))) == 6
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_ctrl_c_or_an_error_before_any_frame_leaves_no_folder(engine, frames, tmp_path):
    root = tmp_path / "work"
    root.mkdir()
    outputs = prepared(root / "a" / "b", png16=True, csv=True)
    report = run(Interrupting(EnginePredictor(engine), at=1), frames, SCENE, outputs)
    assert report.interrupted and report.frames == 0 and not report.outputs
    assert list(root.iterdir()) == []  # a/ and a/b/ were created by this run: removed

    def broken(chunk, captions):
        raise SourceError("boom")
    broken.times = engine.times
    (root / "kept").mkdir()
    outputs = prepared(root / "kept" / "out", csv=True)
    with pytest.raises(SourceError, match="boom"):
        run(broken, frames, SCENE, outputs)
    assert list(root.iterdir()) == [root / "kept"] and not list((root / "kept").iterdir())


def test_a_writer_error_stops_the_run_and_finalizes_the_sinks(engine, frames, tmp_path, monkeypatch):
    sink = FailingSink(fail_at=2)
    monkeypatch.setattr(Outputs, "open", lambda self, depth: {"fail": sink})
    outputs = prepared(tmp_path / "out")
    with pytest.raises(OutputError, match="disk full"):
        run(EnginePredictor(engine), frames, SCENE, outputs)
    assert sink.finished == "abort" and sink.frames_written == 2


def test_decoding_runs_ahead_but_stays_bounded(engine, frames, tmp_path):
    produced, consumed, lead = [0], [0], []

    def source():
        for frame in itertools.cycle(frames[:2]):
            produced[0] += 1
            lead.append(produced[0] - consumed[0])
            yield frame

    inner = EnginePredictor(engine)

    def counting(chunk, captions):
        consumed[0] += len(chunk)
        return inner(chunk, captions)
    counting.times = engine.times
    report = run(counting, source(), SCENE, prepared(tmp_path / "out"), batch=2, max_frames=20)
    assert report.frames == 20
    assert max(lead) <= (2 * 2 + 2) + 2 + 1  # queue + the chunk being formed + the frame being made
    assert not [t for t in threading.enumerate() if t.name in ("tr2m-prefetch", "tr2m-writer")]


def test_skipped_inputs_are_reported_once_the_run_passes_them(engine, tmp_path):
    import cv2

    from runtime.sources import open_source

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "c", "e"):
        cv2.imwrite(str(folder / f"{name}.png"), np.full((28, 35, 3), 90, np.uint8))
    for name in ("b", "d"):
        (folder / f"{name}.png").write_bytes(b"\x89PNG damaged")
    seen = []
    with open_source(folder) as source:
        report = run(EnginePredictor(engine), source, SCENE, prepared(tmp_path / "all", npz=True), on_skip=seen.append)
    assert [s.path for s in seen] == [s.path for s in report.skipped] == [str(folder / "b.png"), str(folder / "d.png")]
    assert sorted(p.name for p in (tmp_path / "all" / "npz").iterdir()) == ["a.npz", "c.npz", "e.npz"]
    with open_source(folder) as source:  # two frames (a, c): d lies beyond the run, even if read ahead
        report = run(EnginePredictor(engine), source, SCENE, prepared(tmp_path / "two", npz=True), max_frames=2)
    assert report.frames == 2 and [s.path for s in report.skipped] == [str(folder / "b.png")]
