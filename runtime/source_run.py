"""One source into one output folder with given options: the unit every front end runs.

`tr2m-run` runs one `SourceRun`; a batch worker runs many with one `Engine` (opened once, its
caption cache shared between sources):

    from runtime.run_options import RunOptions
    from runtime.source_run import run_source
    options = RunOptions(caption="an office", npz=True)
    engine = options.open_engine("bundles/paper")
    for clip in clips:
        report = run_source(engine, clip, f"out/{clip.stem}", options)   # a RunReport

Each output folder gets the selected outputs and run.json (the summary, written when at least
one frame was done). Errors are `Tr2mRuntimeError`s with one-line messages; a Ctrl-C in the main
thread stops after the batch in progress and the report says ``interrupted``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from . import loop
from .captions import CaptionSchedule
from .display_range import default_range
from .engine import Engine
from .loop import RunReport
from .predictors import predictor_for
from .run_options import RunOptions
from .run_summary import summary, write_summary
from .sources import FrameSource, Skipped, open_source

FOLDER_FPS = 10.0  # video frame rate for image folders (no timing of their own)
STILL_FPS = 30.0   # ... and for other sources that do not say


class SourceRun:
    """One source (a path, camera index or an open `FrameSource`) run into ``out`` with ``options``.

    Steps: construct (opens the source, builds the predictor, configures the outputs: fps, colour
    range, UNTRAINED label), `prepare` (embeds the captions, creates the folder; optional, `run`
    does it), `run`, `close`
    (closes a source this object opened; also on leaving a ``with`` block).
    schedule: the captions per frame; default ``options.schedule()``.
    """

    def __init__(self, engine: Engine, source: Union[str, Path, FrameSource], out: Union[str, Path],
                 options: RunOptions, *, schedule: Optional[CaptionSchedule] = None) -> None:
        self.engine, self.options = engine, options
        self.outputs = options.outputs(out)
        self.schedule = schedule or options.schedule()
        self._owns_source = not isinstance(source, FrameSource)
        self.frames: FrameSource = open_source(source) if self._owns_source else source
        self._prepared = False
        try:
            self.predictor = predictor_for(engine, maps=options.npz and options.maps,
                                           keyframe_every=options.keyframe_every, smoothing=options.smooth or 0.0)
            self._configure_outputs()
        except BaseException:
            self.close()
            raise

    def _configure_outputs(self) -> None:
        info = self.frames.info
        self.outputs.fps = info.fps or (FOLDER_FPS if info.kind == "folder" else STILL_FPS)
        chosen = self.options.depth_range
        self.outputs.range_m = None if chosen == "auto" else chosen or default_range(self.engine.bundle.manifest)
        self.outputs.label = "UNTRAINED" if self.engine.untrained else ""

    @property
    def expected_frames(self) -> Optional[int]:
        """Frames the run will do, if the source says how many it has (None otherwise)."""
        count, limit = self.frames.info.frame_count, self.options.max_frames
        if count is None:
            return limit
        return min(count, limit) if limit else count

    def prepare(self) -> None:
        """Embed every caption the schedule can give, then release the text graph (so only the
        image graph is in memory while frames run), then create the output folder (OutputError if
        it cannot be written). A bundle whose text side fails leaves nothing on disk."""
        cache = self.engine.cache
        misses = cache.misses
        self.engine.prefetch(self.schedule.captions())
        # this run's counts: misses = captions embedded (all up front); hits = frames served from the cache
        self._cache_start = (cache.hits, misses)
        self.outputs.prepare()
        self._prepared = True

    def run(self, on_frames: Callable[[int], None] = lambda n: None,
            on_skip: Callable[[Skipped], None] = lambda skipped: None) -> RunReport:
        """Predict every frame, write the outputs and run.json; on_frames(n) as n more are done,
        on_skip(s) for each input the source skipped (also in ``report.skipped`` and run.json)."""
        if not self._prepared:
            self.prepare()
        cache = self.engine.cache
        hits, misses = self._cache_start
        report = loop.run(self.predictor, self.frames, self.schedule, self.outputs, batch=self.options.batch,
                          max_frames=self.options.max_frames, on_frames=on_frames, on_skip=on_skip)
        report.caption_cache = {"hits": cache.hits - hits, "misses": cache.misses - misses}
        if report.frames:
            write_summary(self.outputs.folder, summary(report, self.engine, self.options, self.frames.info.spec))
        return report

    def close(self) -> None:
        if self._owns_source:
            self.frames.close()

    def __enter__(self) -> "SourceRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_source(engine: Engine, source: Union[str, Path, FrameSource], out: Union[str, Path], options: RunOptions,
               *, schedule: Optional[CaptionSchedule] = None, on_frames: Callable[[int], None] = lambda n: None,
               on_skip: Callable[[Skipped], None] = lambda skipped: None) -> RunReport:
    """Run one source into the output folder ``out`` with ``options`` (see `SourceRun`).

    engine: an open `Engine` (reuse it across sources). source: a video, image, image folder,
    camera index or an open `FrameSource`. Returns the `RunReport` (``report.skipped``: damaged
    images of a folder that were left out); raises `Tr2mRuntimeError` (one-line message) for bad
    input, leaving no folder behind if no frame was done.
    """
    with SourceRun(engine, source, out, options, schedule=schedule) as job:
        return job.run(on_frames, on_skip)
