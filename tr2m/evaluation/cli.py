"""`tr2m-eval`: score a TR2M model or an exported bundle on a depth dataset.

    tr2m-eval --dataset nyu --root DATA/nyu --split nyu_test.txt --captions-root CAPS \\
              --checkpoint weights/da_s_vitl_vitl.pth --output nyu.json
    tr2m-eval --dataset kitti --root DATA/kitti_raw --depth-root DATA/kitti_gt --split kitti_test.txt \\
              --preset kitti --checkpoint head.safetensors
    tr2m-eval --dataset nyu ... --bundle exported/ --backend onnxruntime

Prints the BTS metric table and writes a JSON report (atomically). Known bad inputs print one
`error:` line and exit 2.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import click

from tr2m.cli_inputs import EXIT_USAGE, InputError, check_checkpoint, one_line, parse_size


@contextlib.contextmanager
def _input_errors():
    from tr2m.checkpoint import CheckpointError
    from tr2m.data import CaptionError

    from .evaluate import EngineUnavailable

    try:
        yield
    except (CheckpointError, CaptionError, EngineUnavailable, FileNotFoundError, NotADirectoryError, ValueError,
            OSError) as e:
        raise InputError(one_line(e)) from e
    except KeyError as e:  # registries raise KeyError with a message naming the valid choices
        raise InputError(one_line(e.args[0] if e.args else e)) from e
    except Exception as e:  # the runtime's own errors (BundleError, ...) all derive from Tr2mRuntimeError
        if type(e).__module__.startswith("runtime"):
            raise InputError(one_line(e)) from e
        raise


def _dataset(opts: Dict[str, Any]):
    from tr2m.data import DatasetConfig, build_dataset

    name = opts["dataset"]
    root = Path(opts["root"])
    if not root.is_dir():
        raise InputError(f"dataset folder {root} not found")
    if opts["depth_root"] and not Path(opts["depth_root"]).is_dir():
        raise InputError(f"depth folder {opts['depth_root']} not found")
    fields = {k: opts[k] for k in ("split", "depth_root", "captions_root", "default_caption", "depth_scale")}
    config = DatasetConfig(name=name, root=str(root), train=False, **{k: v for k, v in fields.items() if v is not None})
    return build_dataset(config)


def _predictor(opts: Dict[str, Any]):
    from .evaluate import BundlePredictor, TorchPredictor

    if opts["bundle"]:
        if opts["checkpoint"] or opts["random_init"]:
            raise InputError("--bundle evaluates an exported bundle: drop --checkpoint/--random-init")
        if not Path(opts["bundle"]).is_dir():
            raise InputError(f"bundle folder {opts['bundle']} not found")
        return BundlePredictor(opts["bundle"], backend=opts["backend"], precision=opts["precision"])
    if opts["backend"] or opts["precision"]:
        raise InputError("--backend and --precision apply to --bundle evaluation only")
    import torch

    import tr2m
    from tr2m.device import resolve_device

    checkpoint = opts["checkpoint"]
    if checkpoint is None and not opts["random_init"]:
        raise InputError("no head weights: pass --checkpoint (or --random-init for a smoke test)")
    if checkpoint is not None:
        check_checkpoint(checkpoint)
    preset = opts["preset"] or _default_preset(checkpoint, opts["dataset"])
    size, size_from = _input_size(opts, preset, checkpoint)
    torch.manual_seed(opts["seed"])
    model = tr2m.create_model(
        preset, pretrained=not opts["random_init"], checkpoint=checkpoint, input_size=size,
        relative_source=opts["relative_source"], image_source=opts["image_source"], text_source=opts["text_source"],
        device=resolve_device(opts["device"]),
    )
    description = {"checkpoint": checkpoint, "random_init": opts["random_init"], "input_size_from": size_from}
    return TorchPredictor(model, description=description)


def _default_preset(checkpoint: Optional[str], dataset: str) -> Optional[str]:
    """None (the config stored in a tr2m .safetensors checkpoint), else the dataset's preset in
    EVAL_PRESETS ('paper' for datasets without one)."""
    from tr2m.checkpoint import read_config

    from .evaluate import EVAL_PRESETS

    if checkpoint is not None and read_config(checkpoint) is not None:
        return None
    return EVAL_PRESETS.get(dataset, "paper")


def _input_size(opts: Dict[str, Any], preset: Optional[str], checkpoint: Optional[str]):
    """(H, W) or None (the preset's), and where it comes from: --input-size, an explicit --preset,
    else the authors' size for the dataset over the checkpoint's stored config."""
    from tr2m.checkpoint import read_config
    from tr2m.config import get_preset

    from .evaluate import eval_input_size

    if opts["input_size"]:
        return parse_size(opts["input_size"]), "--input-size"
    if opts["preset"]:
        return None, f"--preset {opts['preset']}"
    configured = (get_preset(preset) if preset is not None else read_config(checkpoint)).input_size
    return eval_input_size(opts["dataset"], configured)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", required=True, help="Dataset reader: nyu, kitti, void, c3vd or folder.")
@click.option("--root", required=True, type=click.Path(), help="Image root of the dataset.")
@click.option("--split", type=click.Path(), default=None,
              help="BTS-style eval list 'image depth [focal]' (nyu/kitti/void); folder: optional list of stems.")
@click.option("--depth-root", type=click.Path(), default=None, help="Ground-truth root (default: --root).")
@click.option("--captions-root", type=click.Path(), default=None, help="Folder of caption .txt files (line 0 is used).")
@click.option("--default-caption", default=None, help="Caption for images without a caption file.")
@click.option("--depth-scale", type=float, default=None, help="Raw depth / scale = metres (folder datasets).")
@click.option("--protocol", default=None, help="Metric protocol (caps and crop); default: the dataset's "
              "(nyu, kitti, void, c3vd); required for folder.")
@click.option("--preset", default=None, help="Model preset. Default: the config stored in a tr2m .safetensors "
              "checkpoint, else 'kitti' for KITTI and 'paper' for the rest.")
@click.option("--checkpoint", type=click.Path(), default=None,
              help="Head weights: the authors' .pth, a training dict, or a tr2m .safetensors.")
@click.option("--random-init", is_flag=True, help="Random encoders (seeded by --seed), and a random head unless --checkpoint: for pipeline "
              "smoke tests, the numbers are meaningless.")
@click.option("--relative-source", default=None, help="Depth Anything hub id or local folder.")
@click.option("--image-source", default=None, help="DINOv2 hub id or local folder.")
@click.option("--text-source", default=None, help="CLIP text hub id or local folder.")
@click.option("--input-size", default=None, help="Model input HxW, multiples of 14. Default: the --preset's if "
              "given, else the authors' size for the dataset (434x560 for nyu, void, c3vd; 350x1204 for kitti) even "
              "when the checkpoint's stored config says otherwise (folder: the config's). The size used is printed "
              "and reported.")
@click.option("--bundle", type=click.Path(), default=None, help="Evaluate an exported bundle folder (runtime.Engine).")
@click.option("--backend", default=None, help="Bundle backend (the runtime's names, e.g. auto, ort-cpu, ort-cuda, "
              "tensorrt; default: auto).")
@click.option("--precision", default=None, help="Bundle image graph precision: fp32, fp16 or int8 (default: fp32).")
@click.option("--device", default="auto", show_default=True, help="PyTorch device: auto, cpu, cuda, cuda:1 ...")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-init weights.")
@click.option("--limit", type=int, default=None, help="Score only the first N samples.")
@click.option("--num-workers", type=int, default=0, show_default=True, help="DataLoader workers for reading.")
@click.option("--output", type=click.Path(), default=None, help="Write the JSON report here.")
@click.option("--per-image/--no-per-image", default=True, show_default=True, help="Per-image metrics in the JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(**opts: Any) -> None:
    """Evaluate TR2M on a depth dataset with the BTS / ZoeDepth protocol (no median scaling).

    Metrics: d1, d2, d3, abs_rel, sq_rel, rmse, rmse_log, log10, silog; per image over valid
    pixels (caps and crop of the protocol), then the mean over images. The PyTorch model is
    built from --preset/--checkpoint (encoders from their hub ids or the *-source folders);
    --bundle evaluates an exported bundle through the torch-free runtime instead.

    \b
    Examples:
      tr2m-eval --dataset nyu --root DATA/nyu --split nyu_test.txt --captions-root CAPS/nyu \\
                --checkpoint weights/da_s_vitl_vitl.pth --output nyu.json
      tr2m-eval --dataset kitti --root DATA/kitti_raw --depth-root DATA/kitti_gt \\
                --split kitti_test.txt --captions-root CAPS/kitti --checkpoint head.safetensors
      tr2m-eval --dataset nyu --root DATA/nyu --split nyu_test.txt --bundle bundles/paper
    """
    try:
        report = _run(opts)
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    from .evaluate import format_table

    click.echo(f"{report.dataset} ({report.protocol['name']} protocol): {report.count} images"
               + (f", {report.skipped} without valid pixels" if report.skipped else ""))
    _echo_input_size(report.model, report.dataset)
    click.echo(format_table(report.metrics))
    if opts["output"]:
        click.echo(f"wrote {opts['output']}")


def _run(opts: Dict[str, Any]):
    from tr2m.data import list_datasets

    from .evaluate import default_protocol, evaluate, write_json
    from .metrics import get_protocol

    with _input_errors():
        if opts["dataset"] not in list_datasets():
            raise InputError(f"unknown dataset {opts['dataset']!r}; valid: {', '.join(list_datasets())}")
        protocol = get_protocol(opts["protocol"] or default_protocol(opts["dataset"]))
        dataset = _dataset(opts)
        predictor = _predictor(opts)
        report = evaluate(predictor, dataset, protocol, limit=opts["limit"], num_workers=opts["num_workers"],
                          progress=not opts["quiet"], per_image=opts["per_image"], dataset_name=opts["dataset"])
    if opts["output"]:
        try:
            write_json(opts["output"], report.to_dict())
        except OSError as e:
            raise InputError(f"cannot write the report to {opts['output']}: {e.strerror or e}; "
                             "choose a writable --output path") from None
    return report


def _echo_input_size(description: Dict[str, Any], dataset: str) -> None:
    from .evaluate import authors_input_size

    height, width = description["input_size"]
    line = f"model input {height}x{width} ({description['input_size_from']}"
    authors = authors_input_size(dataset)
    if authors is not None and tuple(authors) != (height, width):
        line += f"; the authors evaluate {dataset} at {authors[0]}x{authors[1]}"
    click.echo(line + ")")


if __name__ == "__main__":
    main()
