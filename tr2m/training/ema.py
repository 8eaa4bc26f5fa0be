"""The EMA key branch of the fine scale-oriented contrast (MoCo / PixPro style).

A copy of the head whose weights follow the online head as an exponential moving average
(momentum 0.99 in the authors' options): key = m * key + (1 - m) * online, after every optimizer
step. It only produces the key pixel embeddings (scale_mid, shift_mid), without gradient; export
and inference never see it.
"""
from __future__ import annotations

import copy
from typing import Dict

import torch
from torch import nn


class EMA:
    """An exponential moving average of a module's parameters (buffers are copied)."""

    def __init__(self, module: nn.Module, momentum: float = 0.99) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must lie in [0, 1), got {momentum}")
        self.momentum = momentum
        self.module = copy.deepcopy(module).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        """key <- m * key + (1 - m) * online, parameter by parameter."""
        for key, value in zip(self.module.parameters(), online.parameters()):
            key.lerp_(value.detach().to(key.dtype), 1.0 - self.momentum)
        for key, value in zip(self.module.buffers(), online.buffers()):
            key.copy_(value)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state, strict=True)
