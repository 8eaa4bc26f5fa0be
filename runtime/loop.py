"""The frame loop: frames -> metric depth -> outputs, with decoding and writing overlapped.

    source --prefetch thread (bounded)--> batches --predictor (caller's thread)--> depth
           --one writer thread per output (bounded)--> sinks (video, PNG, NPZ, PLY, CSV)

Memory stays bounded on any video length: at most ``2 * batch + 2`` decoded frames wait for the
model and as many results wait for each writer. Preprocessing runs inside the predictor
(about 1 ms a frame at the tiny and paper input sizes, so it is not worth another thread).

Ctrl-C stops the loop after the batch in progress (a second Ctrl-C at once): the frames already
predicted are still written, to every output, then every sink is finalized (`Sink.abort`: the mp4
plays) and the report says ``interrupted``. A KeyboardInterrupt raised inside the loop (another
thread's handler, a predictor) does the same. Any other error also finalizes what was written and
is re-raised; if no frame was written, the output folders this run created are removed again.

Inputs the source skips (a damaged image in a folder: `FrameSource.skipped`) are reported through
``on_skip`` in the caller's thread as the run passes them, and listed in the report; skips the
prefetch thread met beyond the run's last frame (``max_frames``, Ctrl-C) are not the run's.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .captions import CaptionSchedule
from .ctrl_c import CtrlC, sigint_deferred
from .engine import StageTimes
from .output_folder import Outputs
from .predictors import Predictor, Result
from .sources import Frame, Skipped, prefetch
from .writer_threads import WriterThreads


@dataclass
class RunReport:
    """What a run did. stage_ms: mean milliseconds per frame and stage."""

    frames: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    stage_ms: Dict[str, float] = field(default_factory=dict)
    outputs: Dict[str, Path] = field(default_factory=dict)
    range_m: Optional[Tuple[float, float]] = None
    keyframes: Optional[int] = None  # keyframe mode: frames whose scale/shift maps were computed
    caption_cache: Dict[str, int] = field(default_factory=dict)  # hits: frames served from the cache; misses: captions embedded (SourceRun)
    skipped: List[Skipped] = field(default_factory=list)  # inputs the source left out, in order

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run(predictor: Predictor, frames: Iterable[Frame], schedule: CaptionSchedule, outputs: Outputs, *,
        batch: int = 1, max_frames: Optional[int] = None, on_frames: Callable[[int], None] = lambda n: None,
        on_skip: Callable[[Skipped], None] = lambda skipped: None) -> RunReport:
    """Predict depth for every frame (up to ``max_frames``) and write the outputs.

    predictor: list of B Frames + B captions -> B (depth [H, W] metres, extras), with ``.times``
    (a StageTimes). outputs must be `prepare`d. on_frames(n) is called as n more frames are done;
    on_skip(s) for each input the source skipped (if it lists them, as `FrameSource.skipped`).
    Returns the report; re-raises errors after finalizing what was written.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    skips = _SkipReporter(getattr(frames, "skipped", None), on_skip)
    frames = itertools.islice(frames, max_frames) if max_frames is not None else frames
    report, writer, waits, queue_size = RunReport(), None, StageTimes(), 2 * batch + 2
    before = dict(predictor.times.totals)
    started = time.perf_counter()
    prefetcher = prefetch(frames, maxsize=queue_size)
    try:
        with CtrlC() as ctrl_c:
            for chunk in _batches(prefetcher, batch, waits):
                results, timings = _predict(predictor, chunk, schedule)
                writer = writer or WriterThreads(outputs.open(results[0][0]), maxsize=queue_size)
                for frame, (depth, extras) in zip(chunk, results):
                    writer.put(frame, depth, dict(extras, timings_ms=timings))
                on_frames(len(chunk))
                skips.passed(len(chunk))
                if ctrl_c.pressed:
                    break
            report.interrupted = ctrl_c.pressed
    except KeyboardInterrupt:
        report.interrupted = True
    except BaseException:
        _finish(prefetcher, writer, outputs, failed=True)
        raise
    _finish(prefetcher, writer, outputs, failed=report.interrupted)
    report.skipped = skips.finish(source_ended=prefetcher.exhausted)
    report.seconds = time.perf_counter() - started
    report.frames = writer.written if writer else 0
    report.keyframes = getattr(predictor, "keyframe_count", None)
    report.stage_ms = _stage_means(before, predictor.times, waits, writer, report.frames)
    if report.frames:
        report.outputs = outputs.paths()
        report.range_m = writer.video_range()
    return report


class _SkipReporter:
    """Reports the source's skips in order, once the run has passed them: a skip recorded before
    frame n is the run's once frame n was taken (or the source ended)."""

    def __init__(self, skipped: Optional[List[Skipped]], on_skip: Callable[[Skipped], None]) -> None:
        self.skipped, self.on_skip = skipped if skipped is not None else [], on_skip
        self.taken, self.reported = 0, 0

    def passed(self, frames: int) -> None:
        self.taken += frames
        self._report(lambda s: s.position < self.taken)

    def finish(self, *, source_ended: bool) -> List[Skipped]:
        self._report(lambda s: source_ended or s.position < self.taken)
        return list(self.skipped[:self.reported])

    def _report(self, due: Callable[[Skipped], bool]) -> None:
        while self.reported < len(self.skipped) and due(self.skipped[self.reported]):
            self.on_skip(self.skipped[self.reported])
            self.reported += 1


def _predict(predictor: Predictor, chunk: List[Frame], schedule: CaptionSchedule
             ) -> Tuple[List[Result], Dict[str, float]]:
    """One batch through the predictor, with each frame's captions; also the stage timings per
    frame (for the CSV)."""
    captions = [schedule.caption_at(f.index, f.timestamp_s) for f in chunk]
    totals = dict(predictor.times.totals)
    results = predictor(chunk, captions)
    return results, _per_frame(totals, predictor.times.totals, len(chunk))


def _batches(frames: Iterable[Frame], size: int, times: StageTimes) -> Iterator[List[Frame]]:
    """Lists of up to ``size`` frames; the time spent waiting for them is the "decode_wait"
    stage (near zero while decoding keeps ahead of the model)."""
    iterator = iter(frames)
    while True:
        started = time.perf_counter()
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        times.add("decode_wait", started)
        yield chunk


def _per_frame(before: Dict[str, float], after: Dict[str, float], count: int) -> Dict[str, float]:
    return {k: (v - before.get(k, 0.0)) / count for k, v in after.items() if v != before.get(k, 0.0)}


def _stage_means(before: Dict[str, float], times: StageTimes, waits: StageTimes, writer: Optional[WriterThreads],
                 frames: int) -> Dict[str, float]:
    if not frames:
        return {}
    means = {k: v / frames for k, v in waits.totals.items()}
    means.update({k: (v - before.get(k, 0.0)) / frames for k, v in times.totals.items()})
    if writer is not None:
        means.update(writer.ms_per_frame())
    return means


def _finish(prefetcher, writer: Optional[WriterThreads], outputs: Outputs, *, failed: bool) -> None:
    """Stop decoding, write what is done and finalize the sinks; a second Ctrl-C waits."""
    with sigint_deferred():
        prefetcher.close()
        try:
            if writer is None:
                pass
            elif failed:
                writer.abort()
            else:
                writer.close()
        finally:
            if writer is None or writer.written == 0:
                outputs.remove_created()
