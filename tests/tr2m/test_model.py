import os
import subprocess
import sys

import pytest
import torch

import tr2m
from tr2m.transforms import prepare


def test_outputs_shapes(tiny_model):
    cfg = tiny_model.config
    with torch.no_grad():
        out = tiny_model(torch.randn(2, 3, *cfg.input_size), tiny_model.encode_text(["an office", "a road"]))
    for key in ("depth", "scale", "shift", "rel"):
        assert out[key].shape == (2, 1, *cfg.input_size), key
    assert out["scale_mid"].shape == (2, cfg.head.features // 2, 8 * 4, 8 * 5)
    assert out["embedding"].shape == (2, cfg.image.hidden_size)


def test_depth_is_the_inverse_affine_of_relative_disparity(tiny_model):
    with torch.no_grad():
        out = tiny_model(torch.randn(1, 3, *tiny_model.config.input_size), tiny_model.encode_text("a kitchen"))
    expected = 1.0 / (out["scale"] * out["rel"] + out["shift"])
    torch.testing.assert_close(out["depth"], expected)
    assert out["rel"].std() > 0.1 and out["scale"].std() > 0  # the fixture makes every path matter


def test_predict_on_real_frames_is_finite_positive_at_their_own_size(tiny_model, real_frames):
    depths = tiny_model.predict(real_frames, "an indoor scene")
    for frame, depth in zip(real_frames, depths):
        assert depth.shape == frame.shape[:2]
        assert torch.isfinite(depth).all() and (depth > 0).all()


def test_predict_matches_the_core_on_a_frame_at_the_input_size(tiny_model, real_frames):
    h, w = tiny_model.config.input_size
    frame = real_frames[0][:h, :w]
    batch = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        core = tiny_model(prepare(batch, (h, w), tiny_model.config.mean, tiny_model.config.std),
                          tiny_model.encode_text("a bedroom"))["depth"][0, 0]
    torch.testing.assert_close(tiny_model.predict([frame], "a bedroom")[0], core)


def test_predict_rejects_mismatched_captions(tiny_model, real_frames):
    with pytest.raises(ValueError, match="2 captions for 3 images"):
        tiny_model.predict(real_frames, ["a", "b"])


def test_save_and_load_through_local_folders_with_the_hub_off(tmp_path, tiny_model):
    tr2m.save_pretrained(tiny_model, tmp_path / "saved")
    script = (
        "import sys, torch, tr2m\n"
        "m = tr2m.from_pretrained(sys.argv[1])\n"
        "torch.manual_seed(0); x = torch.randn(1, 3, *m.config.input_size)\n"
        "with torch.no_grad(): d = m(x, m.encode_text('a hallway'))['depth']\n"
        "torch.save(d, sys.argv[2])\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "saved"), str(tmp_path / "d.pt")],
                   check=True, env=env, cwd=tmp_path)
    torch.manual_seed(0)
    x = torch.randn(1, 3, *tiny_model.config.input_size)
    with torch.no_grad():
        expected = tiny_model(x, tiny_model.encode_text("a hallway"))["depth"]
    torch.testing.assert_close(torch.load(tmp_path / "d.pt", weights_only=True), expected)


@pytest.mark.slow
def test_paper_preset_builds_with_the_released_head_size():
    model = tr2m.create_model("paper", pretrained=False)
    assert model.trainable_parameters() / 1e6 == pytest.approx(18.96, abs=0.01)
    assert model.config.input_size == (434, 560)


def test_randomize_for_demo_gives_a_random_model_depth_that_varies():
    """A fresh random-init model has constant A and B maps (its last convs are zeroed), so its
    depth is a rescaled copy of a disparity near zero; randomize_for_demo (in place) makes both
    maps vary over the image, with A, B and depth finite and positive."""
    torch.manual_seed(0)
    model = tr2m.create_model("tiny", pretrained=False)
    image = torch.rand(1, 3, *model.config.input_size)

    def spread():
        with torch.no_grad():
            out = model(image, model.encode_text("a corridor"))
        assert all(torch.isfinite(out[k]).all() and (out[k] > 0).all() for k in ("scale", "shift", "depth"))
        return {k: float(out[k].std() / out[k].mean().abs()) for k in ("rel", "scale", "shift")}

    before = spread()
    assert tr2m.randomize_for_demo(model, seed=0) is model
    after = spread()
    assert max(before["scale"], before["shift"]) < 1e-3, before
    assert min(after.values()) > 0.05, after
