"""Session fixtures shared by every test package: tiny random models and the real samples."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("TR2M_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _require_shared() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real samples not found at {SHARED_DATA} (set TR2M_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real RGB-depth samples and videos (read-only)."""
    return _require_shared()


@pytest.fixture(scope="session")
def real_frames(shared_data) -> list:
    """Three real RGB frames of different sizes (NYU, KITTI, SUN RGB-D) as uint8 [H,W,3]."""
    import cv2

    paths = [
        shared_data / "metric3d_nyu" / "rgb" / "rgb_00000.jpg",
        shared_data / "metric3d_kitti" / "rgb" / "0000000005.png",
        shared_data / "open3d_testdata_rgbd" / "other_formats" / "SUN_color.jpg",
    ]
    return [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths]


def enliven(model, seed: int = 0):
    """Give a random-init model non-trivial outputs, so parity tests see every path.

    Fresh heads start from constant maps (their last convs are zeroed) and a random Depth
    Anything's disparity is ~1e-7: a comparison would then only test the constant B. Here
    the last convs get small random weights and Depth Anything's convs a Kaiming scale, so
    D_r varies over the image at order 1.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for last in (model.head.output_conv_scale2[2], model.head.output_conv_shift2[2]):
            last.weight.copy_(torch.randn(last.weight.shape, generator=gen) * 0.05)
        for module in list(model.relative.model.neck.modules()) + list(model.relative.model.head.modules()):
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
    return model


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny preset with seeded random weights, enlivened; shared, so tests must not mutate it."""
    import torch
    import tr2m

    torch.manual_seed(0)
    return enliven(tr2m.create_model("tiny", pretrained=False))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
