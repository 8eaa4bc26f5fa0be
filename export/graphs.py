"""The graphs a bundle holds, as thin wrappers around the model's branch-free core.

- image: the fused graph (Depth Anything + DINOv2 + cross-modal attention + heads), per frame;
- relative / scale_shift: the same two halves as separate graphs, for keyframe mode (D_r every
  frame, A and B every K frames); the halves share no computation, so nothing runs twice;
- text: CLIP's text tower, token ids -> embedding, so the runtime embeds new captions itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch
from torch import nn

from tr2m.model import TR2M


class ImageGraph(nn.Module):
    def __init__(self, model: TR2M):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, text_emb: torch.Tensor):
        """image [B,3,H,W] normalized, text_emb [B,D] -> depth, scale, shift, rel [B,1,H,W]."""
        out = self.model(image, text_emb)
        return out["depth"], out["scale"], out["shift"], out["rel"]


class RelativeGraph(nn.Module):
    def __init__(self, model: TR2M):
        super().__init__()
        self.relative = model.relative

    def forward(self, image: torch.Tensor):
        """image [B,3,H,W] normalized -> rel [B,1,H,W]."""
        return self.relative(image)


class ScaleShiftGraph(nn.Module):
    def __init__(self, model: TR2M):
        super().__init__()
        self.image_encoder = model.image_encoder
        self.head = model.head

    def forward(self, image: torch.Tensor, text_emb: torch.Tensor):
        """image [B,3,H,W] normalized, text_emb [B,D] -> scale, shift [B,1,H,W]."""
        grid = (image.shape[-2] // 14, image.shape[-1] // 14)
        out = self.head(self.image_encoder(image), text_emb, grid)
        return out.scale, out.shift


class TextGraph(nn.Module):
    def __init__(self, model: TR2M):
        super().__init__()
        self.text_encoder = model.text_encoder

    def forward(self, token_ids: torch.Tensor):
        """token_ids int64 [B,77] -> text_emb [B,D]."""
        return self.text_encoder(token_ids)


@dataclass(frozen=True)
class GraphDef:
    """How to wrap, feed and name one graph."""

    wrap: Callable[[TR2M], nn.Module]
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    parts: Tuple[str, ...]  # the model's submodules the graph holds (export frees the others as it goes)


GRAPHS: Dict[str, GraphDef] = {
    "image": GraphDef(ImageGraph, ("image", "text_emb"), ("depth", "scale", "shift", "rel"),
                      ("relative", "image_encoder", "head")),
    "relative": GraphDef(RelativeGraph, ("image",), ("rel",), ("relative",)),
    "scale_shift": GraphDef(ScaleShiftGraph, ("image", "text_emb"), ("scale", "shift"), ("image_encoder", "head")),
    "text": GraphDef(TextGraph, ("token_ids",), ("text_emb",), ("text_encoder",)),
}
EXPORT_ORDER = ("text", "relative", "scale_shift", "image")  # the largest last: the text tower is freed first
HALF_GRAPHS = ("image", "relative", "scale_shift")  # the graphs --half converts (keyframe mode runs the halves)


def example_inputs(model: TR2M, names: Tuple[str, ...], batch: int = 2) -> Dict[str, torch.Tensor]:
    """Example tensors for tracing (batch 2, so the exporter cannot specialise batch to 1)."""
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    makers = {
        "image": lambda: torch.randn(batch, 3, *cfg.input_size, generator=gen),
        "text_emb": lambda: torch.randn(batch, cfg.text.projection_dim, generator=gen),
        "token_ids": lambda: torch.zeros(batch, cfg.text.context_length, dtype=torch.int64).index_fill_(1, torch.tensor([0]), 49406).index_fill_(1, torch.tensor([1]), 49407),
    }
    return {name: makers[name]() for name in names}


def io_shapes(model: TR2M, definition: GraphDef) -> Tuple[Dict[str, list], Dict[str, list]]:
    """Manifest shapes of a graph's inputs and outputs, with "batch" for the dynamic axis."""
    cfg = model.config
    h, w = cfg.input_size
    shapes = {
        "image": ["batch", 3, h, w], "text_emb": ["batch", cfg.text.projection_dim],
        "token_ids": ["batch", cfg.text.context_length],
        **{name: ["batch", 1, h, w] for name in ("depth", "scale", "shift", "rel")},
    }
    return ({n: shapes[n] for n in definition.inputs}, {n: shapes[n] for n in definition.outputs})
