import pytest
import torch
from torch import nn

from tr2m.config import HeadConfig, get_preset
from tr2m.head import CrossAttentionBlock, ScaleMapModel

# Key names and shapes of the authors' released head (weights/da_s_vitl_vitl.pth).
RELEASED_SHAPES = {
    "align_mlp.a_fc.weight": (1024, 768), "align_mlp.a_fc.bias": (1024,),
    "crossattn.attn.in_proj_weight": (3072, 1024), "crossattn.attn.in_proj_bias": (3072,),
    "crossattn.attn.out_proj.weight": (1024, 1024), "crossattn.attn.out_proj.bias": (1024,),
    "crossattn.attn_cross.in_proj_weight": (3072, 1024), "crossattn.attn_cross.in_proj_bias": (3072,),
    "crossattn.attn_cross.out_proj.weight": (1024, 1024), "crossattn.attn_cross.out_proj.bias": (1024,),
    **{f"crossattn.{ln}.{p}": (1024,) for ln in ("ln_1", "ln_2", "ln_text", "ln_visual") for p in ("weight", "bias")},
    "crossattn.mlp.c_fc.weight": (4096, 1024), "crossattn.mlp.c_fc.bias": (4096,),
    "crossattn.mlp.c_proj.weight": (1024, 4096), "crossattn.mlp.c_proj.bias": (1024,),
    "projects.weight": (192, 1024, 1, 1), "projects.bias": (192,),
    "resize_layers.weight": (192, 192, 2, 2), "resize_layers.bias": (192,),
    "layer1_rn.weight": (128, 192, 3, 3),
    **{f"resConfUnit{u}.conv{c}.{p}": s for u in (1, 2) for c in (1, 2)
       for p, s in (("weight", (128, 128, 3, 3)), ("bias", (128,)))},
    **{f"out_conv{u}.{p}": s for u in (1, 2) for p, s in (("weight", (128, 128, 1, 1)), ("bias", (128,)))},
    **{f"output_conv_{m}1.{p}": s for m in ("scale", "shift") for p, s in (("weight", (64, 128, 3, 3)), ("bias", (64,)))},
    **{f"output_conv_{m}2.0.{p}": s for m in ("scale", "shift") for p, s in (("weight", (32, 64, 3, 3)), ("bias", (32,)))},
    **{f"output_conv_{m}2.2.{p}": s for m in ("scale", "shift") for p, s in (("weight", (1, 32, 1, 1)), ("bias", (1,)))},
}


def test_paper_head_has_the_released_keys_shapes_and_size():
    head = ScaleMapModel(get_preset("paper").head)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == RELEASED_SHAPES
    assert sum(p.numel() for p in head.parameters()) / 1e6 == pytest.approx(18.96, abs=0.01)


def _reference_block(block: CrossAttentionBlock, x, text):
    """The released forward: seq-first nn.MultiheadAttention calls, written as the authors did."""
    xs, ts = x.transpose(0, 1), text.transpose(0, 1)
    ln1 = block.ln_1(xs)
    xs = xs + block.attn(ln1, ln1, ln1, need_weights=False)[0]
    xs = xs + block.attn_cross(block.ln_visual(xs), block.ln_text(ts), block.ln_text(ts), need_weights=False)[0]
    xs = xs + block.mlp(block.ln_2(xs))
    return xs.transpose(0, 1)


def test_written_out_attention_matches_nn_multihead_attention():
    torch.manual_seed(0)
    block = CrossAttentionBlock(64, 4).eval()
    for p in block.parameters():  # non-trivial LayerNorm affine and biases too
        nn.init.normal_(p, std=0.2)
    x, text = torch.randn(2, 30, 64), torch.randn(2, 1, 64)
    torch.testing.assert_close(block(x, text), _reference_block(block, x, text), rtol=1e-5, atol=1e-5)


def test_maps_are_positive_at_the_input_size():
    cfg = get_preset("tiny").head
    head = ScaleMapModel(cfg)
    nn.init.normal_(head.output_conv_scale2[2].weight, std=1.0)
    out = head(torch.randn(2, 4 * 5, cfg.in_channels), torch.randn(2, cfg.text_channels), (4, 5))
    assert out.scale.shape == out.shift.shape == (2, 1, 56, 70)
    assert out.scale_mid.shape == (2, cfg.features // 2, 32, 40)
    assert (out.scale > 0).all() and (out.shift > 0).all()
    assert out.scale.std() > 0


def test_fresh_head_starts_from_constant_maps():
    cfg = HeadConfig(in_channels=64, mid_channels=16, text_channels=32, features=16, num_heads=4)
    out = ScaleMapModel(cfg)(torch.randn(1, 6, 64), torch.randn(1, 32), (2, 3))
    torch.testing.assert_close(out.scale, torch.full_like(out.scale, cfg.scale_coef))
    torch.testing.assert_close(out.shift, torch.full_like(out.shift, cfg.shift_coef))
