"""CLIP ViT-L/14 text tower: the pooled end-of-text token after the projection (768-d).

Tokenization is OpenAI's (ftfy + html cleaning, 77 tokens, zero padding, EOT written at the last
position on truncation), taken from open_clip, whose tokenizer is OpenAI's. The weights load
through transformers' `CLIPTextModelWithProjection`, which matches OpenAI's `encode_text` to
~3e-7 in float32 and loads hub ids and local folders the same way as the other two encoders.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..config import TextEncoderConfig
from .base import FrozenEncoder, load_or_build

SOT_TOKEN = 49406
EOT_TOKEN = 49407


def tokenize(captions: str | Sequence[str], context_length: int = 77) -> torch.Tensor:
    """OpenAI CLIP token ids: captions -> int64 [B, context_length]."""
    import open_clip

    if isinstance(captions, str):
        captions = [captions]
    return open_clip.tokenize(list(captions), context_length=context_length)


def _build_clip_text(cfg: TextEncoderConfig):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        projection_dim=cfg.projection_dim, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.context_length, hidden_act="quick_gelu",
        bos_token_id=SOT_TOKEN, eos_token_id=EOT_TOKEN, pad_token_id=0,
    )
    return CLIPTextModelWithProjection(config)


def _load_clip_text(source: str):
    from transformers import CLIPTextModelWithProjection

    return CLIPTextModelWithProjection.from_pretrained(source)


class TextEncoder(FrozenEncoder):
    """Caption -> embedding [B, projection_dim], as OpenAI CLIP's `encode_text`."""

    def __init__(self, *, model, context_length: int = 77):
        super().__init__(model=model)
        self.context_length = context_length

    @classmethod
    def from_config(cls, cfg: TextEncoderConfig, *, pretrained: bool = True, source: str | None = None) -> "TextEncoder":
        model = load_or_build(
            source or cfg.source, pretrained=pretrained, what="CLIP text encoder",
            load=_load_clip_text, build=lambda: _build_clip_text(cfg),
        )
        _check_quick_gelu(model)
        model.config._attn_implementation = "eager"
        return cls(model=model, context_length=cfg.context_length)

    @property
    def width(self) -> int:
        return self.model.config.projection_dim

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids: int64 [B, 77] from `tokenize` -> embeddings [B, projection_dim]."""
        # No attention mask: OpenAI CLIP uses only the causal mask, so padding never leaks in.
        return self.model(input_ids=token_ids).text_embeds

    def encode(self, captions: str | Sequence[str]) -> torch.Tensor:
        """captions -> embeddings [B, projection_dim] on the encoder's device."""
        device = next(self.model.parameters()).device
        return self(tokenize(captions, self.context_length).to(device))


def _check_quick_gelu(model) -> None:
    # OpenAI's CLIP was trained with QuickGELU; plain GELU moves the embedding by ~1.4%.
    if model.config.hidden_act != "quick_gelu":
        raise ValueError(f"CLIP text encoder uses {model.config.hidden_act!r}; OpenAI CLIP needs 'quick_gelu'")
