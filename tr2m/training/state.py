"""The resumable training state, in one safetensors file: no pickle anywhere.

Tensors: the online head (`head.*`), the EMA key head (`ema.*`) and the optimizer's per-parameter
state (`optimizer.<param index>.<name>`, e.g. AdamW's exp_avg, exp_avg_sq and its step tensor).
Everything else is JSON in the safetensors metadata under "state": the optimizer's param groups
and any non-tensor per-parameter entries, the LR scheduler's and the GradScaler's state dicts, the
counters (epoch, step, step_in_epoch) and the training config. Floats survive JSON exactly
(Python writes the shortest repr that reads back to the same double), so a resumed run restores
the optimizer and scheduler bit for bit.

There is no RNG state to save: the trainer derives every random draw from (seed, epoch, index)
for samples and (seed, step, rank) for steps (see `distributed.derive_seed`).

The file is written to a temporary name and moved into place: a crash never leaves half a state.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping

import torch

from ..atomic import atomic_target
from ..checkpoint import CheckpointError, read_safetensors

STATE_FORMAT = "tr2m-train-state"
STATE_VERSION = "1"
STATE_FILE = "last_state.safetensors"


class TrainStateError(ValueError):
    """A training-state file that cannot be read or resumed from."""


@dataclass
class TrainingState:
    """Everything a resumed run needs besides the data and the frozen encoders."""

    head: Dict[str, torch.Tensor]
    ema: Dict[str, torch.Tensor]
    optimizer: Dict[str, Any]
    scheduler: Dict[str, Any]
    scaler: Dict[str, Any]
    counters: Dict[str, int]
    train_config: Dict[str, Any] = field(default_factory=dict)
    model_config: str = ""


def resolve_state_path(path: str | os.PathLike) -> Path:
    """A state file, or a run folder holding `last_state.safetensors`."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.is_file():
        raise TrainStateError(f"no training state at {path} (pass a run folder or its {STATE_FILE})")
    return path


def _split_optimizer(state_dict: Mapping[str, Any]) -> tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    tensors: Dict[str, torch.Tensor] = {}
    scalars: Dict[str, Dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Dict[str, Any]:
    state: Dict[int, Dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_training_state(path: str | os.PathLike, state: TrainingState) -> Path:
    """Write `state` atomically to `path` (a .safetensors file)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"head.{k}": v.detach().contiguous().cpu() for k, v in state.head.items()}
    tensors.update({f"ema.{k}": v.detach().contiguous().cpu() for k, v in state.ema.items()})
    optim_tensors, optim_meta = _split_optimizer(state.optimizer)
    tensors.update(optim_tensors)
    payload = {
        "optimizer": optim_meta, "scheduler": state.scheduler, "scaler": state.scaler,
        "counters": state.counters, "train_config": state.train_config,
    }
    metadata = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "state": json.dumps(payload),
                "config": state.model_config}
    with atomic_target(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_training_state(path: str | os.PathLike) -> TrainingState:
    """Read a file written by `save_training_state` (or a run folder holding one)."""
    path = resolve_state_path(path)
    try:
        tensors, metadata = read_safetensors(path, what="a training state")
    except CheckpointError as e:
        raise TrainStateError(str(e)) from e
    if metadata.get("format") != STATE_FORMAT:
        raise TrainStateError(f"{path} is not a tr2m training state (format {metadata.get('format')!r}); "
                              f"resume from the {STATE_FILE} a tr2m-train run wrote")
    payload = json.loads(metadata["state"])
    groups: Dict[str, Dict[str, torch.Tensor]] = {"head": {}, "ema": {}, "optimizer": {}}
    for key, value in tensors.items():
        group, _, rest = key.partition(".")
        if group not in groups:
            raise TrainStateError(f"{path}: unexpected tensor {key!r} in a training state")
        groups[group][rest if group != "optimizer" else key] = value
    return TrainingState(
        head=groups["head"], ema=groups["ema"], optimizer=_join_optimizer(groups["optimizer"], payload["optimizer"]),
        scheduler=payload["scheduler"], scaler=payload["scaler"], counters=payload["counters"],
        train_config=payload.get("train_config", {}), model_config=metadata.get("config", ""),
    )
