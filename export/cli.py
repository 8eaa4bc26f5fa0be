"""`tr2m-export`: ONNX bundles and TensorRT engines; every command of the console script is here.

\b
tr2m-export onnx --ckpt weights/da_s_vitl_vitl.pth --half --out bundles/paper
tr2m-export onnx --ckpt weights/da_s_vitl_vitl.pth --out bundles/cpu --openvino --cpu-int8   # CPU edge box
tr2m-export trt --bundle bundles/paper --fp16                     # TensorRT on this GPU
tr2m-export trt --bundle bundles/paper --fp16 --flavour rtx --target sm86   # ahead of time, no GPU needed
tr2m-export trt --bundle bundles/paper --int8 --calib clips/office.mp4 --calib-eval data/nyu/rgb
tr2m-export openvino --bundle bundles/paper                       # OpenVINO IR (CPUs, Intel GPUs/NPUs)
tr2m-export cpu-int8 --bundle bundles/paper                       # ONNX Runtime CPU INT8, no calibration
tr2m-export info bundles/paper                                    # graphs, weight files, engines, checksums

INT8 calibration (`trt --calib`, `openvino --int8`) is done by calib/, found through the hook in
export/calibration.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .calibration import CalibrationRequest, find_calibrator
from .errors import known_errors, run_cli
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
    """Export TR2M to a verified ONNX bundle, then build TensorRT engines or OpenVINO IR from it.

    \b
    tr2m-export onnx --ckpt weights/da_s_vitl_vitl.pth --out bundles/paper
    tr2m-export trt --bundle bundles/paper --fp16
    tr2m-export openvino --bundle bundles/paper
    tr2m-export cpu-int8 --bundle bundles/paper
    tr2m-export info bundles/paper

    Exit codes: 0 done; 1 (info) a file does not match the manifest's checksum; 2 bad input or a
    refused result (one `error:` line, nothing written); 130 interrupted (nothing written).
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
@click.option("--half", is_flag=True, help="Also write FP16 graphs: the image graph and the keyframe halves (LayerNorm, Softmax and the depth formula stay FP32).")
@click.option("--graphs", default="image,relative,scale_shift,text", show_default=True, help="Comma-separated graphs to export.")
@click.option("--parity-frame", "parity_frames", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Real images for the parity check (repeatable; default: seeded noise).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--seed", default=0, show_default=True, help="Seed for --random-init weights.")
@click.option("--openvino", "with_openvino", is_flag=True,
              help="Then convert the graphs to OpenVINO IR, as `tr2m-export openvino` does with its defaults.")
@click.option("--cpu-int8", "with_cpu_int8", is_flag=True,
              help="Then add the ONNX Runtime CPU INT8 image graph, as `tr2m-export cpu-int8` does.")
def onnx_command(ckpt, preset, size, out, relative_source, image_source, text_source, random_init, half, graphs,
                 parity_frames, force, seed, with_openvino, with_cpu_int8):
    """Write the fused image graph, the keyframe halves, the text graph, the tokenizer and a
    manifest, then check every graph against PyTorch; on failure nothing is left on disk.

    The graphs share one weight file per precision (weights.fp32.data, weights.fp16.data), so each
    weight is stored once; graphs are exported one at a time and the expected peak memory is
    printed first.

    --openvino and --cpu-int8 then run the `openvino` and `cpu-int8` commands on the new bundle;
    if one of them fails, the bundle stays (written and verified) and the error names the command
    to run again."""
    from .bundle import ExportOptions, export_bundle
    from .parity import read_frames, stats_table

    names = tuple(g.strip() for g in graphs.split(",") if g.strip())
    if with_cpu_int8 and "image" not in names:
        raise click.UsageError("--cpu-int8 quantizes the image graph: include image in --graphs")
    if with_openvino:
        from .openvino_ir import openvino_module

        run_cli(openvino_module)  # a missing package is one line now, not after a long export
    options = ExportOptions(
        out=out, preset=preset, checkpoint=ckpt, input_size=size, random_init=random_init, half=half,
        graphs=names, relative_source=relative_source, image_source=image_source, text_source=text_source,
        parity_frames=parity_frames, force=force, seed=seed,
    )
    if ckpt is None and not random_init:
        click.echo("warning: no --ckpt given: the head is untrained (random); the bundle is marked untrained", err=True)
    report = run_cli(lambda: export_bundle(options, log=_echo))
    click.echo(stats_table(report.parity))
    click.echo(f"bundle written to {report.bundle} ({sum(report.files.values()) / 1e6:.1f} MB)")
    asked = [command for command, on in (("openvino", with_openvino), ("cpu-int8", with_cpu_int8)) if on]
    frames = read_frames(parity_frames) if asked else []
    for command in asked:
        click.echo(run_cli(lambda: _follow_up(command, report.bundle, names, frames)))


def _to_openvino(bundle_dir, names, frames) -> str:
    from .openvino_ir import DEFAULT_GRAPHS, IROptions, export_openvino

    options = IROptions(graphs=tuple(g for g in DEFAULT_GRAPHS if g in names))
    return _ir_lines(bundle_dir, export_openvino(bundle_dir, options, frames, log=_echo))


def _to_cpu_int8(bundle_dir, names, frames) -> str:
    from .cpu_int8 import add_cpu_int8

    return str(add_cpu_int8(bundle_dir, frames, log=_echo))


FOLLOW_UPS = {"openvino": _to_openvino, "cpu-int8": _to_cpu_int8}  # `tr2m-export onnx --NAME`: command run after


def _follow_up(command: str, bundle_dir, names, frames) -> str:
    """Run the follow-up `command` on the written bundle; a failure names the command to rerun."""
    from .bundle import ExportError

    try:
        return FOLLOW_UPS[command](bundle_dir, names, frames)
    except known_errors() as e:
        raise ExportError(f"the bundle {bundle_dir} is written and verified, but `tr2m-export {command}` failed: "
                          f"{' '.join(str(e).split())}; run `tr2m-export {command} --bundle {bundle_dir}` "
                          "once that is fixed") from e


def _ir_lines(bundle_dir, results) -> str:
    return "\n".join(f"{bundle_dir / r.entry['xml']} ({r.entry['precision']}, {r.entry['weights']} weights)"
                     for r in results)


def _echo(message: str) -> None:
    click.echo(message, err=True)


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

    if calibration is not None:
        find_calibrator()(calibration, _echo)  # calib/ writes image_int8 through the hook
    results = build_bundle_engines(
        bundle_dir, graphs=graphs, precision=precision, flavour=flavour, target=target, batch=BatchRange(*batch),
        workspace=workspace * (1 << 20) if workspace else None, timing_cache=timing_cache, echo=_echo)
    for result in results:
        click.echo(f"{result.engine_path}")


@main.command("openvino")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Bundle folder written by `tr2m-export onnx`; IR goes to <bundle>/openvino.")
@click.option("--graphs", default="image,relative,scale_shift,text", show_default=True,
              help="Comma-separated ONNX graphs of the bundle to convert.")
@click.option("--weights", type=click.Choice(["auto", "fp16", "fp32"]), default="auto", show_default=True,
              help="Weights on disk. auto: FP16 for each graph whose f32 outputs stay within 1e-3 of ONNX Runtime "
                   "FP32 on the parity frames, else FP32.")
@click.option("--parity-frame", "parity_frames", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Real images for the IR parity check (repeatable; default: seeded noise).")
@click.option("--int8", is_flag=True, help="Also write image_int8: NNCF post-training quantization (needs --calib and --calib-eval).")
@click.option("--calib", "calib_sources", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Calibration frames for --int8: video, image folder or image (repeatable).")
@click.option("--calib-caption", "calib_captions", multiple=True, help="Caption(s) of the calibration footage (repeatable).")
@click.option("--calib-size", default=128, show_default=True, help="Number of calibration frames.")
@click.option("--calib-every", default=10, show_default=True, help="Use every k-th video frame.")
@click.option("--calib-seed", type=int, default=None, help="Sample frames at random with this seed (default: in order).")
@click.option("--calib-eval", "eval_sources", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Held-out frames (not in --calib) for the INT8 accuracy report (repeatable).")
@click.option("--max-int8-error", type=float, default=3e-2, show_default=True,
              help="Refuse an INT8 IR whose median relative depth error vs FP32 on the held-out frames is larger.")
@click.option("--accept-int8-error", is_flag=True, help="Write the INT8 IR even past --max-int8-error.")
@click.option("--smooth-quant-alpha", type=float, help="NNCF SmoothQuant alpha for MatMuls (default NNCF's; -1: off).")
@click.option("--int8-ignore-type", "ignored_types", multiple=True, help="OpenVINO op type to keep float, e.g. MatMul (repeatable).")
@click.option("--int8-ignore-name", "ignored_names", multiple=True, help="OpenVINO node name to keep float (repeatable).")
@click.option("--int8-preset", type=click.Choice(["performance", "mixed"]), default="performance", show_default=True,
              help="NNCF preset: performance (symmetric) or mixed (asymmetric activations).")
def openvino(bundle_dir, graphs, weights, parity_frames, int8, calib_sources, calib_captions, calib_size, calib_every,
             calib_seed, eval_sources, max_int8_error, accept_int8_error, smooth_quant_alpha, ignored_types,
             ignored_names, int8_preset):
    """Convert a bundle's graphs to OpenVINO IR (the `openvino` runtime backend) and record them,
    with checksums, in its manifest; optionally an INT8 image IR by NNCF. Each IR is checked against
    ONNX Runtime FP32 before anything is written; on failure the bundle is left as it was.

    \b
    tr2m-export openvino --bundle bundles/paper
    tr2m-export openvino --bundle bundles/paper --int8 --calib clips/office.mp4 --calib-caption "an office" \\
        --calib-eval data/nyu/rgb
    """
    from .openvino_ir import Int8Options, IROptions

    if (calib_sources or eval_sources) and not int8:
        raise click.UsageError("--calib/--calib-eval make the INT8 IR: add --int8")
    if int8 and not (calib_sources and eval_sources):
        raise click.UsageError("--int8 needs calibration frames (--calib) and held-out frames for the accuracy "
                               "report (--calib-eval)")
    names = tuple(g.strip() for g in graphs.split(",") if g.strip())
    if int8 and "image" not in names:
        raise click.UsageError("--int8 quantizes the image IR: include image in --graphs")
    options = IROptions(graphs=names, weights=weights)
    quant = Int8Options(preset=int8_preset, smooth_quant_alpha=smooth_quant_alpha, ignored_types=ignored_types,
                        ignored_names=ignored_names, max_error=max_int8_error, accept_error=accept_int8_error)
    calibration = CalibrationRequest(
        bundle=bundle_dir, sources=calib_sources, captions=calib_captions, size=calib_size, every=calib_every,
        seed=calib_seed, eval_sources=eval_sources) if int8 else None
    results = run_cli(lambda: _openvino(bundle_dir, options, parity_frames, calibration, quant))
    click.echo(_ir_lines(bundle_dir, results))


def _openvino(bundle_dir, options, parity_frames, calibration, quant):
    from .openvino_ir import OV_INT8, export_openvino
    from .parity import read_frames

    after = None
    if calibration is not None:
        quantize = find_calibrator(OV_INT8)  # calib/, through the hook (a missing calib: one error line)
        after = lambda bundle, staging, results: [quantize(  # noqa: E731
            calibration, _echo, staging=staging, fp32=next(r for r in results if r.name == "image"), options=quant)]
    return export_openvino(bundle_dir, options, read_frames(parity_frames), log=_echo, after=after)


@main.command("cpu-int8")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Bundle folder written by `tr2m-export onnx`.")
@click.option("--parity-frame", "parity_frames", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Real images for the error check against FP32 (repeatable; default: seeded noise).")
@click.option("--per-tensor", is_flag=True, help="One weight scale per MatMul instead of one per output column.")
@click.option("--max-error", type=float, default=3e-2, show_default=True,
              help="Refuse the graph if its median relative depth error vs FP32 on the parity frames is larger.")
def cpu_int8_command(bundle_dir, parity_frames, per_tensor, max_error):
    """Add the CPU INT8 image graph (image_int8_cpu): ONNX Runtime dynamic quantization of the
    MatMuls, no calibration needed; then `tr2m-run --backend ort-cpu --precision int8` uses it.
    Refused (nothing written) when its depth is further than --max-error from FP32."""
    from .cpu_int8 import add_cpu_int8
    from .parity import read_frames

    path = run_cli(lambda: add_cpu_int8(bundle_dir, read_frames(parity_frames), per_channel=not per_tensor,
                                        max_error=max_error, log=_echo))
    click.echo(str(path))


@main.command("info")
@click.argument("bundle_dir", metavar="BUNDLE", type=click.Path(file_okay=False, exists=True, path_type=Path))
def info(bundle_dir):
    """Show what BUNDLE holds before you copy it to a device: its graphs with their precision and
    the bytes each loads, the weight files they share, TensorRT engines and their targets, and
    whether every file matches the manifest's checksum (exit status 1 if one does not)."""
    from .info import format_info, inspect_bundle

    report = run_cli(lambda: inspect_bundle(bundle_dir))
    click.echo(format_info(report))
    if not report.healthy:
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
