"""`tr2m-caption`: the scene captions TR2M reads, for your own datasets and videos.

    tr2m-caption dataset --dataset nyu --root DATA/nyu --split nyu_train.txt --out CAPS/nyu
    tr2m-caption dataset --dataset folder --root my_data --out my_data/captions
    tr2m-caption video clip.mp4 --out clip.srt          # one caption per detected scene
    tr2m-caption tiny-models models/                    # random-weight stand-ins, offline trials

Exit codes: 0 done; 2 bad input (one `error:` line); 130 interrupted (files already written are
whole and a rerun resumes after them).
"""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Optional

import click

from .models import DEFAULT_DESCRIBER, DEFAULT_LISTER, CaptionModelError, Sampling
from .scenes import SceneConfig

EXIT_USAGE = 2


def _one_line(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(str(text).split()) or type(error).__name__


@contextlib.contextmanager
def _user_errors():
    """Known bad inputs -> one `error:` line and exit 2; Ctrl-C -> exit 130."""
    from runtime.errors import Tr2mRuntimeError

    from ..data.captions import CaptionError

    try:
        yield
    except KeyboardInterrupt:
        click.echo("interrupted: the caption files written so far are complete; rerun to resume", err=True)
        sys.exit(130)
    except (CaptionModelError, CaptionError, Tr2mRuntimeError, ValueError, KeyError, OSError) as e:
        click.echo(f"error: {_one_line(e)}", err=True)
        sys.exit(EXIT_USAGE)


def _bar(total: Optional[int], unit: str, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, disable=quiet, dynamic_ncols=True)


def _quiet_transformers(quiet: bool) -> None:
    """-q also silences transformers' weight-loading bars."""
    if quiet:
        from transformers.utils import logging

        logging.disable_progress_bar()


def _sampling(o) -> Sampling:
    return Sampling(temperature=o["temperature"], top_p=o["top_p"], max_new_tokens=o["max_new_tokens"], seed=o["seed"])


def model_options(f):
    """Options shared by the commands that run the vision-language model."""
    options = [
        click.option("--model", default=DEFAULT_DESCRIBER, show_default=True, envvar="TR2M_CAPTION_MODEL",
                     help="Vision-language model: a hub id or a local folder (any image-text-to-text model "
                          "transformers runs natively) [env TR2M_CAPTION_MODEL]."),
        click.option("--device", help="torch device [default: cuda when available, else cpu]."),
        click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Images per model call."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=Sampling.temperature,
                     show_default=True),
        click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=Sampling.top_p, show_default=True),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=Sampling.max_new_tokens,
                     show_default=True),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def command() -> None:
    """Scene captions in TR2M's format, from a vision-language model (descriptions) and a panoptic
    segmentation model (object lists). Caption style is part of TR2M's input distribution: the
    released weights saw LLaVA v1.6 sentences, which the default model reproduces best.

    Exit codes: 0 done; 2 bad input (one `error:` line); 130 interrupted (files already written
    are whole and a rerun resumes after them).
    """


@command.command()
@click.option("--dataset", "name", required=True, help="Registry name: nyu, kitti, void, c3vd or folder.")
@click.option("--root", required=True, type=click.Path(file_okay=False, exists=True), help="The dataset's image root.")
@click.option("--split", type=click.Path(dir_okay=False, exists=True),
              help="Split file as the loader reads it (required for nyu, kitti, void).")
@click.option("--depth-split", type=click.Path(dir_okay=False, exists=True), help="VOID only: the GT list.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Captions root (pass it to the loaders as captions_root / --captions-root).")
@click.option("--objects-model", default=DEFAULT_LISTER, show_default=True,
              help="Panoptic segmentation model for the object lists (hub id or local folder).")
