"""Depth Anything relative disparity: the raw ReLU output, not normalized."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import RelativeDepthConfig
from .base import FrozenEncoder, load_or_build
from .pos_embed import use_hub_interpolation


def _build_depth_anything(cfg: RelativeDepthConfig):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        image_size=cfg.image_size, patch_size=14, layer_norm_eps=1e-6, out_indices=list(cfg.out_indices),
        reshape_hidden_states=False, apply_layernorm=True,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=cfg.reassemble_hidden_size,
        neck_hidden_sizes=list(cfg.neck_hidden_sizes), fusion_hidden_size=cfg.fusion_hidden_size,
        head_hidden_size=cfg.head_hidden_size, depth_estimation_type="relative", max_depth=1,
    )
    return DepthAnythingForDepthEstimation(config)


def _load_depth_anything(source: str):
    from transformers import DepthAnythingForDepthEstimation

    return DepthAnythingForDepthEstimation.from_pretrained(source)


class RelativeDepth(FrozenEncoder):
    """Depth Anything (v1 by default) as the frozen relative-disparity model D_r."""

    @classmethod
    def from_config(cls, cfg: RelativeDepthConfig, *, pretrained: bool = True, source: str | None = None) -> "RelativeDepth":
        source = source or cfg.source
        model = load_or_build(
            source, pretrained=pretrained, what="Depth Anything relative model",
            load=_load_depth_anything, build=lambda: _build_depth_anything(cfg),
        )
        _check_relative(model)
        _check_out_indices(model, cfg, source)
        model.config.backbone_config._attn_implementation = "eager"
        model.backbone.config._attn_implementation = "eager"
        use_hub_interpolation(model)
        return cls(model=model)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: [B,3,H,W] ImageNet-normalized -> raw disparity D_r [B,1,H,W] (>= 0)."""
        disparity = self.model(pixel_values=image).predicted_depth.unsqueeze(1)
        if disparity.shape[-2:] != image.shape[-2:]:
            disparity = F.interpolate(disparity, size=image.shape[-2:], mode="bilinear", align_corners=True)
        return disparity


def _check_relative(model) -> None:
    # A metric checkpoint ends in a sigmoid times max_depth: TR2M needs the relative ReLU output.
    if model.config.depth_estimation_type != "relative":
        raise ValueError("the relative-depth model must be a 'relative' Depth Anything checkpoint, not a metric one")


def _check_out_indices(model, cfg: RelativeDepthConfig, source: str) -> None:
    # The neck's input blocks are part of the model's identity: v1 reads the last four, V2
    # reads 3, 6, 9, 12; the other choice moves D_r by ~16% of its spread, with no error.
    found = tuple(model.backbone.config.out_indices)
    if found != tuple(cfg.out_indices):
        raise ValueError(
            f"Depth Anything from {source!r} feeds its neck from blocks {list(found)}, but the preset expects "
            f"{list(cfg.out_indices)} (v1: the last four blocks; V2: 3, 6, 9, 12): use the preset made for "
            "this checkpoint (e.g. paper_v2 for Depth Anything V2) or the checkpoint made for this preset"
        )
