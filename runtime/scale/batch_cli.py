"""`tr2m-batch`: metric depth for many videos on a Ray actor pool (a local Ray, or a cluster).

    tr2m-batch videos/*.mp4 --bundle bundles/paper --out depth/ --caption "a street" --png16
    tr2m-batch list.txt --bundle /shared/bundles/paper --out /shared/depth --workers 2:8 --address auto

Each video becomes DIR/<video name>/ with the outputs `tr2m-run` would write, complete or absent.
At the end: a table and DIR/batch.json. Exit codes: 0 every video done (or already complete);
1 some videos failed (see the table); 2 bad options or bundle; 130 interrupted (only complete
folders are left).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import List, Optional, Tuple

import click
from tqdm import tqdm

from ..atomic import atomic_write_bytes
from ..bundle import Bundle
from ..cli import command as run_command
from ..run_options import RunOptions
from .batch import BatchRun, PoolOptions, SourceRunner, VideoResult, clean_up, execute, pending
from .cluster import ClusterOptions, RayCluster, require
from .videos import jobs as make_jobs

SUMMARY = "batch.json"
# tr2m-run's own options, reused as they are: every output and model option works per video.
# Captions are per video here (see videos.py); for captions made by a model, run
# `tr2m-caption video` first: the NAME.srt it writes beside each video is picked up.
PER_VIDEO = ("caption", "captions_file", "auto_caption", "caption_model")
RUN_PARAMS = [p for p in run_command.params if p.name in {f.name for f in fields(RunOptions)} and p.name not in PER_VIDEO]


def _parse_workers(ctx, param, value: str) -> Tuple[int, int]:
    try:
        low, _, high = value.partition(":")
        pool = PoolOptions(int(low), int(high or low))
    except ValueError:
        raise click.BadParameter(f"expected N or MIN:MAX with 1 <= MIN <= MAX, got {value!r}") from None
    return pool.min_workers, pool.max_workers


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("sources", nargs=-1, required=True)
@click.option("--bundle", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Exported bundle folder (the same path must exist on every node).")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output folder DIR: one DIR/<video name>/ per video, plus DIR/batch.json.")
@click.option("--caption", help="Caption for videos with no schedule beside them and none in --captions-map.")
@click.option("--captions-map", type=click.Path(dir_okay=False),
              help='JSON {"video name": "caption" or "schedule.srt|.json"} (paths relative to the JSON file).')
@click.option("--workers", default="1", show_default=True, callback=_parse_workers, metavar="N|MIN:MAX",
              help="Actors in the pool; MIN:MAX autoscales. Each opens the bundle once.")
@click.option("--cpus-per-worker", default=1.0, show_default=True, type=click.FloatRange(0))
@click.option("--gpus-per-worker", default=None, type=click.FloatRange(0),
              help="GPUs per actor [default: 1 when the cluster has GPUs, else 0].")
@click.option("--address", help="Ray cluster to join: auto, or ray://HOST:10001. Default: start a local Ray.")
@click.option("--num-cpus", type=click.IntRange(1), help="CPUs of the local Ray [default: all].")
@click.option("--object-store-mb", default=256, show_default=True, type=click.IntRange(80),
              help="Object store of the local Ray (videos never travel through it).")
def command(sources, bundle, out, caption, captions_map, workers, cpus_per_worker, gpus_per_worker, address,
            num_cpus, object_store_mb, **run_params) -> int:
    """Metric depth for many videos (files, image folders, globs, or a .txt list of them).

    One task per video (never split across workers), on a pool of Ray actors that each open the
    bundle once. Captions per video: --captions-map, else NAME.srt / NAME.json beside the video,
    else --caption. Folders already complete (every file checked against its complete.json) are
    skipped, so running the same command again finishes what is missing.

    Exit codes: 0 every video done (or already complete); 1 some videos failed (see the table
    and batch.json); 2 bad options or bundle; 130 interrupted (only complete folders are left).
    """
    require("ray", "ray.data")
    options = RunOptions.from_params({**run_params, "caption": caption})
    Bundle.open(bundle, verify=True)  # a bad bundle is one error line here, not one per worker
    run = BatchRun(make_jobs(sources, caption=caption, caption_map=captions_map), Path(out),
                   SourceRunner(str(bundle), options), PoolOptions(*workers, cpus_per_worker, gpus_per_worker or 0.0))
    run.out.mkdir(parents=True, exist_ok=True)
    todo, skipped = pending(run)
    started = time.perf_counter()
    results, interrupted = [], False
    if todo:
        try:
            results = _on_cluster(run, todo, ClusterOptions(address, num_cpus, object_store_mb), gpus_per_worker)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            clean_up(run.out)  # Ray is down (or its workers are): staging folders are orphans now
    rows = _rows(run, results + skipped, interrupted)
    _write_summary(run, rows, time.perf_counter() - started, interrupted)
    click.echo(_table(rows))
    if interrupted:
        click.echo("interrupted: only complete video folders were kept; run the same command to finish", err=True)
        return 130
    return 1 if any(r.status == "failed" for r in rows) else 0


def _on_cluster(run: BatchRun, todo, cluster: ClusterOptions, gpus_per_worker: Optional[float]) -> List[VideoResult]:
    with RayCluster(cluster):
        if gpus_per_worker is None:
            import ray

            has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
            run.pool = PoolOptions(run.pool.min_workers, run.pool.max_workers, run.pool.cpus_per_worker,
                                   1.0 if has_gpu else 0.0)
        videos = tqdm(total=len(todo), unit="video", desc="videos", file=sys.stderr, position=0, dynamic_ncols=True)
        frames = tqdm(total=0, unit="frame", desc="frames", file=sys.stderr, position=1, dynamic_ncols=True)
        with videos, frames:
            return execute(run, todo, lambda v, f, t: _advance(videos, frames, v, f, t))


def _advance(videos: tqdm, frames: tqdm, done: int, frame_count: int, frame_total: int) -> None:
    videos.update(done - videos.n)
    frames.total = max(frame_total, frame_count)
    frames.update(frame_count - frames.n)


def _rows(run: BatchRun, results: List[VideoResult], interrupted: bool) -> List[VideoResult]:
    """One row per job, in the order given; jobs without a result were interrupted."""
    by_name = {r.name: r for r in results}
    return [by_name.get(j.name) or VideoResult(j.name, j.source, "interrupted" if interrupted else "failed")
            for j in run.jobs]


def _write_summary(run: BatchRun, rows: List[VideoResult], seconds: float, interrupted: bool) -> Path:
    counts = {s: sum(r.status == s for r in rows) for s in ("done", "skipped", "failed", "interrupted")}
    summary = {"out": str(run.out), "bundle": run.runner.bundle, "workers": [run.pool.min_workers, run.pool.max_workers],
               "seconds": round(seconds, 3), "interrupted": interrupted, "counts": counts,
               "frames": sum(r.frames for r in rows), "videos": [asdict(r) for r in rows]}
    return atomic_write_bytes(run.out / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())


def _table(rows: List[VideoResult]) -> str:
    width = max([len("video"), *(len(r.name) for r in rows)])
    lines = [f"{'video':<{width}}  {'status':<11} {'frames':>6} {'seconds':>8} {'fps':>7}  error"]
    for r in rows:
        error = r.error if len(r.error) <= 100 else r.error[:97] + "..."
        lines.append(f"{r.name:<{width}}  {r.status:<11} {r.frames:>6} {r.seconds:>8.1f} {r.fps:>7.2f}  {error}")
    return "\n".join(lines)


command.params.extend(RUN_PARAMS)
