"""Image preprocessing and output resizing, shared by the model, training and evaluation."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """An RGB image, uint8 / uint16 [H,W,3] array or float [3,H,W] tensor in [0,1] -> float32 [3,H,W]."""
    if isinstance(image, torch.Tensor):
        return image.float()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {array.shape}")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype, 1.0)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / scale


def resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """[B,C,H,W] -> [B,C,*size], bilinear with align_corners=True (the authors' convention)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[B,3,H,W] in [0,1] -> ImageNet-normalized [B,3,H,W]."""
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def prepare(images: torch.Tensor, size: Tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[B,3,H,W] RGB in [0,1] at any size -> the model's normalized input [B,3,*size]."""
    return normalize(resize(images, size), mean, std)
