"""An on-disk cache of the frozen encoders' outputs, so epochs after the first only run the head.

Nothing upstream of the head ever trains, so rel (Depth Anything's raw disparity, [1,H,W]) and the
DINOv2 tokens ([N,C]) of an image are fixed. They are stored per sample and per flip, one
safetensors file each, under a folder named by a fingerprint of the encoders (configs, input size,
normalization and a checksum of their weights): changing any of them starts a new cache.

What caching changes in training (the trainer applies it when a cache folder is given):
- the readers' own augmentation is switched off; a horizontal flip (probability `hflip`) is
  applied by the trainer instead, and both flips are cached (a ViT is not flip-equivariant, so
  the flipped image's features are computed, never mirrored);
- the photometric jitter (gamma, brightness, colour) is DROPPED: jittered features would differ
  every epoch and cannot be cached. The smoothness term still sees the un-jittered image.
- tokens are stored in float16 (rel in float32): ~2.5 MB per sample and flip for the paper preset
  at 434x560, so NYU's ~24k training frames take ~120 GB with both flips. Size the disk for it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Optional

import torch

from ..atomic import atomic_target


def encoder_fingerprint(model) -> str:
    """A hex digest of what determines the cached features of a TR2M model."""
    cfg = model.config
    digest = hashlib.sha256(json.dumps({
        "relative": cfg.to_dict()["relative"], "image": cfg.to_dict()["image"],
        "input_size": list(cfg.input_size), "mean": list(cfg.mean), "std": list(cfg.std),
    }, sort_keys=True).encode())
    with torch.no_grad():
        for module in (model.relative, model.image_encoder):
            for p in module.parameters():
                digest.update(f"{p.double().sum().item():.12e}".encode())
    return digest.hexdigest()


class FeatureCache:
    """rel + tokens per (source, sample name, flip) under directory/<fingerprint[:16]>/."""

    def __init__(self, directory: str | os.PathLike, fingerprint: str) -> None:
        self.directory = Path(directory) / fingerprint[:16]
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, source: str, name: str, flip: bool) -> Path:
        key = hashlib.sha256(json.dumps([source, name, bool(flip)]).encode()).hexdigest()[:32]
        return self.directory / key[:2] / f"{key}.safetensors"

    def get(self, source: str, name: str, flip: bool) -> Optional[Dict[str, torch.Tensor]]:
        """{"rel": float32 [1,H,W], "tokens": float32 [N,C]} or None when not cached (or unreadable)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.path(source, name, flip)
        if not path.is_file():
            return None
        try:
            data = load_file(str(path))
        except (SafetensorError, OSError):
            return None  # a damaged entry is recomputed and rewritten
        return {"rel": data["rel"].float(), "tokens": data["tokens"].float()}

    def put(self, source: str, name: str, flip: bool, rel: torch.Tensor, tokens: torch.Tensor) -> None:
        """Store one sample's rel [1,H,W] and tokens [N,C], atomically (ranks may race: last wins)."""
        from safetensors.torch import save_file

        path = self.path(source, name, flip)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_target(path) as tmp:
            save_file({"rel": rel.detach().float().contiguous().cpu(),
                       "tokens": tokens.detach().half().contiguous().cpu()}, str(tmp))
