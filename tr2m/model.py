"""TR2M: a frozen relative-depth model, frozen image and text encoders and the trainable head."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from .config import TR2MConfig
from .encoders import ImageEncoder, RelativeDepth, TextEncoder
from .head import ScaleMapModel
from .transforms import prepare, resize, to_tensor


def metric_depth(scale: torch.Tensor, shift: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """depth = 1 / (A * D_r + B), in float32 (A and B act in inverse-depth space). All [B,1,H,W]."""
    return torch.reciprocal(scale.float() * rel.float() + shift.float())


class TR2M(nn.Module):
    """Image + caption -> metric depth.

    `forward` is the branch-free core that export traces (normalized image at the configured
    size plus a precomputed text embedding); `predict` is the convenience layer above it.
    """

    def __init__(self, *, config: TR2MConfig, relative: RelativeDepth, image_encoder: ImageEncoder,
                 text_encoder: TextEncoder, head: ScaleMapModel):
        super().__init__()
        self.config = config
        self.relative = relative
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.head = head

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def encode_text(self, captions: str | Sequence[str]) -> torch.Tensor:
        """captions -> text embeddings [B, C_text]."""
        with torch.no_grad():
            return self.text_encoder.encode(captions)

    def features(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The frozen part: normalized image [B,3,H,W] -> rel [B,1,H,W], tokens [B,N,C_img].

        Training may cache these per image, since nothing upstream of the head ever changes.
        """
        with torch.no_grad():
            return {"rel": self.relative(image), "tokens": self.image_encoder(image)}

    def from_features(self, rel: torch.Tensor, tokens: torch.Tensor, text_emb: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The trainable part: features + text embedding [B, C_text] -> outputs (see `forward`)."""
        grid = (rel.shape[-2] // 14, rel.shape[-1] // 14)
        fused = self.head.fuse(tokens, text_emb)
        scale, shift, scale_mid, shift_mid = self.head.decode(fused, grid)
        return {
            "depth": metric_depth(scale, shift, rel), "scale": scale, "shift": shift, "rel": rel,
            "scale_mid": scale_mid, "shift_mid": shift_mid, "embedding": fused.mean(dim=1),
        }

    def forward(self, image: torch.Tensor, text_emb: torch.Tensor) -> Dict[str, torch.Tensor]:
        """image: normalized [B,3,H,W] (H, W multiples of 14); text_emb: [B, C_text].

        Returns depth, scale (A), shift (B), rel (D_r), all [B,1,H,W]; scale_mid, shift_mid
        [B,F/2,8h,8w]; embedding [B, C_img] (the pooled fused tokens).
        """
        feats = self.features(image)
        return self.from_features(feats["rel"], feats["tokens"], text_emb)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray | torch.Tensor] | torch.Tensor,
                captions: str | Sequence[str]) -> List[torch.Tensor]:
        """RGB images (uint8 [H,W,3] arrays or [3,H,W] floats in [0,1]; any sizes) and one caption
        or one per image -> metric depth [H_i, W_i] in metres, at each image's own size."""
        tensors = [to_tensor(im) for im in (images if not isinstance(images, torch.Tensor) or images.ndim == 4 else [images])]
        captions = [captions] * len(tensors) if isinstance(captions, str) else list(captions)
        if len(captions) != len(tensors):
            raise ValueError(f"got {len(captions)} captions for {len(tensors)} images: give one, or one per image")
        cfg = self.config
        batch = torch.stack([resize(t[None], cfg.input_size)[0] for t in tensors]).to(self.device)
        out = self(prepare(batch, cfg.input_size, cfg.mean, cfg.std), self.encode_text(captions))
        return [resize(d[None], t.shape[-2:])[0, 0].cpu() for d, t in zip(out["depth"], tensors)]

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
