"""The `tr2m-run` loop: frames -> metric depth -> outputs, with decoding and writing overlapped.

    source --prefetch thread (bounded)--> batches --predictor (caller's thread)--> depth
           --one writer thread per output (bounded)--> sinks (video, PNG, NPZ, PLY, CSV)

Memory stays bounded on any video length: at most ``2 * batch + 2`` decoded frames wait for the
model and as many results wait for each writer. Preprocessing runs inside `Engine.predict_batch`
(about 1 ms a frame at the tiny and paper input sizes, so it is not worth another thread).

Ctrl-C stops the loop after the batch in progress (a second Ctrl-C at once): the frames already
predicted are still written, to every output, then every sink is finalized (`Sink.abort`: the mp4
plays) and the report says ``interrupted``. A KeyboardInterrupt raised inside the loop (another
thread's handler, a predictor) does the same. Any other error also finalizes what was written and is re-raised; if no
frame was written, the output folders this run created are removed again.
"""
from __future__ import annotations

import itertools
import math
import queue
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .atomic import PendingFile
from .captions import CaptionSchedule
from .engine import Engine, Prediction, StageTimes
from .errors import OutputError
from .sinks import Intrinsics, Sink, SinkGroup, VideoSink, make_sink
from .sources import Frame, prefetch

# Fixed colour range (metres) per preset, when the bundle's manifest has no "display_range_m".
# None means "auto": fixed from the first frame (the untrained tiny preset has no metric scale).
PRESET_RANGES: Dict[str, Optional[Tuple[float, float]]] = {"kitti": (1.0, 80.0), "tiny": None}
INDOOR_RANGE = (0.5, 10.0)  # paper, sunrgbd, paper_v2 and unknown presets


def default_range(manifest: dict) -> Optional[Tuple[float, float]]:
    """The colour range a bundle asks for: manifest "display_range_m", else by preset."""
    if manifest.get("display_range_m"):
        lo, hi = manifest["display_range_m"]
        return float(lo), float(hi)
    return PRESET_RANGES.get(manifest.get("preset", ""), INDOOR_RANGE)


def auto_range(depth_m: np.ndarray) -> Tuple[float, float]:
    """A range from one depth map: its 2nd..98th percentiles over valid pixels, rounded out."""
    valid = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
    if valid.size == 0:
        return INDOOR_RANGE
    lo, hi = np.percentile(valid, [2, 98])
    lo, hi = _round_down(float(lo)), _round_up(float(hi))
    return (lo, hi) if hi > lo else (lo, lo * 2 + 1)


