"""`tr2m-run`: metric depth for a video, image, image folder or camera; torch-free.

    tr2m-run video.mp4 --bundle bundles/paper --caption "an office"
    tr2m-run frames/ --bundle bundles/paper --captions scenes.srt --png16 --npz --csv
    tr2m-run 0 --bundle bundles/paper --caption "a living room" --side-by-side   # camera 0
    tr2m-run --demo            # offline: a generated video and a tiny UNTRAINED bundle

Exit codes: 0 done; 2 bad input or options (one line ``error: ...`` on stderr, nothing left
behind); 130 interrupted by Ctrl-C (the frames done are written and the video plays).
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple

import click
from tqdm import tqdm

from . import demo as demo_mod
from . import pipeline
from .atomic import atomic_write_bytes
from .backends import BACKENDS
from .captions import DEFAULT_CAPTION, CaptionSchedule
from .engine import PRECISION_GRAPHS, Engine
from .errors import BundleError, OutputError, Tr2mRuntimeError, Tr2mRuntimeWarning
from .sinks import Intrinsics
from .sources import FrameSource, open_source

UNTRAINED_BANNER = ("!!! UNTRAINED bundle (random weights): this depth is NOT metric and NOT meaningful; it only "
                    "exercises the pipeline. Export trained weights with `tr2m-export onnx --ckpt ...` !!!")
FOLDER_FPS = 10.0  # video frame rate for image folders (no timing of their own)
SUMMARY_FILE = "run.json"


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


def _check_combinations(o: dict) -> None:
    """Options that only make sense together (click checks each option on its own)."""
    camera = o["fov"] is not None or o["intrinsics"] is not None
    keyframes = o["keyframe_every"] is not None
    rules = [
        (camera and not o["ply"], "--fov/--intrinsics apply to --ply: add --ply"),
        (o["fov"] is not None and o["intrinsics"] is not None, "give --fov or --intrinsics, not both"),
        (o["ply"] and not camera, "--ply needs the camera: --fov DEG or --intrinsics fx,fy,cx,cy"),
        (o["maps"] and not o["npz"], "--maps stores the scale/shift/relative maps in the NPZ files: add --npz"),
        (o["side_by_side"] and not o["video"], "--side-by-side is a video layout: drop --no-video"),
        (o["smooth"] is not None and not keyframes, "--smooth applies to keyframe mode: add --keyframe-every K"),
        (keyframes and o["batch"] > 1, "keyframe mode runs one frame at a time: drop --batch"),
        (keyframes and o["precision"] != "fp32",
         "keyframe mode runs the fp32 relative and scale_shift graphs: drop --precision"),
        (o["auto_caption"] and o["captions_file"] is not None, "give --captions or --auto-caption, not both"),
        (o["auto_caption"] and (o["demo"] or o["source"] is None),
         "--auto-caption captions a recorded video or image folder: give SOURCE (the demo has its captions)"),
        (o["auto_caption"] and str(o["source"]).isdigit(),
         "--auto-caption needs a recording; a camera is live: use --caption"),
        (o["caption_model"] is not None and not o["auto_caption"], "--caption-model applies to --auto-caption: add it"),
        (o["caption"] is not None and not o["caption"].strip(),
         "--caption is empty: describe the scene, e.g. 'an office'"),
    ]
    for failed, message in rules:
        if failed:
            raise click.UsageError(message)


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
@click.option("--backend", type=click.Choice(["auto", *BACKENDS]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(list(PRECISION_GRAPHS)), default="fp32", show_default=True)
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
              help="FIXED colour range of the video in metres [default: the bundle's display_range_m, else by "
                   "preset: 0.5:10 indoor presets, 1:80 kitti, auto for the untrained tiny preset]. "
                   "auto: fixed from the first frame.")
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
def command(**options) -> int:
    """Metric depth for SOURCE: a video file, an image, a folder of images or a camera index (0).

    TR2M turns Depth Anything's relative depth into metres, guided by a caption that describes the
    scene. Outputs go to --out: depth.mp4 (fixed colour range, legend in metres) and optionally
    PNG16 / NPZ / PLY / CSV, plus run.json with the summary.

    Exit codes: 0 done, 2 bad input or options, 130 interrupted (Ctrl-C: the frames done are
    written and the video plays).
    """
    _check_combinations(options)
    try:
        return _run(options)
    except KeyboardInterrupt:
        click.echo("interrupted before the first frame: nothing was written", err=True)
        return 130
    except (Tr2mRuntimeError, OSError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        click.echo(f"error: {message}", err=True)
        return 2


def _run(o: dict) -> int:
    log = (lambda m: None) if o["quiet"] else _log
    source, bundle, schedule = _inputs(o, log)
    outputs = _outputs(o, source)
    if o["auto_caption"]:
        schedule = _auto_schedule(o, source, outputs.folder, log)
    with open_source(source) as frames:
        engine = Engine.open(bundle, backend=o["backend"], precision=o["precision"], cache_dir=o["cache_dir"])
        predictor = _predictor(engine, o)
        _configure_outputs(outputs, o, frames, engine)
        outputs.prepare()
        try:
            report = _loop(log, frames, engine, predictor, schedule, outputs, o)
        except KeyboardInterrupt:
            outputs.remove_created()  # Ctrl-C before the loop took over: leave no empty folder behind
            raise
    _summarize(report, engine, outputs, o, source)
    if report.interrupted:
        click.echo(f"interrupted: {report.frames} frames written; outputs finalized", err=True)
        return 130
    return 0


def _loop(log, frames: FrameSource, engine: Engine, predictor, schedule: CaptionSchedule, outputs: pipeline.Outputs,
          o: dict) -> pipeline.RunReport:
    _log_start(log, frames, engine, outputs, o)
    if not o["caption"] and o["captions_file"] is None and not o["auto_caption"] and schedule is not demo_mod.DEMO_CAPTIONS:
        warnings.warn(f"no --caption given: using {DEFAULT_CAPTION!r}; a caption that describes the scene "
                      "('an office', 'a street') gives TR2M its metric scale", Tr2mRuntimeWarning)
    total = _expected_frames(frames, o["max_frames"])
    desc = "tr2m UNTRAINED" if engine.untrained else "tr2m"
    with tqdm(total=total, unit="frame", desc=desc, file=sys.stderr, disable=o["quiet"], dynamic_ncols=True) as bar:
        return pipeline.run(predictor, frames, schedule, outputs, batch=o["batch"], max_frames=o["max_frames"],
                            on_frames=bar.update)


def _inputs(o: dict, log) -> Tuple[str, Path, CaptionSchedule]:
    """The source spec, the bundle folder and the caption schedule (the demo's if asked for)."""
    demo = o["demo"] or o["source"] is None
    if demo and o["source"] is not None:
        raise click.UsageError("--demo brings its own input: drop SOURCE (or drop --demo)")
    schedule = _schedule(o, demo)
    source = str(demo_mod.demo_video(log=log)) if demo else o["source"]
    bundle = o["bundle"]
    if bundle is None and demo:
        bundle = demo_mod.demo_bundle(log=log)
    if bundle is None:
        raise BundleError("no bundle given: pass --bundle DIR (made by `tr2m-export onnx`) or set TR2M_BUNDLE; "
                          "or try the offline demo: tr2m-run --demo")
    return source, bundle, schedule


def _schedule(o: dict, demo: bool) -> CaptionSchedule:
    caption = o["caption"].strip() if o["caption"] else None
    if o["captions_file"] is not None:
        return CaptionSchedule.from_file(o["captions_file"], default=caption)
    if caption:
        return CaptionSchedule.fixed(caption)
    return demo_mod.DEMO_CAPTIONS if demo else CaptionSchedule.fixed(DEFAULT_CAPTION)


def _auto_schedule(o: dict, source: str, folder: Path, log) -> CaptionSchedule:
    """--auto-caption: the torch side's captioner (an entry point) writes the schedule into the output
    folder, which is then read back like --captions (gaps: --caption)."""
    from .autocaption import CaptionRequest, find_captioner

    name = "captions.json" if Path(source).is_dir() else "captions.srt"  # folders have no timestamps
    request = CaptionRequest(source=source, out=folder / name, model=o["caption_model"], quiet=o["quiet"])
    path = find_captioner()(request, log)
    schedule = CaptionSchedule.from_file(path, default=o["caption"])
    log(f"captions: {len(schedule.ranges)} scene(s) in {path}")
    return schedule


def _outputs(o: dict, source: str) -> pipeline.Outputs:
    folder = o["out"] or Path("tr2m-out") / ("demo" if o["source"] is None else _stem(source))
    return pipeline.Outputs(folder=folder, video=o["video"], side_by_side=o["side_by_side"], png16=o["png16"],
                            npz=o["npz"], maps=o["maps"], ply=o["ply"], intrinsics=o["intrinsics"], fov_deg=o["fov"],
                            ply_stride=o["ply_stride"], csv=o["csv"])


def _stem(spec: str) -> str:
    if spec.isdigit():
        return f"camera{spec}"
    path = Path(spec)
    return (path.resolve().name if path.is_dir() else path.stem) or "input"


def _predictor(engine: Engine, o: dict):
    maps = o["npz"] and o["maps"]
    if o["keyframe_every"] is None:
        return pipeline.EnginePredictor(engine, maps=maps)
    from .keyframe import KeyframePredictor

    keyframes = KeyframePredictor(engine, every=o["keyframe_every"], smoothing=o["smooth"] or 0.0)
    return pipeline.KeyframeAdapter(keyframes, maps=maps)


def _configure_outputs(outputs: pipeline.Outputs, o: dict, frames: FrameSource, engine: Engine) -> None:
    info = frames.info
    outputs.fps = info.fps or (FOLDER_FPS if info.kind == "folder" else 30.0)
    chosen = o["depth_range"]
    outputs.range_m = None if chosen == "auto" else chosen or pipeline.default_range(engine.bundle.manifest)
    outputs.label = "UNTRAINED" if engine.untrained else ""


def _expected_frames(frames: FrameSource, max_frames: Optional[int]) -> Optional[int]:
    count = frames.info.frame_count
    if count is None:
        return max_frames
    return min(count, max_frames) if max_frames else count


# ------------------------------------------------------------------------------ logging
def _log_start(log, frames: FrameSource, engine: Engine, outputs: pipeline.Outputs, o: dict) -> None:
    info = frames.info
    size = f"{info.size[1]}x{info.size[0]}" if info.size else "?"
    count = info.frame_count or "?"
    fps = f", {info.fps:.4g} fps" if info.fps else ""
    log(f"source: {info.spec} ({info.kind}, {size}, {count} frames{fps})")
    manifest = engine.bundle.manifest
    mode = f", keyframe every {o['keyframe_every']}" if o["keyframe_every"] else ""
    log(f"bundle: {engine.bundle.directory} (preset {manifest.get('preset', '?')}, model input "
        f"{engine.input_size[1]}x{engine.input_size[0]}), backend {engine.backend_name}, {engine.precision}{mode}")
    span = outputs.range_m
    colours = "auto from the first frame" if span is None else f"{span[0]:g}-{span[1]:g} m"
    log(f"outputs: {outputs.folder}/ ({', '.join(outputs.selected())}); colour range {colours}, fixed")
    if engine.untrained:
        click.echo(UNTRAINED_BANNER, err=True)  # even with --quiet


def _summarize(report: pipeline.RunReport, engine: Engine, outputs: pipeline.Outputs, o: dict, source: str) -> None:
    cache = engine.cache
    lines = [f"tr2m-run: {report.frames} frames in {report.seconds:.1f} s = {report.fps:.1f} FPS end to end "
             f"({engine.backend_name}, {engine.precision}, batch {o['batch']})"
             + (" [interrupted]" if report.interrupted else "")]
    if report.stage_ms:
        lines.append("  mean ms per frame: " + " | ".join(f"{k} {v:.1f}" for k, v in report.stage_ms.items()))
    lines.append(f"  caption cache: {cache.hits} hits, {cache.misses} misses "
                 f"(text graph ran for {cache.misses} caption{'s' if cache.misses != 1 else ''})")
    if report.keyframes is not None:
        lines.append(f"  keyframes: {report.keyframes} of {report.frames} frames")
    if report.range_m:
        lines.append(f"  video colour range: {report.range_m[0]:g}-{report.range_m[1]:g} m (fixed)")
    lines += [f"  wrote {path}" for path in report.outputs.values()]
    if report.frames:
        summary_path = _write_summary(report, engine, outputs, o, source)
        lines.append(f"  wrote {summary_path}")
    else:
        lines.append("  no frame was done: nothing written")
    click.echo("\n".join(lines))
    if engine.untrained:
        click.echo(UNTRAINED_BANNER, err=True)


def _write_summary(report: pipeline.RunReport, engine: Engine, outputs: pipeline.Outputs, o: dict,
                   source: str) -> Path:
    summary = {
        "source": source, "bundle": str(engine.bundle.directory), "untrained": engine.untrained,
        "backend": engine.backend_name, "precision": engine.precision, "batch": o["batch"],
        "keyframe_every": o["keyframe_every"], "keyframes": report.keyframes,
        "frames": report.frames, "seconds": round(report.seconds, 4), "fps": round(report.fps, 3),
        "interrupted": report.interrupted, "stage_ms": {k: round(v, 3) for k, v in report.stage_ms.items()},
        "caption_cache": {"hits": engine.cache.hits, "misses": engine.cache.misses},
        "range_m": list(report.range_m) if report.range_m else None,
        "outputs": {k: str(v) for k, v in report.outputs.items()},
    }
    path = outputs.folder / SUMMARY_FILE
    try:
        atomic_write_bytes(path, (json.dumps(summary, indent=2) + "\n").encode())
    except OSError as e:
        raise OutputError(f"{path}: cannot write the run summary ({e.strerror or e}); check free space and "
                          "permissions") from e
    return path


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
