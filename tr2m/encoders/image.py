"""DINOv2 image encoder: patch tokens of the last block after the final LayerNorm."""
from __future__ import annotations

import torch

from ..config import ImageEncoderConfig
from .base import FrozenEncoder, load_or_build
from .pos_embed import use_hub_interpolation


def _build_dinov2(cfg: ImageEncoderConfig):
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio, image_size=cfg.image_size, patch_size=14, layer_norm_eps=1e-6,
    )
    return Dinov2Model(config)


def _load_dinov2(source: str):
    from transformers import Dinov2Model

    return Dinov2Model.from_pretrained(source)


class ImageEncoder(FrozenEncoder):
    """Equivalent of torch.hub `dinov2_vitl14.get_intermediate_layers(x, n=1)[0]`."""

    @classmethod
    def from_config(cls, cfg: ImageEncoderConfig, *, pretrained: bool = True, source: str | None = None) -> "ImageEncoder":
        model = load_or_build(
            source or cfg.source, pretrained=pretrained, what="DINOv2 image encoder",
            load=_load_dinov2, build=lambda: _build_dinov2(cfg),
        )
        model.config._attn_implementation = "eager"  # traceable attention; see export notes
        use_hub_interpolation(model)
        return cls(model=model)

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: [B,3,H,W] ImageNet-normalized, H and W multiples of 14 -> tokens [B, H/14*W/14, C]."""
        # last_hidden_state is already layernorm(last block); drop the class token.
        return self.model(pixel_values=image).last_hidden_state[:, 1:]
