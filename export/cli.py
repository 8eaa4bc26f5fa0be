"""`tr2m-export`: ONNX bundles and TensorRT engines."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import run_cli


def parse_size(ctx, param, value):
    """click callback: 'HxW' -> (H, W), both positive multiples of 14."""
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HxW such as 434x560, got {value!r}")
    if height % 14 or width % 14 or height <= 0 or width <= 0:
        raise click.BadParameter(f"{value} must be positive multiples of 14 (e.g. {round(height / 14) * 14}x{round(width / 14) * 14})")
    return height, width


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Export TR2M to a verified ONNX bundle, then build TensorRT engines from it.

    \b
    tr2m-export onnx --ckpt weights/da_s_vitl_vitl.pth --out bundles/paper
    tr2m-export trt --bundle bundles/paper --fp16
    """
    # `trt` is added by calib.cli (it can calibrate INT8, and calib sits above export).


@main.command("onnx")
@click.option("--ckpt", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Head weights: the authors' .pth, a training checkpoint, or our .safetensors.")
@click.option("--preset", default="paper", show_default=True, help="Model preset (paper, kitti, sunrgbd, paper_v2, tiny).")
@click.option("--size", callback=parse_size, help="Input size HxW, multiples of 14 (default: the preset's). Fixed in the graphs; batch stays dynamic.")
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


if __name__ == "__main__":
    sys.exit(main())
