"""`tr2m-bench`: speed, memory and agreement of every backend, the video loop, keyframe mode.

    tr2m-bench --preset paper --size 434x560 --bundle bundles/paper --batch 2 --repeats 3
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import click

from export.cli import size_option

from .run import BenchConfig, run_benchmark


def _ensure_bundle(bundle: Path, preset: str | None, size) -> None:
    """Check the bundle matches --preset/--size; export a random-init one if the folder is absent."""
    from runtime import Bundle
    from runtime.errors import BundleError

    if not bundle.exists():
        if preset is None:
            raise click.UsageError(f"{bundle} does not exist: pass --preset to export a random-init bundle there, "
                                   "or point --bundle at one (tr2m-export onnx ...)")
        command = [sys.executable, "-m", "export.cli", "onnx", "--preset", preset, "--random-init", "--half",
                   "--out", str(bundle)] + (["--size", f"{size[0]}x{size[1]}"] if size else [])
        click.echo(f"exporting a random-init {preset} bundle to {bundle} ...", err=True)
        if subprocess.run(command).returncode != 0:
            raise click.ClickException("the export failed (see above)")
    try:
        manifest = Bundle.open(bundle, verify=False).manifest
    except BundleError as e:
        raise click.ClickException(str(e)) from e
    got_size = (manifest["preprocessing"]["height"], manifest["preprocessing"]["width"])
    if preset is not None and manifest.get("preset") != preset:
        raise click.UsageError(f"--preset {preset} but the bundle was exported from preset {manifest.get('preset')}")
    if size is not None and tuple(size) != got_size:
        raise click.UsageError(f"--size {size[0]}x{size[1]} but the bundle's input is {got_size[0]}x{got_size[1]}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Bundle folder to measure (exported there first, random-init, if absent and --preset is given).")
@click.option("--preset", help="Expected preset of the bundle (and the one to export if the folder is absent).")
@click.option("--size", callback=size_option, help="Expected input size HxW of the bundle.")
@click.option("--backends", default="all", show_default=True,
              help="Comma-separated rows: pytorch-fp32, ort-cpu-fp32, ort-cpu-fp16, ort-cpu-int8, ort-cpu-int8dyn, "
                   "ort-cpu-int8dyn-pc, pytorch-fp16, ort-cuda-fp32, ort-cuda-fp16, ort-trt-fp16, tensorrt-fp16, "
                   "tensorrt-int8.")
@click.option("--repeats", default=5, show_default=True, help="Timed batch-1 calls per backend (at least one per frame).")
@click.option("--warmup", default=1, show_default=True, help="Untimed calls before timing.")
@click.option("--batch", default=4, show_default=True, help="The larger batch for the throughput column.")
@click.option("--frame", "frames", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Real image for timing and agreement (repeatable; default: NYU, KITTI and SUN RGB-D samples).")
@click.option("--video", "videos", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Real video for the loop and keyframe measurements (repeatable; default: sam2_04_coffee.mp4).")
@click.option("--video-frames", default=16, show_default=True, help="Frames used from each video.")
@click.option("--every", default=8, show_default=True, help="Keyframe interval K.")
@click.option("--smoothing", default=0.5, show_default=True, help="EMA weight for the smoothed keyframe run (0: skip it).")
@click.option("--paired-rounds", default=3, show_default=True,
              help="Rounds of the interleaved latency comparison (all rows in one process; 0: skip).")
@click.option("--no-video", is_flag=True, help="Skip the video loop, keyframe and cache measurements.")
@click.option("--caption", default="an office", show_default=True)
@click.option("--ckpt", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Head checkpoint the bundle was exported from (trained bundles: the PyTorch row needs it).")
@click.option("--seed", default=0, show_default=True, help="Seed the random-init bundle was exported with.")
@click.option("--threads", type=int, help="Threads per backend (default: all cores).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path(__file__).resolve().parent / "RESULTS.md",
              show_default="bench/RESULTS.md", help="Markdown report (the generated section is replaced).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write every number as JSON.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), help="Where temporary files go (default: system temp).")
@click.option("--timeout", "timeout_s", default=3600.0, show_default=True, help="Seconds allowed per worker process.")
def main(bundle, preset, size, backends, repeats, warmup, batch, frames, videos, video_frames, every, smoothing,
         paired_rounds, no_video,
         caption, ckpt, seed, threads, out, json_out, work_dir, timeout_s):
    """Measure latency per stage, throughput, peak memory and agreement with PyTorch FP32 for every
    backend (each in a fresh process), the video loop vs the bare engine, keyframe mode and the caption
    cache; print a table and write RESULTS.md."""
    _ensure_bundle(bundle, preset, size)
    options = dict(bundle=bundle, out=out, backends=backends, repeats=repeats, warmup=warmup, batch=batch,
                   video_frames=video_frames, every=every, smoothing=smoothing, caption=caption, seed=seed,
                   checkpoint=ckpt, threads=threads, video=not no_video, paired_rounds=paired_rounds,
                   json_out=json_out, work_dir=work_dir, worker_timeout_s=timeout_s,
                   command="tr2m-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    if frames:
        options["frames"] = list(frames)
    if videos:
        options["videos"] = list(videos)
    try:
        config = BenchConfig(**options)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    if work_dir:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    run_benchmark(config)


if __name__ == "__main__":
    sys.exit(main())
