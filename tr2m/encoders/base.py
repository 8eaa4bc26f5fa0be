"""What the three encoders share: frozen weights, and loading from a hub id, a folder or a config."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, TypeVar

from torch import nn

Model = TypeVar("Model", bound=nn.Module)


class FrozenEncoder(nn.Module):
    """A wrapper whose wrapped network never trains: no gradients, and `train()` keeps it in eval.

    Dropout and any other train-time behaviour would silently change the features the released
    head was trained on, so `model.train()` on the whole TR2M must not wake these.
    """

    def __init__(self, *, model: nn.Module):
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> "FrozenEncoder":
        super().train(mode)
        self.model.eval()
        return self

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the wrapped transformers model as config.json + model.safetensors."""
        self.model.save_pretrained(str(directory), safe_serialization=True)


def load_or_build(
    source: Optional[str],
    *,
    pretrained: bool,
    load: Callable[[str], Model],
    build: Callable[[], Model],
    what: str,
) -> Model:
    """Load `source` (hub id or local folder) when `pretrained`, else build with random weights."""
    if not pretrained:
        return build()
    if not source:
        raise ValueError(f"no source given for the {what}: pass a hub id or a local folder, or pretrained=False")
    if _looks_like_path(source) and not Path(source).is_dir():
        raise FileNotFoundError(f"{what} folder not found: {source}")
    try:
        return load(source)
    except OSError as e:
        raise OSError(
            f"could not load the {what} from {source!r}: {e}. Offline? Pass a local folder "
            f"(save_pretrained output) or use random weights for testing."
        ) from e


def _looks_like_path(source: str) -> bool:
    # Hub ids are "org/name"; anything else with a path shape is a local folder.
    return Path(source).expanduser().exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