def _round_down(x: float) -> float:
    """x rounded down to one significant digit (0.63 -> 0.6); 0 for x <= 0."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x))
    return round(math.floor(x / 10.0 ** e) * 10.0 ** e, -e)


def _round_up(x: float) -> float:
    """x rounded up to one significant digit (273 -> 300)."""
    e = math.floor(math.log10(x))
    return round(math.ceil(x / 10.0 ** e) * 10.0 ** e, -e)


# ------------------------------------------------------------------------------ outputs
class LabelledVideoSink(VideoSink):
    """A VideoSink that stamps a text (e.g. "UNTRAINED") in the top-left corner of every frame."""

    def __init__(self, path, *, label: str = "", **options) -> None:
        super().__init__(path, **options)
        self.label = label

    def compose(self, frame: Frame, depth_m: np.ndarray) -> np.ndarray:
        picture = super().compose(frame, depth_m)
        if self.label:
            stamp(picture, self.label)
        return picture


def stamp(picture: np.ndarray, text: str) -> None:
    """Write ``text`` in red on a black box in the top-left corner of uint8 [H, W, 3], in place."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.5, picture.shape[0] / 500)
    thick = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(4, h // 3)
    cv2.rectangle(picture, (0, 0), (w + 2 * pad, h + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(picture, text, (pad, h + pad), font, scale, (255, 40, 40), thick, cv2.LINE_AA)


# Output name -> file or folder name under Outputs.folder.
OUTPUT_NAMES = {"video": "depth.mp4", "png16": "png16", "npz": "npz", "ply": "ply", "csv": "depth.csv"}


@dataclass
class Outputs:
    """Which outputs to write under one folder, and how.

    range_m: fixed colour range of the video in metres; None = auto from the first frame.
    fps: frame rate of the video. label: corner text on the video ("" for none).
    maps: the NPZ files also hold the scale, shift and relative maps (costs a resize each).
    """

    folder: Path
    video: bool = True
    side_by_side: bool = False
    png16: bool = False
    npz: bool = False
    maps: bool = False
    ply: bool = False
    intrinsics: Optional[Intrinsics] = None
    fov_deg: Optional[float] = None
    ply_stride: int = 1
    csv: bool = False
    range_m: Optional[Tuple[float, float]] = None
    fps: float = 30.0
    label: str = ""
    _created: List[Path] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.selected():
            raise OutputError("no output selected: enable at least one of video, png16, npz, ply, csv")
        if self.ply and (self.intrinsics is None) == (self.fov_deg is None):
            raise OutputError("the PLY output needs a camera: give a field of view (--fov DEG) "
                              "or intrinsics (--intrinsics fx,fy,cx,cy), not both")

    def selected(self) -> List[str]:
        return [name for name in OUTPUT_NAMES if getattr(self, name)]

    def paths(self) -> Dict[str, Path]:
        """Output name -> the file (video, csv) or folder (png16, npz, ply) it writes."""
        return {name: self.folder / OUTPUT_NAMES[name] for name in self.selected()}

    def prepare(self) -> None:
        """Create the folder and check that files can be written in it (OutputError if not)."""
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.folder}: cannot create the output folder ({e.strerror or e})") from e
        self._created = missing[::-1] + [p for p in self.paths().values() if not p.exists()]
        probe = PendingFile(self.folder / ".probe")
        try:
            with open(probe.temp, "xb"):
                pass
        except OSError as e:
            self.remove_created()
            raise OutputError(f"{self.folder}: cannot write in the output folder ({e.strerror or e})") from e
        finally:
            probe.discard()

    def remove_created(self) -> None:
        """After a run that wrote no frame: remove the output files (a header-only CSV) and the
        folders that did not exist before `prepare`, folders only if empty."""
        for path in sorted(self._created, key=lambda p: len(p.parts), reverse=True):
            try:
                path.rmdir() if path.is_dir() else path.unlink()
            except OSError:
                pass  # not empty or already gone: leave it

    def open(self, first_depth: np.ndarray) -> Dict[str, Sink]:
        """The sinks by output name, built when the first depth map exists (it may set the
        colour range of the video)."""
        paths, sinks = self.paths(), {}
        builders = {
            "video": lambda: LabelledVideoSink(paths["video"], min_m=lo, max_m=hi, fps=self.fps,
                                               side_by_side=self.side_by_side, label=self.label),
            "png16": lambda: make_sink("png16", paths["png16"]),
            "npz": lambda: make_sink("npz", paths["npz"], compressed=False),  # float32 barely compresses
            "ply": lambda: make_sink("ply", paths["ply"], intrinsics=self.intrinsics, hfov_deg=self.fov_deg,
                                     stride=self.ply_stride),
            "csv": lambda: make_sink("csv", paths["csv"]),
        }
        lo, hi = self.range_m or auto_range(first_depth)
        try:
            for name in self.selected():
                sinks[name] = builders[name]()
        except BaseException:
            SinkGroup(list(sinks.values())).abort()
            raise
        return sinks


# ------------------------------------------------------------------------------ writer
_STOP = object()


class SinkWriter:
    """Feeds a sink from a background thread, at most ``maxsize`` frames behind the caller.

    An error in the thread is re-raised by every later `put` and by `close`; after an error the
    thread keeps draining the queue, so `put` never blocks forever.
    """

    def __init__(self, sink: Sink, maxsize: int = 4) -> None:
        self.sink = sink
        self.write_ms = 0.0
        self.written = 0
        self._error: Optional[BaseException] = None
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name="tr2m-writer", daemon=True)
        self._thread.start()

    def put(self, frame: Frame, depth_m: np.ndarray, extras: dict) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((frame, depth_m, extras))

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self._error is not None:
                continue  # drain: the caller learns about the error on its next put
            started = time.perf_counter()
            try:
                self.sink.write(*item)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self._error = e
                continue
            self.write_ms += (time.perf_counter() - started) * 1e3
            self.written += 1

    def _stop_thread(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def close(self) -> None:
        """Write what is queued, then finalize the sink; raises the first error (after abort)."""
        self._stop_thread()
        if self._error is not None:
            self.sink.abort()
            raise self._error
        self.sink.close()

    def abort(self) -> None:
        """Write what is queued (the frames already done), then finalize without raising."""
        self._stop_thread()
        self.sink.abort()


class Writers:
    """One `SinkWriter` thread per output, so the video encoder, the PNG encoder and the others
    work in parallel; each frame goes to all of them."""

    def __init__(self, sinks: Dict[str, Sink], maxsize: int = 4) -> None:
        self.sinks = sinks
        self.writers = {name: SinkWriter(sink, maxsize) for name, sink in sinks.items()}

    @property
    def written(self) -> int:
        """Frames that every output has written."""
        return min((w.written for w in self.writers.values()), default=0)

    def ms_per_frame(self) -> Dict[str, float]:
        return {f"write_{name}": w.write_ms / max(w.written, 1) for name, w in self.writers.items()}

    def put(self, frame: Frame, depth_m: np.ndarray, extras: dict) -> None:
        for writer in self.writers.values():
            writer.put(frame, depth_m, extras)

    def close(self) -> None:
        """Finalize every output; raises the first error after finalizing all."""
        errors = []
        for writer in self.writers.values():
            try:
                writer.close()
            except BaseException as e:  # noqa: BLE001 - raised below, after the others closed
                errors.append(e)
        if errors:
            raise errors[0]

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()

    def video_range(self) -> Optional[Tuple[float, float]]:
        video = self.sinks.get("video")
        return (video.colorizer.min_m, video.colorizer.max_m) if isinstance(video, VideoSink) else None


# ------------------------------------------------------------------------------ predictors
Result = Tuple[np.ndarray, dict]  # depth float32 [H, W] metres, extras for the sinks


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


def _result(prediction, maps: bool) -> Result:
    if not maps:
        return prediction, {}
    assert isinstance(prediction, Prediction)
    extras = {k: getattr(prediction, k) for k in ("scale", "shift", "rel") if getattr(prediction, k) is not None}
    return prediction.depth, extras


# ------------------------------------------------------------------------------ the loop
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

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run(predictor: Callable[[Sequence[Frame], Sequence[str]], List[Result]], frames: Iterable[Frame],
        schedule: CaptionSchedule, outputs: Outputs, *, batch: int = 1, max_frames: Optional[int] = None,
        on_frames: Callable[[int], None] = lambda n: None) -> RunReport:
    """Predict depth for every frame (up to ``max_frames``) and write the outputs.

    predictor: list of B Frames + B captions -> B (depth [H, W] metres, extras), with ``.times``
    (a StageTimes). outputs must be `prepare`d. on_frames(n) is called as n more frames are done.
    Returns the report; re-raises errors after finalizing what was written.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    frames = itertools.islice(frames, max_frames) if max_frames is not None else frames
    report, writer, waits, queue_size = RunReport(), None, StageTimes(), 2 * batch + 2
    before = dict(predictor.times.totals)
    started = time.perf_counter()
    prefetcher = prefetch(frames, maxsize=queue_size)
    try:
        with _CtrlC() as ctrl_c:
            for chunk in _batches(prefetcher, batch, waits):
                results, timings = _predict(predictor, chunk, schedule)
                writer = writer or Writers(outputs.open(results[0][0]), maxsize=queue_size)
                for frame, (depth, extras) in zip(chunk, results):
                    writer.put(frame, depth, dict(extras, timings_ms=timings))
                on_frames(len(chunk))
                if ctrl_c.pressed:
                    break
            report.interrupted = ctrl_c.pressed
    except KeyboardInterrupt:
        report.interrupted = True
    except BaseException:
        _finish(prefetcher, writer, outputs, failed=True)
        raise
    _finish(prefetcher, writer, outputs, failed=report.interrupted)
    report.seconds = time.perf_counter() - started
    report.frames = writer.written if writer else 0
    report.keyframes = getattr(predictor, "keyframe_count", None)
    report.stage_ms = _stage_means(before, predictor.times, waits, writer, report.frames)
    if report.frames:
        report.outputs = outputs.paths()
        report.range_m = writer.video_range()
    return report


def _predict(predictor, chunk: List[Frame], schedule: CaptionSchedule) -> Tuple[List[Result], Dict[str, float]]:
    """One batch through the predictor, with each frame's captions; also the stage timings per
    frame (for the CSV)."""
    captions = [schedule.caption_at(f.index, f.timestamp_s) for f in chunk]
    totals = dict(predictor.times.totals)
    results = predictor(chunk, captions)
    return results, _per_frame(totals, predictor.times.totals, len(chunk))


def _batches(frames: Iterable[Frame], size: int, times) -> Iterator[List[Frame]]:
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


def _stage_means(before: Dict[str, float], times: StageTimes, waits: StageTimes, writer: Optional[Writers],
                 frames: int) -> Dict[str, float]:
    if not frames:
        return {}
    means = {k: v / frames for k, v in waits.totals.items()}
    means.update({k: (v - before.get(k, 0.0)) / frames for k, v in times.totals.items()})
    if writer is not None:
        means.update(writer.ms_per_frame())
    return means


def _finish(prefetcher, writer: Optional[Writers], outputs: Outputs, *, failed: bool) -> None:
    """Stop decoding, write what is done and finalize the sinks; a second Ctrl-C waits."""
    with _sigint_deferred():
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


class _CtrlC:
    """While active (main thread, default SIGINT handler only): the first Ctrl-C just sets
    ``pressed``, so the loop stops between batches with every output given the same frames; a
    second Ctrl-C raises KeyboardInterrupt at once. Elsewhere Ctrl-C raises as usual."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous = None

    def __enter__(self) -> "_CtrlC":
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@contextmanager
def _sigint_deferred():
    """Ignore Ctrl-C while outputs are finalized (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = ["EnginePredictor", "INDOOR_RANGE", "KeyframeAdapter", "Outputs", "PRESET_RANGES", "RunReport",
           "SinkWriter", "Writers", "auto_range", "default_range", "run"]
