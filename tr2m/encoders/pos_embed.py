"""DINOv2 positional-embedding interpolation exactly as the torch.hub DINOv2 code does it.

The released TR2M head was trained on features from torch.hub DINOv2 and the Depth Anything
repo, whose `interpolate_pos_encoding` resizes the 37x37 table with
`scale_factor=((h0 + 0.1) / 37, (w0 + 0.1) / 37)` (bicubic, no antialias, in float32).
transformers >= 4.45 resizes with `size=(h0, w0)` instead, which samples other points: the table
differs by ~3% RMS at 31x40 and the final features by ~0.2%. We swap in the hub formula on every
`Dinov2Embeddings` of a model (Depth Anything's backbone has the same trap).
"""
from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import nn

INTERPOLATE_OFFSET = 0.1


def interpolate_table(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a square positional table the hub's way.

    table: [1, M*M, C] patch positions (no class token); grid: (h0, w0) patches.
    Returns [1, h0*w0, C] in the table's dtype.
    """
    num_positions, dim = table.shape[1], table.shape[2]
    side = int(math.sqrt(num_positions))
    if side * side != num_positions:
        raise ValueError(f"positional table of {num_positions} entries is not square")
    h0, w0 = grid
    square = table.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scale = ((h0 + INTERPOLATE_OFFSET) / side, (w0 + INTERPOLATE_OFFSET) / side)
    resized = F.interpolate(square, scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(resized.shape[-2:]) != (h0, w0):
        raise RuntimeError(f"hub interpolation gave {tuple(resized.shape[-2:])}, expected {(h0, w0)}")
    return resized.permute(0, 2, 3, 1).reshape(1, h0 * w0, dim).to(table.dtype)


def _hub_interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Drop-in for Dinov2Embeddings.interpolate_pos_encoding (same signature, hub numerics)."""
    positions = self.position_embeddings
    num_patches = embeddings.shape[1] - 1
    if num_patches == positions.shape[1] - 1 and height == width:
        return positions
    patch_h, patch_w = self.patch_embeddings.patch_size
    grid = (height // patch_h, width // patch_w)
    patch_table = interpolate_table(positions[:, 1:], grid)
    return torch.cat((positions[:, :1], patch_table), dim=1)


def use_hub_interpolation(model: nn.Module) -> int:
    """Give every DINOv2 embedding inside `model` the hub interpolation; returns how many."""
    count = 0
    for module in model.modules():
        if type(module).__name__ == "Dinov2Embeddings":
            module.interpolate_pos_encoding = types.MethodType(_hub_interpolate_pos_encoding, module)
            count += 1
    return count