@click.option("--objects-threshold", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="Minimum segment score for an object to be listed.")
@model_options
def dataset(**o) -> None:
    """Write the 15-line caption file of every image of a dataset: 10 descriptions, then 5 object lists.

    Files already complete are skipped (a rerun resumes); every file is written whole or not at
    all; the models, prompts, sampling settings and seed go to OUT/tr2m-captions.json.
    """
    from .files import caption_jobs, dataset_jobs, settings, write_settings
    from .models import Describer, ObjectLister

    _quiet_transformers(o["quiet"])
    with _user_errors():
        from ..data.datasets import read_rgb

        jobs = dataset_jobs(o["name"], o["root"], o["split"], str(o["out"]), o["depth_split"])
        describer = Describer(o["model"], device=o["device"], sampling=_sampling(o))
        lister = ObjectLister(o["objects_model"], device=o["device"], threshold=o["objects_threshold"])
        write_settings(o["out"], settings(describer, lister, o["batch"]))
        started = time.perf_counter()
        with _bar(len(jobs), "image", "tr2m-caption", o["quiet"]) as bar:
            report = caption_jobs(jobs, describer, lister, batch=o["batch"], seed=o["seed"],
                                  read_image=lambda p: (read_rgb(p) * 255).round().astype("uint8"),
                                  on_done=bar.update)
    seconds = time.perf_counter() - started
    per = f", {seconds / report.written:.2f} s per image" if report.written else ""
    click.echo(f"tr2m-caption: {report.written} files written, {report.skipped} already complete, in "
               f"{seconds:.1f} s{per} ({describer.device}); captions root {o['out']}")
    if report.replaced:
        click.echo(f"warning: {report.replaced} empty descriptions were replaced by another line of the same image",
                   err=True)


@command.command()
@click.argument("source")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Caption schedule to write: .srt or .json (what `tr2m-run --captions` reads).")
@click.option("--threshold", type=click.FloatRange(0, 255, min_open=True, max_open=True),
              default=SceneConfig.threshold, show_default=True,
              help="Scene cut at this HSV content difference (0-255; PySceneDetect's ContentDetector measure).")
@click.option("--min-frames", type=click.IntRange(min=1), default=SceneConfig.min_frames, show_default=True,
              help="Shots shorter than this merge into a neighbour (flashes and flickers vanish).")
@model_options
def video(**o) -> None:
    """Caption each scene of SOURCE (a video file or a folder of images) from its middle frame."""
    with _user_errors():
        path = caption_video(o["source"], o["out"], model=o["model"], device=o["device"], batch=o["batch"],
                             sampling=_sampling(o), scenes=SceneConfig(o["threshold"], o["min_frames"]),
                             quiet=o["quiet"])
    click.echo(f"tr2m-caption: wrote {path}")


def caption_video(source: str, out: Path, *, model: str = DEFAULT_DESCRIBER, device: Optional[str] = None,
                  batch: int = 4, sampling: Sampling = Sampling(), scenes: SceneConfig = SceneConfig(),
                  quiet: bool = False, log=lambda m: click.echo(m, err=True)) -> Path:
    """Detect the scenes of `source`, caption each, write the schedule `out` (.srt/.json)."""
    from runtime.sources import open_source

    from .models import Describer
    from .video import SCHEDULE_SUFFIXES, ScheduleError, describe_scenes, find_scenes, write_schedule

    _quiet_transformers(quiet)
    out = Path(out)
    if out.suffix.lower() not in SCHEDULE_SUFFIXES:
        raise ScheduleError(f"{out}: the schedule must be a {' or '.join(SCHEDULE_SUFFIXES)} file")
    with open_source(source) as probe:  # a bad source fails before the model loads
        total = probe.info.frame_count
    describer = Describer(model, device=device, sampling=sampling)  # a bad model fails before the scene pass
    with _bar(total, "frame", "scenes", quiet) as bar:
        found, fps = find_scenes(source, scenes, on_frame=bar.update)
    if not quiet:
        log(f"{len(found)} scene(s) in {source}; captioning one frame each with {model}")
    with _bar(len(found), "scene", "captions", quiet) as bar:
        captions = describe_scenes(source, found, describer, batch=batch, seed=sampling.seed, on_done=bar.update)
    return write_schedule(out, found, captions, fps)


@command.command("tiny-models")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def tiny_models(folder: Path) -> None:
    """Write tiny RANDOM-weight stand-ins of the default models to FOLDER/describer and
    FOLDER/objects (offline trials of the commands; their captions are random words)."""
    from .tiny import build_tiny_describer, build_tiny_lister

    with _user_errors():
        build_tiny_describer(folder / "describer")
        build_tiny_lister(folder / "objects")
    click.echo(f"wrote {folder / 'describer'} (use as --model) and {folder / 'objects'} (--objects-model); "
               "UNTRAINED: random captions")


def main(argv=None) -> int:
    """Console entry point (`tr2m-caption`)."""
    try:
        command.main(args=argv, prog_name="tr2m-caption", standalone_mode=False)
    except click.exceptions.Abort:
        return 130
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return EXIT_USAGE
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
