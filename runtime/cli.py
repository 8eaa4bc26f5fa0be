"""`tr2m-run`: metric depth for a video, image, image folder or camera; torch-free.

    tr2m-run video.mp4 --bundle bundles/paper --caption "an office"
    tr2m-run frames/ --bundle bundles/paper --captions scenes.srt --png16 --npz --csv
    tr2m-run 0 --bundle bundles/paper --caption "a living room" --side-by-side   # camera 0
    tr2m-run --demo            # offline: a generated video and a tiny UNTRAINED bundle

Exit codes: 0 done; 2 bad input or options (one line ``error: ...`` on stderr, nothing left
behind); 3 done, but some inputs were skipped (damaged images in a folder: one ``warning:``
line each on stderr, listed under "skipped" in run.json); 130 interrupted by Ctrl-C (the frames
done are written and the video plays).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import click
from tqdm import tqdm

from . import demo as demo_mod
from .backends import BACKENDS
from .captions import DEFAULT_CAPTION, CaptionSchedule
from .engine import PRECISION_GRAPHS
from .errors import BundleError, OptionsError, OutputError, Tr2mRuntimeError, Tr2mRuntimeWarning
from .loop import RunReport
from .run_options import RunOptions
from .run_summary import SUMMARY_FILE, backend_label, summary_lines
from .sinks import Intrinsics
from .source_run import SourceRun
from .sources import open_source

EXIT_SKIPPED = 3  # the run finished, but the source left inputs out (damaged images of a folder)
UNTRAINED_BANNER = ("!!! UNTRAINED bundle (random weights): this depth is NOT metric and NOT meaningful; it only "
                    "exercises the pipeline. Export trained weights with `tr2m-export onnx --ckpt ...` !!!")


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # above the progress bar, if one is showing


# ------------------------------------------------------------------------------ option parsing
def _parse_range(ctx, param, value: Optional[str]):
    """None (the bundle's default), "auto", or (min_m, max_m)."""
    if value is None:
        return None
    if value.strip().lower() == "auto":
        return "auto"
    try:
        lo, hi = (float(v) for v in value.split(":"))
    except ValueError:
        raise click.BadParameter(f"expected MIN:MAX in metres such as 0.5:10, or auto; got {value!r}") from None
    if not 0 <= lo < hi < float("inf"):
        raise click.BadParameter(f"need 0 <= MIN < MAX, got {value!r}")
    return lo, hi


def _parse_intrinsics(ctx, param, value: Optional[str]) -> Optional[Intrinsics]:
    if value is None:
        return None
    try:
        fx, fy, cx, cy = (float(v) for v in value.split(","))
        return Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy)
    except ValueError:
        raise click.BadParameter(f"expected fx,fy,cx,cy in pixels such as 525,525,319.5,239.5; got {value!r}"
                                 ) from None
    except OutputError as e:
        raise click.BadParameter(str(e)) from None


# ------------------------------------------------------------------------------ the command
PATH = click.Path(path_type=Path)
FOLDER = click.Path(path_type=Path, file_okay=False)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("source", required=False)
@click.option("--demo", is_flag=True,
              help="Offline demo: a generated corridor video and, without --bundle, a tiny UNTRAINED bundle "
                   "built once (needs PyTorch). Also what runs when no SOURCE is given.")
@click.option("--caption", help="Scene description for every frame, e.g. 'an office' "
                                "(with --captions: the caption of frames no range covers).")
@click.option("--captions", "captions_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Caption schedule: JSON ranges (seconds or frames) or SRT subtitles.")
@click.option("--auto-caption", is_flag=True,
              help="Caption each scene first (needs the torch extra): scene cuts, one vision-language caption per "
                   "scene, written to OUT/captions.srt (.json for folders) and used like --captions.")
