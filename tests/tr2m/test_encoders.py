import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tr2m.config import get_preset
from tr2m.encoders import ImageEncoder, RelativeDepth, TextEncoder, tokenize
from tr2m.encoders.pos_embed import interpolate_table


def _bicubic_weights(t: float, a: float = -0.75) -> np.ndarray:
    """Keys cubic convolution weights for the 4 taps around a fractional offset t."""
    def k(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0
    return np.array([k(t + 1), k(t), k(1 - t), k(2 - t)])


def _numpy_resize_axis(table: np.ndarray, out: int, scale: float, axis: int) -> np.ndarray:
    """Independent bicubic along one axis, coordinates from the scale factor (half-pixel)."""
    size = table.shape[axis]
    rows = []
    for i in range(out):
        src = (i + 0.5) / scale - 0.5
        base = int(np.floor(src))
        taps = np.clip(np.arange(base - 1, base + 3), 0, size - 1)
        rows.append(np.tensordot(_bicubic_weights(src - base), np.take(table, taps, axis=axis), axes=([0], [axis])))
    return np.moveaxis(np.stack(rows), 0, axis)


def test_pos_embed_follows_the_hub_formula():
    side, grid = 37, (31, 40)
    ramp = torch.arange(side * side, dtype=torch.float32).reshape(1, side * side, 1) / 100
    table = torch.cat([ramp, torch.sin(ramp)], dim=2)
    ours = interpolate_table(table, grid)
    # Bit for bit: the hub's own call (scale factor with the 0.1 offset, bicubic, no antialias).
    square = table.reshape(1, side, side, 2).permute(0, 3, 1, 2)
    hub = F.interpolate(square, scale_factor=(31.1 / 37, 40.1 / 37), mode="bicubic", antialias=False)
    assert torch.equal(ours, hub.permute(0, 2, 3, 1).reshape(1, -1, 2))
    # Independently: a numpy bicubic with the same coordinate mapping.
    ref = square[0].numpy().transpose(1, 2, 0)
    ref = _numpy_resize_axis(_numpy_resize_axis(ref, 31, 31.1 / 37, 0), 40, 40.1 / 37, 1)
    np.testing.assert_allclose(ours[0].numpy(), ref.reshape(-1, 2), rtol=1e-5, atol=1e-5)
    # And it is not what `size=` (transformers >= 4.45) gives.
    by_size = F.interpolate(square, size=grid, mode="bicubic", align_corners=False)
    assert not torch.allclose(ours, by_size.permute(0, 2, 3, 1).reshape(1, -1, 2), atol=1e-3)


@pytest.fixture(scope="module")
def tiny_cfg():
    return get_preset("tiny")


def test_image_encoder_is_final_norm_patch_tokens_with_hub_positions(tiny_cfg):
    torch.manual_seed(0)
    encoder = ImageEncoder.from_config(tiny_cfg.image, pretrained=False)
    image = torch.randn(2, 3, 56, 70)
    tokens = encoder(image)
    assert tokens.shape == (2, 4 * 5, tiny_cfg.image.hidden_size)
    hf = encoder.model
    hidden = hf(pixel_values=image, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(tokens, hf.layernorm(hidden)[:, 1:])
    # The embedding the encoder used is the hub-formula table.
    pos = hf.embeddings.interpolate_pos_encoding(torch.zeros(1, 21, 1), 56, 70)
    torch.testing.assert_close(pos[:, 1:], interpolate_table(hf.embeddings.position_embeddings[:, 1:], (4, 5)))
    # At the native 518x518 grid the table comes back unchanged.
    native = hf.embeddings.interpolate_pos_encoding(torch.zeros(1, 37 * 37 + 1, 1), 518, 518)
    assert torch.equal(native, hf.embeddings.position_embeddings)


def test_depth_anything_neck_reads_the_last_four_blocks_raw_relu_disparity(tiny_cfg):
    torch.manual_seed(0)
    relative = RelativeDepth.from_config(tiny_cfg.relative, pretrained=False)
    backbone = relative.model.backbone
    assert list(backbone.config.out_indices) == [1, 2, 3, 4] == list(range(tiny_cfg.relative.num_layers - 3, tiny_cfg.relative.num_layers + 1))
    assert get_preset("paper").relative.out_indices == (9, 10, 11, 12)
    seen = {}
    hook = relative.model.neck.register_forward_pre_hook(lambda m, args: seen.update(n=len(args[0])))
    disparity = relative(torch.randn(1, 3, 56, 70))
    hook.remove()
    assert seen["n"] == 4
    assert disparity.shape == (1, 1, 56, 70) and (disparity >= 0).all()
    assert relative.model.config.depth_estimation_type == "relative"


def test_loading_depth_anything_checks_the_presets_out_indices(tiny_cfg, tmp_path):
    # A hub id or folder whose neck reads other blocks (V2's choice, say) must fail loudly,
    # not run with the preset's name and different numbers.
    torch.manual_seed(0)
    other = dataclasses.replace(tiny_cfg.relative, out_indices=(0, 1, 2, 3))
    RelativeDepth.from_config(other, pretrained=False).save_pretrained(tmp_path / "other")
    RelativeDepth.from_config(tiny_cfg.relative, pretrained=False).save_pretrained(tmp_path / "same")
    with pytest.raises(ValueError, match=r"blocks \[0, 1, 2, 3\], but the preset expects \[1, 2, 3, 4\]"):
        RelativeDepth.from_config(tiny_cfg.relative, source=str(tmp_path / "other"))
    loaded = RelativeDepth.from_config(tiny_cfg.relative, source=str(tmp_path / "same"))
    assert list(loaded.model.backbone.config.out_indices) == [1, 2, 3, 4]


def test_openai_tokenization_is_pinned():
    ids = tokenize("a photo of a cat")
    assert ids.shape == (1, 77) and ids.dtype == torch.int64
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[0, 7:].eq(0).all()
    long = tokenize("word " * 100)
    assert long.shape == (1, 77) and long[0, -1].item() == 49407
    assert tokenize("Tom &amp; Jerry").tolist() == tokenize("Tom & Jerry").tolist()


def test_text_encoder_is_quick_gelu_and_pools_the_eot_token(tiny_cfg):
    torch.manual_seed(0)
    text = TextEncoder.from_config(tiny_cfg.text, pretrained=False)
    assert text.model.config.hidden_act == "quick_gelu"
    ids = tokenize(["an office", "a street at night"])
    emb = text(ids)
    assert emb.shape == (2, tiny_cfg.text.projection_dim)
    hidden = text.model.text_model(input_ids=ids).last_hidden_state
    eot = ids.argmax(dim=-1)
    torch.testing.assert_close(emb, text.model.text_projection(hidden[torch.arange(2), eot]))


def test_encoders_stay_frozen_through_train(tiny_model):
    tiny_model.train()
    try:
        for encoder in (tiny_model.relative, tiny_model.image_encoder, tiny_model.text_encoder):
            assert not any(p.requires_grad for p in encoder.parameters())
            assert not any(m.training for m in encoder.model.modules())
        assert all(p.requires_grad for p in tiny_model.head.parameters())
        assert tiny_model.head.training
    finally:
        tiny_model.eval()


def test_missing_local_folder_is_a_clear_error(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        ImageEncoder.from_config(tiny_cfg.image, source=str(tmp_path / "nope"))
