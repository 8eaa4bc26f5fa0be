"""`tr2m-batch`'s engine room: one Ray Data task per video over an autoscaling pool of actors.

    driver: jobs -> skip verified-complete folders -> Ray Dataset (one row, one block per video)
            -> map_batches(VideoWorker, batch_size=1, concurrency=(min, max)) -> results + progress
    actor:  Engine opened once; per video: the tr2m-run loop into a staging folder -> seal -> rename

A video is never split (keyframe state and caption schedules are per video). An actor that dies
(killed process, lost node) is restarted by Ray Data, which runs the video again from the start
on a live worker; the dead attempt left only a staging folder, removed at the end. A video that
fails on its own (unreadable, damaged) is a row with status "failed" and its one-line reason.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from ..errors import Tr2mRuntimeError
from ..run_options import RunOptions
from ..source_run import SourceRun
from . import folders
from .videos import VideoJob

# A video whose workers die this many times is given up (a file that crashes workers must not loop).
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class PoolOptions:
    """The actor pool: between min_workers and max_workers actors, each with these resources."""

    min_workers: int = 1
    max_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_workers <= self.max_workers:
            raise ValueError(f"need 1 <= min workers <= max workers, got {self.min_workers}..{self.max_workers}")


@dataclass
class VideoResult:
    """One row of batch.json and of the table."""

    name: str
    source: str
    status: str  # done | skipped | failed | interrupted
    frames: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    error: str = ""
    warnings: List[str] = field(default_factory=list)
    worker: str = ""


# ------------------------------------------------------------------------------ the actor
class Progress:
    """A tiny actor the workers tell what they do: attempts per video (a video whose workers keep
    dying is given up after MAX_ATTEMPTS) and frames done (the driver's progress bar)."""

    def __init__(self) -> None:
        self.done: Dict[str, int] = {}
        self.totals: Dict[str, int] = {}
        self.attempts: Dict[str, int] = {}

    def begin(self, name: str) -> int:
        """A worker starts ``name``; -> which attempt this is (1 = the first)."""
        self.attempts[name] = self.attempts.get(name, 0) + 1
        self.done[name] = 0
        return self.attempts[name]

    def add(self, name: str, frames: int) -> None:
        self.done[name] = self.done.get(name, 0) + frames

    def expect(self, name: str, frames: int) -> None:
        self.totals[name] = frames

    def snapshot(self) -> tuple:
        return sum(self.done.values()), sum(self.totals.values())


@dataclass(frozen=True)
class SourceRunner:
    """Runs one video exactly as `tr2m-run` does (the same `SourceRun` loop and outputs)."""

    bundle: str
    options: "RunOptions"

    def open_engine(self):
        return self.options.open_engine(self.bundle)

    def __call__(self, engine, job: VideoJob, folder: Path, report: Callable[[str, int], None]) -> int:
        """-> frames written into ``folder``; report("total", n) then report("frames", n) as they go."""
        with SourceRun(engine, job.source, folder, self.options, schedule=job.schedule()) as run:
            report("total", run.expected_frames or 0)
            result = run.run(on_frames=lambda n: report("frames", n))
        if result.interrupted:  # SIGINT reached the worker: the folder is not complete
            raise Tr2mRuntimeError(f"interrupted after {result.frames} frames")
        if not result.frames:
            raise Tr2mRuntimeError("no frame could be decoded")
        return result.frames


class VideoWorker:
    """A Ray Data actor: opens the Engine once, then runs whole videos through ``runner``."""

    def __init__(self, runner: SourceRunner, out: str, progress) -> None:
        import os
        import socket

        self.engine = runner.open_engine()
        self.run_video, self.out, self.progress = runner, Path(out), progress
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        results = [self._one(VideoJob(**json.loads(text))) for text in batch["job"]]
        return {"result": [json.dumps(asdict(r)) for r in results]}

    def _one(self, job: VideoJob) -> VideoResult:
        import ray

        attempt = ray.get(self.progress.begin.remote(job.name))
        if attempt > MAX_ATTEMPTS:
            return VideoResult(job.name, job.source, "failed", worker=self.worker, error=_given_up())
        started = time.perf_counter()
        staging = folders.staging_folder(self.out, job.name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                frames = self.run_video(self.engine, job, staging, self._reporter(job.name))
            except (Tr2mRuntimeError, OSError, ValueError) as e:
                return self._failed(job, staging, " ".join(str(e).split()) or type(e).__name__)
            except Exception as e:  # noqa: BLE001 - one bad video must not stop the others
                return self._failed(job, staging, f"{type(e).__name__}: {e} ({_where(e)})")
        seconds = time.perf_counter() - started
        notes = sorted({" ".join(str(w.message).split()) for w in caught})
        folders.seal(staging, {"source": job.source, "frames": frames, "seconds": round(seconds, 3)})
        folders.publish(staging, self.out / job.name)
        return VideoResult(job.name, job.source, "done", frames, round(seconds, 3),
                           round(frames / seconds, 3) if seconds else 0.0, warnings=notes, worker=self.worker)

    def _reporter(self, name: str):
        progress = self.progress

        def report(event: str, count: int) -> None:  # fire and forget: never waits for the driver
            (progress.expect if event == "total" else progress.add).remote(name, count)

        return report

    def _failed(self, job: VideoJob, staging: Path, reason: str) -> VideoResult:
        shutil.rmtree(staging, ignore_errors=True)
        return VideoResult(job.name, job.source, "failed", error=reason, worker=self.worker)


def _where(e: BaseException) -> str:
    frame = traceback.extract_tb(e.__traceback__)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}"


# ------------------------------------------------------------------------------ the driver
@dataclass
class BatchRun:
    """Everything the driver needs: the videos, DIR, how to run one video, the pool."""

    jobs: List[VideoJob]
    out: Path
    runner: SourceRunner
    pool: PoolOptions = PoolOptions()


def pending(run: BatchRun) -> tuple:
    """-> (jobs to run, results for folders already complete, verified file by file)."""
    todo, skipped = [], []
    for job in run.jobs:
        folder = run.out / job.name
        if folder.is_dir() and folders.check_complete(folder) is None:
            skipped.append(VideoResult(job.name, job.source, "skipped"))
        else:
            todo.append(job)
    return todo, skipped


def execute(run: BatchRun, todo: List[VideoJob], on_progress: Callable[[int, int, int], None]) -> List[VideoResult]:
    """Run ``todo`` on the pool (Ray must be initialized); on_progress(videos, frames, frame_total).
    KeyboardInterrupt stops waiting; the caller shuts Ray down and cleans up."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: losing a worker node must not lose the tally.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    progress = ray.remote(num_cpus=0, scheduling_strategy=here)(Progress).remote()
    dataset = _dataset(run, todo, progress)
    results: List[VideoResult] = []
    failure: List[BaseException] = []

    def consume() -> None:
        try:
            for row in dataset.iter_rows():
                results.append(VideoResult(**json.loads(row["result"])))
        except BaseException as e:  # noqa: BLE001 - reported by the driver thread
            failure.append(e)

    consumer = threading.Thread(target=consume, name="tr2m-batch-results", daemon=True)
    consumer.start()
    tally = (0, 0)
    while consumer.is_alive():
        consumer.join(0.5)
        tally = _tally(progress, tally)
        on_progress(len(results), *tally)
    if failure:
        raise failure[0]
    return results + _lost(todo, results)


def _tally(progress, last: Tuple[int, int]) -> Tuple[int, int]:
    """(frames, frame total) from the progress actor, or ``last`` while it cannot answer (a node
    going down can make it briefly unreachable): the bar pauses, the results do not depend on it."""
    import ray

    try:
        return tuple(ray.get(progress.snapshot.remote(), timeout=10))
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):  # ActorUnavailableError included
        return last


def _dataset(run: BatchRun, todo: List[VideoJob], progress):
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver draws its own bar
    context.max_errored_blocks = len(todo)  # a video given up on is reported, not fatal to the others
    context.execution_options.preserve_order = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    rows = [{"job": json.dumps(asdict(job))} for job in todo]
    pool = run.pool
    return ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        VideoWorker, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=pool.min_workers, max_size=pool.max_workers),
        num_cpus=pool.cpus_per_worker, num_gpus=pool.gpus_per_worker,
        fn_constructor_args=(run.runner, str(run.out), progress))
    # Ray Data's actor pools restart dead actors and retry their tasks (max_restarts and
    # max_task_retries -1 by default): Progress.begin bounds the attempts per video instead.


def _lost(todo: List[VideoJob], results: List[VideoResult]) -> List[VideoResult]:
    """Videos with no result: Ray gave up on them after their worker died MAX_ATTEMPTS times."""
    seen = {r.name for r in results}
    return [VideoResult(j.name, j.source, "failed", error=_given_up()) for j in todo if j.name not in seen]


def _given_up() -> str:
    return f"its workers died {MAX_ATTEMPTS} times while running it (a crash or out of memory on this video?)"


def clean_up(out: Path) -> int:
    """Remove staging folders left by dead or interrupted workers (no worker may be running)."""
    return folders.remove_partials(out)