@click.option("--caption-model", metavar="ID|DIR", envvar="TR2M_CAPTION_MODEL",
              help="With --auto-caption: the vision-language model (hub id or local folder) [env TR2M_CAPTION_MODEL; "
                   "default: tr2m-caption's].")
@click.option("--bundle", type=FOLDER, envvar="TR2M_BUNDLE",
              help="Bundle folder from `tr2m-export onnx` [env TR2M_BUNDLE].")
@click.option("--out", type=PATH, help="Output folder [default: ./tr2m-out/<source name>].")
@click.option("--backend", type=click.Choice(["auto", *BACKENDS]), default="auto", show_default=True,
              help="auto: the first of tensorrt, ort-trt, ort-cuda, openvino (the bundle has IR), ort-cpu that really runs here (engines for "
                   "this GPU and TensorRT, the provider ONNX Runtime gives), with one warning line for each "
                   "backend skipped.")
@click.option("--precision", type=click.Choice(list(PRECISION_GRAPHS)), default="fp32", show_default=True,
              help="Image graph or engine precision: fp16 needs image_fp16.onnx or an FP16 TensorRT engine, "
                   "int8 a calibrated Q/DQ graph, the CPU INT8 graph (ort-cpu) or INT8 IR (openvino). "
                   "Keyframe mode runs its two graphs in this precision (fp16: export with --half) or refuses.")
@click.option("--ov-device", type=click.Choice(["CPU", "GPU", "NPU", "AUTO"], case_sensitive=False),
              help="openvino backend: the device [default: CPU].")
@click.option("--ov-precision", type=click.Choice(["default", "f32", "bf16", "f16"]),
              help="openvino backend: inference precision [default: OpenVINO's for the device: bf16 on CPUs that "
                   "have it, else f32]; f32 forces full precision. The summary states the one used.")
@click.option("--ov-hint", type=click.Choice(["latency", "throughput"]),
              help="openvino backend: performance hint [default: latency].")
@click.option("--ov-cache-dir", type=FOLDER,
              help="openvino backend: compiled-model cache, so a second start is fast [default: in the user cache dir].")
@click.option("--video/--no-video", default=True, show_default=True,
              help="Colourized depth as H.264 (depth.mp4), with a legend in metres.")
@click.option("--side-by-side", is_flag=True, help="The video shows the input frame left of the depth.")
@click.option("--png16", is_flag=True, help="16-bit PNG per frame, depth in millimetres (0 = invalid), in png16/.")
@click.option("--npz", is_flag=True, help="NPZ per frame, float32 depth in metres, in npz/.")
@click.option("--maps", is_flag=True, help="With --npz: also store the scale, shift and relative maps.")
@click.option("--ply", is_flag=True, help="Coloured point cloud per frame in metres, in ply/ (needs --fov or --intrinsics).")
@click.option("--fov", type=click.FloatRange(0, 180, min_open=True, max_open=True),
              help="Horizontal field of view in degrees, for --ply.")
@click.option("--intrinsics", callback=_parse_intrinsics, metavar="FX,FY,CX,CY",
              help="Pinhole intrinsics in pixels at the frame size, for --ply.")
@click.option("--ply-stride", type=click.IntRange(min=1), default=1, show_default=True,
              help="Keep every n-th row and column in the point clouds.")
@click.option("--csv", is_flag=True, help="Per-frame depth statistics and stage timings, depth.csv.")
@click.option("--range", "depth_range", callback=_parse_range, metavar="MIN:MAX|auto",
              help="FIXED colour range of the video in metres [default: the bundle's display_range_m (0.5:10 for "
                   "the indoor presets, 1:80 kitti; auto for the untrained tiny preset and for bundles exported "
                   "before the field existed)]. auto: fixed from the first frame.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Frames per model call.")
@click.option("--cache-dir", type=FOLDER, help="Caption-embedding cache folder [default: in the user cache dir].")
@click.option("--keyframe-every", type=click.IntRange(min=1), metavar="K",
              help="Keyframe mode: relative depth every frame, the scale/shift maps every K frames "
                   "(and when the caption changes).")
