"""The trainable head of TR2M (`ScaleMapModel` in the authors' release).

Module and parameter names follow the released checkpoint exactly, so its state dict loads with
no key surgery: align_mlp, crossattn, projects, resize_layers, layer1_rn, resConfUnit{1,2},
out_conv{1,2}, output_conv_{scale,shift}{1,2}.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import PATCH_SIZE, HeadConfig


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (FP16 overflows in the variance)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualConvUnit(nn.Module):
    """relu -> conv3x3 -> relu -> conv3x3, plus the input (DPT's unit, no batch norm)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class CrossAttentionBlock(nn.Module):
    """One CLIP-style pre-LN block: self-attention, cross-attention to the text, MLP.

    The weights live in `nn.MultiheadAttention` modules so the released keys match, but the
    forward is written out: it is branch-free for export, and with a single text token the
    cross-attention softmax is exactly 1, so its output is `out_proj(V(ln_text(t)))` added to
    every image token.
    """

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.attn = nn.MultiheadAttention(width, num_heads)
        self.ln_1 = LayerNorm32(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNorm32(width)
        self.attn_cross = nn.MultiheadAttention(width, num_heads)
        self.ln_text = LayerNorm32(width)
        self.ln_visual = LayerNorm32(width)

    def self_attention(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        batch, tokens, width = x.shape
        qkv = F.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias)
        q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.attn.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))

    def cross_attention(self, text: torch.Tensor) -> torch.Tensor:
        """text: [B, 1, C] (one token) -> the vector added to every image token, [B, 1, C]."""
        width = text.shape[-1]
        value = F.linear(text, self.attn_cross.in_proj_weight[2 * width:], self.attn_cross.in_proj_bias[2 * width:])
        return self.attn_cross.out_proj(value)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x: image tokens [B, N, C]; text: [B, 1, C] -> [B, N, C]."""
        x = x + self.self_attention(self.ln_1(x))
        x = x + self.cross_attention(self.ln_text(text))
        return x + self.mlp(self.ln_2(x))


class HeadOutput(NamedTuple):
    scale: torch.Tensor  # A, [B, 1, H, W], > 0
    shift: torch.Tensor  # B, [B, 1, H, W], > 0
    scale_mid: torch.Tensor  # [B, features/2, 8h, 8w]
    shift_mid: torch.Tensor  # [B, features/2, 8h, 8w]


class ScaleMapModel(nn.Module):
    """Image tokens + one text embedding -> pixel-wise scale A and shift B (inverse-depth space)."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.scale_coef = cfg.scale_coef
        self.shift_coef = cfg.shift_coef
        self.align_mlp = nn.Sequential(OrderedDict([
            ("a_fc", nn.Linear(cfg.text_channels, cfg.in_channels)),
            ("gelu", QuickGELU()),
        ]))
        self.crossattn = CrossAttentionBlock(cfg.in_channels, cfg.num_heads)
        self.projects = nn.Conv2d(cfg.in_channels, cfg.mid_channels, kernel_size=1)
        self.resize_layers = nn.ConvTranspose2d(cfg.mid_channels, cfg.mid_channels, kernel_size=2, stride=2)
        self.layer1_rn = nn.Conv2d(cfg.mid_channels, cfg.features, kernel_size=3, padding=1, bias=False)
        self.resConfUnit1 = ResidualConvUnit(cfg.features)
        self.out_conv1 = nn.Conv2d(cfg.features, cfg.features, kernel_size=1)
        self.resConfUnit2 = ResidualConvUnit(cfg.features)
        self.out_conv2 = nn.Conv2d(cfg.features, cfg.features, kernel_size=1)
        half = cfg.features // 2
        self.output_conv_scale1 = nn.Conv2d(cfg.features, half, kernel_size=3, padding=1)
        self.output_conv_scale2 = _map_head(half)
        self.output_conv_shift1 = nn.Conv2d(cfg.features, half, kernel_size=3, padding=1)
        self.output_conv_shift2 = _map_head(half)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialisation (Kaiming fan-out convs, Xavier-normal linears, zero biases),
        except the last conv of each map head, zeroed so training starts from the constant maps
        A = scale_coef, B = shift_coef: under the exp, a random last layer gives A and B spanning
        ~40 orders of magnitude and depth overflows to inf before the first step."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
            else:
                continue
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        for last in (self.output_conv_scale2[2], self.output_conv_shift2[2]):
            nn.init.zeros_(last.weight)

    def fuse(self, tokens: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, C_img] + text_emb [B, C_text] -> fused tokens [B, N, C_img]."""
        text = self.align_mlp(text_emb.unsqueeze(1))
        return self.crossattn(tokens, text)

    def decode(self, fused: torch.Tensor, grid: Tuple[int, int]) -> HeadOutput:
        """fused tokens [B, h*w, C] on a (h, w) patch grid -> A, B at 14h x 14w and mid features."""
        h, w = grid
        x = fused.transpose(1, 2).reshape(fused.shape[0], fused.shape[2], h, w)
        x = self.layer1_rn(self.resize_layers(self.projects(x)))
        x = _upsample2(self.out_conv1(self.resConfUnit1(x)))
        x = _upsample2(self.out_conv2(self.resConfUnit2(x)))
        size = (h * PATCH_SIZE, w * PATCH_SIZE)
        scale_mid = self.output_conv_scale1(x)
        shift_mid = self.output_conv_shift1(x)
        scale = self.scale_coef * torch.exp(self.output_conv_scale2(_resize(scale_mid, size)))
        shift = self.shift_coef * torch.exp(self.output_conv_shift2(_resize(shift_mid, size)))
        return HeadOutput(scale, shift, scale_mid, shift_mid)

    def forward(self, tokens: torch.Tensor, text_emb: torch.Tensor, grid: Tuple[int, int]) -> HeadOutput:
        """tokens [B, h*w, C_img], text_emb [B, C_text] -> (A, B, scale_mid, shift_mid)."""
        return self.decode(self.fuse(tokens, text_emb), grid)


def _map_head(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 1, kernel_size=1),
    )


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
