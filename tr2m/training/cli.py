"""`tr2m-train`: train the TR2M head (encoders frozen) on one or more depth datasets.

Single GPU / CPU:   tr2m-train --preset paper --dataset nyu --root DATA/nyu --split nyu_train.txt \\
                        --captions-root DATA/captions/nyu --out runs/nyu
Several GPUs:       torchrun --nproc_per_node=4 -m tr2m.training.cli <same options>
Resume:             tr2m-train <same options> --resume runs/nyu
Known bad inputs (missing folders, unknown names, unreadable checkpoints) print one `error:` line
and exit 2; Ctrl-C saves a resumable checkpoint and exits 130.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import click

from tr2m.cli_inputs import EXIT_USAGE, InputError, check_checkpoint, one_line, parse_size

EXIT_INTERRUPTED = 130


def _dataset_configs(dataset: Optional[str], root: Optional[str], datasets_json: Optional[str],
                     fields: Dict[str, Any]) -> tuple:
    from tr2m.data import DatasetConfig, list_datasets

    from .trainer import _dataset_config

    if datasets_json:
        path = Path(datasets_json)
        if not path.is_file():
            raise InputError(f"datasets file {path} not found")
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            return tuple(_dataset_config(entry) for entry in entries)
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text: save the datasets file as UTF-8 JSON") from None
        except (json.JSONDecodeError, TypeError) as e:
            raise InputError(f"{path}: expected a JSON list of dataset objects (name, root, split, ...): {e}") from None
    if dataset is None:
        return ()
    if dataset not in list_datasets():
        raise InputError(f"unknown dataset {dataset!r}; valid: {', '.join(list_datasets())} (or --synthetic N)")
    if root is None:
        raise InputError("--root is required with --dataset")
    if not Path(root).is_dir():
        raise InputError(f"dataset folder {root} not found")
    return (DatasetConfig(name=dataset, root=root, **{k: v for k, v in fields.items() if v is not None}),)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--preset", default=None, help="Model preset (paper, kitti, tiny, ...). Default: the config stored in "
              "--checkpoint, else 'paper'.")
@click.option("--dataset", default=None, help="Training dataset reader: nyu, kitti, void, c3vd or folder.")
@click.option("--root", type=click.Path(), default=None, help="Image root of the dataset.")
@click.option("--split", type=click.Path(), default=None, help="BTS-style split list (nyu/kitti/void need one).")
@click.option("--depth-root", type=click.Path(), default=None, help="Ground-truth root (default: --root).")
@click.option("--captions-root", type=click.Path(), default=None, help="Folder of RSA/TR2M caption .txt files.")
@click.option("--default-caption", default=None, help="Caption for images without a caption file.")
@click.option("--depth-scale", type=float, default=None, help="Raw depth / scale = metres (folder datasets).")
@click.option("--datasets-json", type=click.Path(), default=None,
              help="Several datasets: a JSON list of objects with DatasetConfig fields (name, root, split, ...).")
@click.option("--synthetic", type=int, default=0, help="Train on N synthetic scenes instead (smoke tests).")
@click.option("--out", "out_dir", type=click.Path(), required=True, help="Run folder: checkpoints, log.csv.")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Per process.")
@click.option("--lr", type=float, default=1e-5, show_default=True)
@click.option("--lr-decay", type=float, default=0.9, show_default=True, help="LR factor per epoch.")
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--grad-clip", type=float, default=1.0, show_default=True)
@click.option("--amp", type=click.Choice(["auto", "fp16", "bf16", "off"]), default="auto", show_default=True,
              help="Mixed precision on CUDA (CPU always runs float32).")
@click.option("--loss-preset", default="default", show_default=True, help="default, authors or paper.")
@click.option("--loss-set", "loss_set", multiple=True, metavar="NAME=VALUE",
              help="Change one LossConfig field of the preset, e.g. --loss-set rho=0.85 (repeatable).")
@click.option("--contrast-warmup", type=int, default=1000, show_default=True, help="Steps to ramp the contrast in.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--log-every", type=int, default=20, show_default=True)
@click.option("--save-every", type=int, default=0, show_default=True, help="Steps between saves (0: epoch ends).")
@click.option("--num-workers", type=int, default=4, show_default=True)
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps in all.")
@click.option("--cache-dir", type=click.Path(), default=None,
              help="Cache the frozen encoders' outputs there (drops photometric jitter; see feature_cache).")
@click.option("--checkpoint", type=click.Path(), default=None, help="Initial head weights (fine-tuning).")
@click.option("--resume", type=click.Path(), default=None, help="Run folder (or its last_state.safetensors).")
@click.option("--random-init", is_flag=True, help="Random encoders (offline tests; results are meaningless).")
@click.option("--relative-source", default=None, help="Depth Anything hub id or local folder.")
@click.option("--image-source", default=None, help="DINOv2 hub id or local folder.")
@click.option("--text-source", default=None, help="CLIP text hub id or local folder.")
@click.option("--input-size", default=None, help="Model input HxW, multiples of 14 (default: the preset's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def main(**opts: Any) -> None:
    """Train the TR2M head (frozen Depth Anything, DINOv2 and CLIP) on depth datasets.

    Writes OUT/last.safetensors and OUT/last_state.safetensors at each epoch end (and every
    --save-every steps), OUT/log.csv, and at the end OUT/final.safetensors plus OUT/final.pth
    (the authors' released format). Multi-GPU: launch with torchrun.

    \b
    Examples:
      tr2m-train --preset paper --dataset nyu --root DATA/nyu --split nyu_train.txt \\
                 --captions-root CAPS/nyu --out runs/nyu
      torchrun --nproc_per_node=4 -m tr2m.training.cli --datasets-json data.json --out runs/all
      tr2m-train ... --resume runs/nyu          # after Ctrl-C (exit 130) or a crash
      tr2m-train --preset tiny --random-init --synthetic 64 --out /tmp/smoke --max-steps 20
    """
    try:
        result = _run(opts)
    except KeyboardInterrupt:
        click.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    except OSError as e:  # e.g. an --out folder that cannot be created or written
        click.echo(f"error: cannot write {e.filename or opts['out_dir']}: {e.strerror or e}; "
                   "choose a writable --out folder", err=True)
        sys.exit(EXIT_USAGE)
    from .trainer import describe

    click.echo(describe(result))
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED)


def _run(opts: Dict[str, Any]):
    from .distributed import setup, teardown
    from .trainer import Trainer, build_datasets, build_model

    with _input_errors():
        config, datasets = _config(opts)
    ctx = setup(config.device)
    ok = False
    try:
        with _input_errors():
            model = build_model(config, ctx.device)
            datasets = datasets if datasets is not None else build_datasets(config)
            trainer = Trainer(config, model=model, datasets=datasets, ctx=ctx)
        with _input_errors(during_training=True):
            result = trainer.fit()
        ok = True
        return result
    finally:
        teardown(ctx, barrier=ok)


@contextlib.contextmanager
def _input_errors(during_training: bool = False):
    """Turn the errors of bad inputs into InputError (one line). While training, only missing
    files and bad states count as such: anything else is a bug and keeps its traceback."""
    from tr2m.checkpoint import CheckpointError
    from tr2m.data import CaptionError

    from .state import TrainStateError

    narrow = (CheckpointError, TrainStateError, CaptionError, FileNotFoundError)
    try:
        yield
    except narrow as e:
        raise InputError(one_line(e)) from e
    except (ValueError, OSError) as e:  # OSError: e.g. a hub id that cannot be downloaded offline
        if during_training:
            raise
        raise InputError(one_line(e)) from e
    except KeyError as e:  # registries raise KeyError with a message naming the valid choices
        if during_training:
            raise
        raise InputError(one_line(e.args[0] if e.args else e)) from e


def _loss_overrides(items) -> Dict[str, float]:
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            overrides[name.strip()] = int(value) if value.strip().isdigit() else float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"--loss-set takes NAME=NUMBER, got {item!r}")
    return overrides


def _config(opts: Dict[str, Any]):
    from .synthetic import SyntheticScenes
    from .trainer import TrainConfig

    fields = {k: opts[k] for k in ("split", "depth_root", "captions_root", "default_caption", "depth_scale")}
    dataset_configs = _dataset_configs(opts["dataset"], opts["root"], opts["datasets_json"], fields)
    if opts["synthetic"] and dataset_configs:
        raise InputError("give either --synthetic or datasets, not both")
    if not opts["synthetic"] and not dataset_configs:
        raise InputError("no training data: pass --dataset/--root, --datasets-json or --synthetic N")
    checkpoint = opts["checkpoint"]
    if checkpoint is not None:
        check_checkpoint(checkpoint)
    preset = opts["preset"] or (None if checkpoint and str(checkpoint).endswith(".safetensors") else "paper")
    config = TrainConfig(
        preset=preset, out_dir=opts["out_dir"], datasets=dataset_configs, epochs=opts["epochs"],
        batch_size=opts["batch_size"], lr=opts["lr"], lr_decay=opts["lr_decay"], weight_decay=opts["weight_decay"],
        grad_clip=opts["grad_clip"], amp=opts["amp"], loss_preset=opts["loss_preset"],
        loss_overrides=_loss_overrides(opts["loss_set"]),
        contrast_warmup_steps=opts["contrast_warmup"], seed=opts["seed"], log_every=opts["log_every"],
        save_every=opts["save_every"], num_workers=opts["num_workers"], max_steps=opts["max_steps"],
        cache_dir=opts["cache_dir"], device=opts["device"], progress=not opts["no_progress"],
        pretrained=not opts["random_init"], init_checkpoint=checkpoint, input_size=parse_size(opts["input_size"]),
        relative_source=opts["relative_source"], image_source=opts["image_source"], text_source=opts["text_source"],
        resume=opts["resume"],
    )
    datasets = None
    if opts["synthetic"]:
        from tr2m.checkpoint import read_config
        from tr2m.config import get_preset

        size = config.input_size or (get_preset(preset) if preset else read_config(checkpoint)).input_size
        datasets = [SyntheticScenes(opts["synthetic"], size, seed=config.seed)]
    return config, datasets


if __name__ == "__main__":  # torchrun -m tr2m.training.cli ...
    main()