@click.option("--smooth", type=click.FloatRange(0, 1, max_open=True), metavar="S",
              help="Keyframe mode: weight of the previous scale/shift maps in their moving average (0 = off).")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bar or info lines (warnings, errors, the UNTRAINED banner and the summary stay).")
def command(source: Optional[str], demo: bool, bundle: Optional[Path], out: Optional[Path], quiet: bool,
            **params) -> int:
    """Metric depth for SOURCE: a video file, an image, a folder of images or a camera index (0).

    TR2M turns Depth Anything's relative depth into metres, guided by a caption that describes the
    scene. Outputs go to --out: depth.mp4 (fixed colour range, legend in metres) and optionally
    PNG16 / NPZ / PLY / CSV, plus run.json with the summary.

    Exit codes: 0 done; 2 bad input or options; 3 done, but inputs were skipped (damaged images
    in a folder: each named on stderr and in run.json); 130 interrupted (Ctrl-C: the frames done
    are written and the video plays).
    """
    try:
        options = RunOptions.from_params(params)
    except OptionsError as e:
        raise click.UsageError(str(e)) from None
    try:
        return _run(source, demo, bundle, out, options, quiet)
    except KeyboardInterrupt:
        click.echo("interrupted before the first frame: nothing was written", err=True)
        return 130
    except (Tr2mRuntimeError, OSError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        click.echo(f"error: {message}", err=True)
        return 2


def _run(source: Optional[str], demo: bool, bundle: Optional[Path], out: Optional[Path], options: RunOptions,
         quiet: bool) -> int:
    log = (lambda m: None) if quiet else _log
    demo = demo or source is None
    _check_source(source, demo, options)
    schedule = options.schedule(demo_mod.DEMO_CAPTIONS if demo else None)
    spec = str(demo_mod.demo_video(log=log)) if demo else source
    bundle = _bundle(bundle, demo, log)
    folder = out or Path("tr2m-out") / ("demo" if source is None else _stem(spec))
    if options.auto_caption:
        schedule = _auto_schedule(options, spec, folder, quiet, log)
    with open_source(spec) as frames:
        engine = options.open_engine(bundle)
        job = SourceRun(engine, frames, folder, options, schedule=schedule)
        job.prepare()
        try:
            _log_start(log, job)
            if not (options.caption or options.captions_file or options.auto_caption or demo):
                warnings.warn(f"no --caption given: using {DEFAULT_CAPTION!r}; a caption that describes the scene "
                              "('an office', 'a street') gives TR2M its metric scale", Tr2mRuntimeWarning)
            desc = "tr2m UNTRAINED" if engine.untrained else "tr2m"
            with tqdm(total=job.expected_frames, unit="frame", desc=desc, file=sys.stderr, disable=quiet,
                      dynamic_ncols=True) as bar:
                report = job.run(on_frames=bar.update, on_skip=lambda s: _log(f"warning: skipped {s}"))
        except KeyboardInterrupt:
            job.outputs.remove_created()  # Ctrl-C before the loop took over: leave no empty folder behind
            raise
    _summarize(report, job)
    if report.interrupted:
        click.echo(f"interrupted: {report.frames} frames written; outputs finalized", err=True)
        return 130
    return EXIT_SKIPPED if report.skipped else 0


def _check_source(source: Optional[str], demo: bool, options: RunOptions) -> None:
    """Options that depend on the source (`RunOptions` checks the rest)."""
    rules = [
        (demo and source is not None, "--demo brings its own input: drop SOURCE (or drop --demo)"),
        (options.auto_caption and demo,
         "--auto-caption captions a recorded video or image folder: give SOURCE (the demo has its captions)"),
        (options.auto_caption and str(source).isdigit(), "--auto-caption needs a recording; a camera is live: use --caption"),
    ]
    for failed, message in rules:
        if failed:
            raise click.UsageError(message)


def _auto_schedule(options: RunOptions, source: str, folder: Path, quiet: bool, log) -> CaptionSchedule:
    """--auto-caption: the torch side's captioner (an entry point) writes the schedule into the output
    folder, which is then read back like --captions (gaps: --caption)."""
    from .autocaption import CaptionRequest, find_captioner

    name = "captions.json" if Path(source).is_dir() else "captions.srt"  # folders have no timestamps
    request = CaptionRequest(source=source, out=folder / name, model=options.caption_model, quiet=quiet)
    path = find_captioner()(request, log)
    schedule = CaptionSchedule.from_file(path, default=options.caption)
    log(f"captions: {len(schedule.ranges)} scene(s) in {path}")
    return schedule


def _bundle(bundle: Optional[Path], demo: bool, log) -> Path:
    """The bundle folder: --bundle, else the demo's (built on first use), else a one-line error."""
    if bundle is None and demo:
        bundle = demo_mod.demo_bundle(log=log)
    if bundle is None:
        raise BundleError("no bundle given: pass --bundle DIR (made by `tr2m-export onnx`) or set TR2M_BUNDLE; "
                          "or try the offline demo: tr2m-run --demo")
    return bundle


def _stem(spec: str) -> str:
    if spec.isdigit():
        return f"camera{spec}"
    path = Path(spec)
    return (path.resolve().name if path.is_dir() else path.stem) or "input"


# ------------------------------------------------------------------------------ logging
def _log_start(log, job: SourceRun) -> None:
    info, engine, outputs = job.frames.info, job.engine, job.outputs
    size = f"{info.size[1]}x{info.size[0]}" if info.size else "?"
    count = info.frame_count or "?"
    fps = f", {info.fps:.4g} fps" if info.fps else ""
    log(f"source: {info.spec} ({info.kind}, {size}, {count} frames{fps})")
    manifest = engine.bundle.manifest
    every = job.options.keyframe_every
    mode = f", keyframe every {every}" if every else ""
    # HxW like --size, the presets and `tr2m-export info` (the source's size above is a video's WxH)
    log(f"bundle: {engine.bundle.directory} (preset {manifest.get('preset', '?')}, model input "
        f"{engine.input_size[0]}x{engine.input_size[1]} HxW), backend {backend_label(engine)}, {engine.precision}{mode}")
    span = outputs.range_m
    colours = "auto from the first frame" if span is None else f"{span[0]:g}-{span[1]:g} m"
    log(f"outputs: {outputs.folder}/ ({', '.join(outputs.selected())}); colour range {colours}, fixed")
    if engine.untrained:
        click.echo(UNTRAINED_BANNER, err=True)  # even with --quiet


def _summarize(report: RunReport, job: SourceRun) -> None:
    lines = summary_lines(report, job.engine, job.options)
    if report.frames:
        lines.append(f"  wrote {job.outputs.folder / SUMMARY_FILE}")
    else:
        lines.append("  no frame was done: nothing written")
    click.echo("\n".join(lines))
    if job.engine.untrained:
        click.echo(UNTRAINED_BANNER, err=True)


# ------------------------------------------------------------------------------ entry point
def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, Tr2mRuntimeWarning):
        _log(f"warning: {message}")
    else:
        _log(f"warning: {category.__name__}: {message}")


def _quiet_opencv() -> None:
    """OpenCV prints multi-line backend warnings (e.g. probing a missing camera)."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point (`tr2m-run`); returns the exit code."""
    _quiet_opencv()
    with warnings.catch_warnings():
        warnings.simplefilter("default", Tr2mRuntimeWarning)
        warnings.showwarning = _show_warning
        try:
            code = command.main(args=list(argv) if argv is not None else None, prog_name="tr2m-run",
                                standalone_mode=False)
        except click.exceptions.Abort:
            return 130
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            return 2
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
