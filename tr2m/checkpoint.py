"""Reading and writing head weights: the authors' release, training dicts, and our safetensors.

Accepted without key surgery by the user:
- the authors' `weights/da_s_vitl_vitl.pth`: `{"state_dict": {<head keys>}}`;
- a raw head state dict;
- training checkpoints `{"model": ...}` whose keys start with `scalemap.` or `module.scalemap.`
  (other sub-modules, e.g. training-only contrast parts, are dropped);
- our `*.safetensors`, which also carries the model config so a checkpoint alone rebuilds the model.

Nothing is ever unpickled beyond tensors: `torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from .atomic import atomic_target
from .config import TR2MConfig

FORMAT_NAME = "tr2m-head"
FORMAT_VERSION = "1"
_WRAPPER_KEYS = ("state_dict", "model")
_PREFIXES = ("module.", "scalemap.", "head.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def read_checkpoint(path: str | os.PathLike) -> Tuple[Dict[str, torch.Tensor], Optional[TR2MConfig]]:
    """path -> (head state dict with released key names, config if the file carries one)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _head_keys(_read_torch(path)), None


def _read_torch(path: Path) -> Mapping[str, object]:
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"cannot read {path}: not a tensors-only PyTorch checkpoint (corrupt, or it holds objects we "
            f"refuse to unpickle); re-save it as tensors, e.g. torch.save({{'state_dict': sd}}, path)"
        ) from e
    except Exception as e:  # an untrusted file can fail inside torch.load in many ways (zip, pickle, storage)
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint (corrupt or truncated): {e}") from e
    for key in _WRAPPER_KEYS:
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(data).__name__})")
    return data


def read_safetensors(path: Path, what: str = "safetensors") -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Every tensor and the metadata of a .safetensors file; CheckpointError naming ``what`` if
    it cannot be read (checkpoints and training states share this)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {path} as {what}: {e}") from e


def _read_safetensors(path: Path) -> Tuple[Dict[str, torch.Tensor], Optional[TR2MConfig]]:
    tensors, metadata = read_safetensors(path)
    config = TR2MConfig.from_json(metadata["config"]) if "config" in metadata else None
    return _head_keys(tensors), config


def _head_keys(state: Mapping[str, object]) -> Dict[str, torch.Tensor]:
    """Strip wrapper prefixes; when some keys are prefixed `scalemap.`/`head.`, keep only those."""
    stripped = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        stripped[key] = value
    for prefix in ("scalemap.", "head."):
        if any(k.startswith(prefix) for k in stripped):
            stripped = {k[len(prefix):]: v for k, v in stripped.items() if k.startswith(prefix)}
    bad = [k for k, v in stripped.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint entries are not tensors: {', '.join(sorted(bad)[:5])}")
    return stripped


def load_head(head: nn.Module, path: str | os.PathLike) -> Optional[TR2MConfig]:
    """Load a checkpoint into `head` strictly; returns the config stored in the file, if any."""
    state, config = read_checkpoint(path)
    check_fits(head, state, source=str(path))
    head.load_state_dict(state, strict=True)
    return config


def check_fits(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Raise CheckpointError naming every missing, unexpected and mis-shaped key."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {list(state[k].shape)} vs model {list(expected[k].shape)}"
        for k in sorted(set(expected) & set(state)) if state[k].shape != expected[k].shape
    ]
    problems = [
        _listing("missing", missing), _listing("unexpected", unexpected), _listing("wrong shape", shapes),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(f"{source} does not fit the TR2M head: " + "; ".join(problems)
                              + " (wrong preset? the released head needs preset 'paper')")


def _listing(what: str, items: list) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
    return f"{what}: {shown}"


def save_checkpoint(head: nn.Module, config: TR2MConfig, path: str | os.PathLike, *, extra: Optional[Dict[str, str]] = None) -> Path:
    """Write the head weights + config as one safetensors file, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config.to_json(), **(extra or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    with atomic_target(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def save_released_format(head: nn.Module, path: str | os.PathLike) -> Path:
    """Write `{"state_dict": head}` as the authors' evaluation code reads it (.pth), atomically."""
    path = Path(path)
    with atomic_target(path) as tmp:
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()}}, tmp)
    return path


def read_config(path: str | os.PathLike) -> Optional[TR2MConfig]:
    """The config stored in one of our checkpoints (None for the authors' files)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    return TR2MConfig.from_dict(json.loads(metadata["config"])) if "config" in metadata else None
