"""`tr2m-export`: the export group, completed with `trt`, which may calibrate INT8 (calib sits
above export, so the full command line is assembled here; the console script points at `main`).

\b
tr2m-export trt --bundle bundles/paper --fp16                     # TensorRT on this GPU
tr2m-export trt --bundle bundles/paper --fp16 --flavour rtx --target sm86   # ahead of time, no GPU needed
tr2m-export trt --bundle bundles/paper --int8 --calib clips/office.mp4 --calib-eval data/nyu/rgb
"""
from __future__ import annotations

from pathlib import Path

import click

from export.cli import main
from export.errors import run_cli
from export.trt.flavours import CHOICES


@click.command("trt")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Bundle folder written by `tr2m-export onnx`; engines go to <bundle>/engines.")
@click.option("--fp16", is_flag=True, help="FP16 engine from the image_fp16 graph (export with --half).")
@click.option("--int8", is_flag=True, help="INT8 engine from the Q/DQ image_int8 graph (made by --calib).")
@click.option("--calib", "calib_sources", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Calibration frames for --int8: video, image folder or image (repeatable). Writes image_int8.")
@click.option("--calib-caption", "calib_captions", multiple=True,
              help="Caption(s) describing the calibration footage (repeatable; assigned in turn).")
@click.option("--calib-size", default=128, show_default=True, help="Number of calibration frames.")
@click.option("--calib-every", default=10, show_default=True, help="Use every k-th video frame.")
@click.option("--calib-seed", type=int, default=None, help="Sample frames at random with this seed (default: in order).")
@click.option("--calib-eval", "eval_sources", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Held-out frames: report INT8 vs FP32 depth error on them (repeatable).")
@click.option("--graphs", default="image,text", show_default=True, help="Comma-separated base graphs to build.")
@click.option("--flavour", type=click.Choice(CHOICES), default="auto", show_default=True,
              help="TensorRT flavour: tensorrt (10/11, builds on this GPU) or rtx (TensorRT for RTX).")
@click.option("--target", help="Compute capability to build for, e.g. sm86 (rtx: required without a GPU).")
@click.option("--min-batch", default=1, show_default=True)
@click.option("--opt-batch", default=1, show_default=True)
@click.option("--max-batch", default=8, show_default=True)
@click.option("--workspace", type=int, help="Builder workspace limit in MiB (default: TensorRT's).")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="Timing cache file to reuse and update (default: <bundle>/engines/timing.<flavour>.cache).")
def trt(bundle_dir, fp16, int8, calib_sources, calib_captions, calib_size, calib_every, calib_seed, eval_sources,
        graphs, flavour, target, min_batch, opt_batch, max_batch, workspace, timing_cache):
    """Build TensorRT engines for a bundle and record them in its manifest.

    Precision comes from the graph (TensorRT 11 and TensorRT for RTX are strongly typed): --fp16
    builds image_fp16, --int8 builds the Q/DQ image_int8. After each build the layer precisions are
    read back and the command fails if most compute did not run in the precision asked for.
    """
    if fp16 and int8:
        raise click.UsageError("choose one of --fp16 and --int8")
    if calib_sources and not int8:
        raise click.UsageError("--calib makes the INT8 graph: add --int8")
    precision = "fp16" if fp16 else "int8" if int8 else "fp32"
    run_cli(lambda: _run(
        bundle_dir, precision, calib_sources, calib_captions, calib_size, calib_every, calib_seed, eval_sources,
        tuple(g.strip() for g in graphs.split(",") if g.strip()), flavour, target, (min_batch, opt_batch, max_batch),
        workspace, timing_cache))


def _run(bundle_dir, precision, calib_sources, calib_captions, calib_size, calib_every, calib_seed, eval_sources,
         graphs, flavour, target, batch, workspace, timing_cache):
    from export.trt import BatchRange, build_bundle_engines

    batch = BatchRange(*batch)
    if calib_sources:
        _calibrate(bundle_dir, calib_sources, calib_captions, calib_size, calib_every, calib_seed, eval_sources)
    results = build_bundle_engines(
        bundle_dir, graphs=graphs, precision=precision, flavour=flavour, target=target, batch=batch,
        workspace=workspace * (1 << 20) if workspace else None, timing_cache=timing_cache,
        echo=lambda m: click.echo(m, err=True))
    for result in results:
        click.echo(f"{result.engine_path}")


def _calibrate(bundle_dir, sources, captions, size, every, seed, eval_sources):
    from . import CalibrationConfig, calibrate_bundle

    config = CalibrationConfig(size=size, every=every, seed=seed)
    report = calibrate_bundle(bundle_dir, sources, captions=captions or None, sampling=config,
                              eval_sources=eval_sources, echo=lambda m: click.echo(m, err=True))
    if report.accuracy is not None:
        click.echo(report.accuracy.summary(), err=True)


main.add_command(trt)
