"""`tr2m-export`: ONNX bundles and TensorRT engines; every command of the console script is here.

\b
tr2m-export onnx --ckpt weights/da_s_vitl_vitl.pth --half --out bundles/paper
tr2m-export trt --bundle bundles/paper --fp16                     # TensorRT on this GPU
tr2m-export trt --bundle bundles/paper --fp16 --flavour rtx --target sm86   # ahead of time, no GPU needed
tr2m-export trt --bundle bundles/paper --int8 --calib clips/office.mp4 --calib-eval data/nyu/rgb

INT8 calibration (`trt --calib`) is done by calib/, found through the hook in export/calibration.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .calibration import CalibrationRequest, find_calibrator
from .errors import run_cli
from .trt.flavours import CHOICES


def size_option(ctx, param, value):
    """click callback of a size option: 'HxW' -> (H, W), positive multiples of 14."""
    from tr2m.cli_inputs import InputError, parse_size  # here: importing tr2m loads torch, --help need not

    if value is None:
        return None
    try:
        return parse_size(value, option=None)
    except InputError as e:
        raise click.BadParameter(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Export TR2M to a verified ONNX bundle, then build TensorRT engines from it.

    \b
    tr2m-export onnx --ckpt weights/da_s_vitl_vitl.pth --out bundles/paper
    tr2m-export trt --bundle bundles/paper --fp16
    """


@main.command("onnx")
@click.option("--ckpt", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Head weights: the authors' .pth, a training checkpoint, or our .safetensors.")
@click.option("--preset", default="paper", show_default=True, help="Model preset (paper, kitti, sunrgbd, paper_v2, tiny).")
@click.option("--size", callback=size_option, help="Input size HxW, multiples of 14 (default: the preset's). Fixed in the graphs; batch stays dynamic.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Bundle folder to write.")
@click.option("--relative", "relative_source", help="Depth Anything: hub id or local folder (default: the preset's).")
@click.option("--image-encoder", "image_source", help="DINOv2: hub id or local folder.")
@click.option("--text-encoder", "text_source", help="CLIP text tower: hub id or local folder.")
@click.option("--random-init", is_flag=True, help="Random encoder and head weights, offline (demos and tests); the bundle is marked untrained.")
@click.option("--half", is_flag=True, help="Also write an FP16 image graph (LayerNorm, Softmax and the depth formula stay FP32).")
@click.option("--graphs", default="image,relative,scale_shift,text", show_default=True, help="Comma-separated graphs to export.")
@click.option("--parity-frame", "parity_frames", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Real images for the parity check (repeatable; default: seeded noise).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--seed", default=0, show_default=True, help="Seed for --random-init weights.")
def onnx_command(ckpt, preset, size, out, relative_source, image_source, text_source, random_init, half, graphs,
                 parity_frames, force, seed):
    """Write the fused image graph, the keyframe halves, the text graph, the tokenizer and a
    manifest, then check every graph against PyTorch; on failure nothing is left on disk."""
    from .bundle import ExportOptions, export_bundle
    from .parity import stats_table

    options = ExportOptions(
        out=out, preset=preset, checkpoint=ckpt, input_size=size, random_init=random_init, half=half,
        graphs=tuple(g.strip() for g in graphs.split(",") if g.strip()), relative_source=relative_source,
        image_source=image_source, text_source=text_source, parity_frames=parity_frames, force=force, seed=seed,
    )
    if ckpt is None and not random_init:
        click.echo("warning: no --ckpt given: the head is untrained (random); the bundle is marked untrained", err=True)
    report = run_cli(lambda: export_bundle(options, log=lambda m: click.echo(m, err=True)))
    click.echo(stats_table(report.parity))
    click.echo(f"bundle written to {report.bundle} ({sum(report.files.values()) / 1e6:.1f} MB)")


@main.command("trt")
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
    calibration = CalibrationRequest(
        bundle=bundle_dir, sources=calib_sources, captions=calib_captions, size=calib_size, every=calib_every,
        seed=calib_seed, eval_sources=eval_sources) if calib_sources else None
    run_cli(lambda: _run(
        bundle_dir, precision, calibration, tuple(g.strip() for g in graphs.split(",") if g.strip()), flavour, target,
        (min_batch, opt_batch, max_batch), workspace, timing_cache))


def _run(bundle_dir, precision, calibration, graphs, flavour, target, batch, workspace, timing_cache):
    from .trt import BatchRange, build_bundle_engines

    echo = lambda m: click.echo(m, err=True)  # noqa: E731
    if calibration is not None:
        find_calibrator()(calibration, echo)  # calib/ writes image_int8 through the hook
    results = build_bundle_engines(
        bundle_dir, graphs=graphs, precision=precision, flavour=flavour, target=target, batch=BatchRange(*batch),
        workspace=workspace * (1 << 20) if workspace else None, timing_cache=timing_cache, echo=echo)
    for result in results:
        click.echo(f"{result.engine_path}")


if __name__ == "__main__":
    sys.exit(main())
