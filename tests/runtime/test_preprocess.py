"""runtime.preprocess against PyTorch's F.interpolate(bilinear, align_corners=True)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.errors import FrameError
from runtime.preprocess import (IMAGENET_MEAN, IMAGENET_STD, Preprocessor, resize_back,
                                resize_bilinear_align_corners, to_rgb_float)
from tests.runtime.fixtures_io import NYU_RGB, REPO, require


def torch_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Reference: [H,W] or [H,W,C] -> float32, via F.interpolate on NCHW."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    t = t[None, None] if img.ndim == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=True)[0]
    return (out[0] if img.ndim == 2 else out.permute(1, 2, 0)).numpy()


def torch_preprocess(rgb_u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Reference preprocessing as the PyTorch side does it: /255, resize, normalize."""
    t = torch.from_numpy(rgb_u8).permute(2, 0, 1)[None].float() / 255.0
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((t - mean) / std).numpy()


SIZES = [((480, 640), (434, 560)), ((1080, 1920), (434, 560)), ((434, 560), (480, 640)),
         ((31, 40), (434, 560)), ((7, 5), (13, 1)), ((1, 1), (3, 4)), ((1, 9), (5, 3)),
         ((100, 37), (37, 100)), ((5, 5), (5, 5))]


@pytest.mark.parametrize("in_size,out_size", SIZES)
@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_resize_matches_torch_on_random_data(rng, in_size, out_size, channels):
    shape = in_size if channels is None else in_size + (channels,)
    img = rng.random(shape, dtype=np.float32)
    out = resize_bilinear_align_corners(img, out_size)
    assert out.dtype == np.float32 and out.shape == out_size + shape[2:]
    np.testing.assert_allclose(out, torch_resize(img, out_size), rtol=0, atol=1e-6)


def test_resize_of_integer_input_equals_resize_of_its_float_values(rng):
    img16 = rng.integers(0, 65536, (480, 640, 3), dtype=np.uint16)
    out = resize_bilinear_align_corners(img16, (434, 560))
    # float32 rounding relative to the 16-bit full scale (the lerp forms differ slightly)
    np.testing.assert_allclose(out, torch_resize(img16.astype(np.float32), (434, 560)),
                               rtol=0, atol=65535 * 1e-6)


def test_results_are_fresh_arrays_despite_reused_scratch_buffers(rng):
    a_img, b_img = rng.random((2, 48, 64, 3), dtype=np.float32)
    a = resize_bilinear_align_corners(a_img, (20, 30))
    a_copy = a.copy()
    b = resize_bilinear_align_corners(b_img, (20, 30))
    np.testing.assert_array_equal(a, a_copy)
    assert not np.shares_memory(a, b)


def test_resize_is_safe_from_several_threads(rng):
    from concurrent.futures import ThreadPoolExecutor

    images = [rng.random((120 + i, 160, 3), dtype=np.float32) for i in range(8)]
    serial = [resize_bilinear_align_corners(img, (97, 131)) for img in images]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            threaded = list(pool.map(lambda im: resize_bilinear_align_corners(im, (97, 131)),
                                     images))
            for a, b in zip(serial, threaded):
                np.testing.assert_array_equal(a, b)


def test_resize_writes_into_out_and_rejects_a_wrong_buffer(rng):
    img = rng.random((40, 50, 3), dtype=np.float32)
    out = np.empty((20, 25, 3), np.float32)
    assert resize_bilinear_align_corners(img, (20, 25), out=out) is out
    np.testing.assert_allclose(out, torch_resize(img, (20, 25)), atol=1e-6)
    with pytest.raises(FrameError, match="out must be"):
        resize_bilinear_align_corners(img, (20, 25), out=np.empty((20, 25), np.float32))


@pytest.mark.parametrize("size", [(0, 5), (5,), (2.5, 4), ("a", 4), (-1, 3)])
def test_resize_rejects_bad_sizes(size):
    with pytest.raises(FrameError, match="size must be two positive integers"):
        resize_bilinear_align_corners(np.zeros((4, 4), np.float32), size)


def test_preprocessor_matches_torch_on_a_real_frame():
    bgr = cv2.imread(str(require(NYU_RGB)), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    batch = Preprocessor(input_size=(434, 560))(rgb)
    assert batch.shape == (1, 3, 434, 560) and batch.dtype == np.float32
    assert batch.flags.c_contiguous
    np.testing.assert_allclose(batch, torch_preprocess(rgb, (434, 560)), rtol=0, atol=2e-6)


def test_preprocessor_batches_frames_of_different_sizes(rng):
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(480, 640, 3), (375, 1242, 3)]]
    batch = Preprocessor(input_size=(434, 560))(frames)
    assert batch.shape == (2, 3, 434, 560)
    for frame, planes in zip(frames, batch):
        np.testing.assert_allclose(planes, torch_preprocess(frame, (434, 560))[0], atol=2e-6)


def test_gray_rgba_and_16bit_frames_preprocess_like_their_rgb_equivalent(rng):
    pre = Preprocessor(input_size=(56, 70))
    gray = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (60, 80, 1), dtype=np.uint8)], axis=2)
    expected = pre(rgb)
    for variant in (gray, gray[:, :, None], rgba, rgb.astype(np.uint16) * 257):
        np.testing.assert_allclose(pre(variant), expected, atol=1e-5)


def test_preprocessor_without_normalization_gives_unit_range(rng):
    frame = np.zeros((10, 10, 3), np.uint8)
    frame[..., 0] = 255
    batch = Preprocessor(input_size=(14, 14), mean=(0, 0, 0), std=(1, 1, 1))(frame)
    np.testing.assert_array_equal(batch[0, 0], 1.0)
    np.testing.assert_array_equal(batch[0, 1:], 0.0)


def test_to_rgb_float_scales_and_expands_channels():
    u8 = np.array([[0, 128, 255]], np.uint8)
    np.testing.assert_allclose(to_rgb_float(u8)[0, :, 1], [0, 128 / 255, 1])
    u16 = np.array([[0, 65535]], np.uint16)
    np.testing.assert_array_equal(to_rgb_float(u16[:, :, None])[0, :, 2], [0, 1])
    rgba = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = to_rgb_float(rgba)
    assert out.shape == (2, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, rgba[..., :3] / 255, atol=1e-7)


@pytest.mark.parametrize("frame,message", [
    (np.zeros((4, 4, 3), np.float32), "dtype float32 is not supported"),
    (np.zeros((4, 4, 3), np.int16), "dtype int16 is not supported"),
    (np.zeros((4, 4, 2), np.uint8), "is not an image"),
    (np.zeros((2, 4, 4, 3), np.uint8), "is not an image"),
    (np.zeros((0, 4, 3), np.uint8), "is not an image"),
    ([[1, 2], [3, 4]], "must be a numpy array"),
])
def test_bad_frames_raise_one_line_errors(frame, message):
    with pytest.raises(FrameError, match=message) as info:
        to_rgb_float(frame)
    assert "\n" not in str(info.value)


def test_preprocessor_validates_its_settings():
    with pytest.raises(FrameError, match="std must be positive"):
        Preprocessor(input_size=(14, 14), std=(1, 0, 1))
    with pytest.raises(FrameError, match="three values"):
        Preprocessor(input_size=(14, 14), mean=(0.5,))
    with pytest.raises(FrameError, match="no frames"):
        Preprocessor(input_size=(14, 14))([])


def test_resize_back_matches_torch_for_batches_and_single_maps(rng):
    depth = rng.random((3, 31, 40), dtype=np.float32) * 10
    out = resize_back(depth, (480, 640))
    assert out.shape == (3, 480, 640) and out.flags.c_contiguous
    ref = F.interpolate(torch.from_numpy(depth)[:, None], size=(480, 640), mode="bilinear",
                        align_corners=True)[:, 0].numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(resize_back(depth[1], (480, 640)), ref[1], rtol=1e-6, atol=1e-6)
    with pytest.raises(FrameError, match="resize_back expects"):
        resize_back(depth[None], (4, 4))


def test_preprocessing_a_1080p_frame_is_fast(rng):
    # A loose bound (about 10x the measured time on 2 cores) that catches a slow path.
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    pre = Preprocessor(input_size=(434, 560))
    pre(frame)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        pre(frame)
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.1


def test_runtime_modules_never_import_torch():
    modules = ["runtime.errors", "runtime.atomic", "runtime.preprocess", "runtime.cache",
               "runtime.captions", "runtime.sources", "runtime.colormap", "runtime.sinks"]
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def _edited_bundle(tiny_bundle, tmp_path, **preprocessing):
    import json
    import shutil

    folder = Path(shutil.copytree(tiny_bundle.bundle, tmp_path / "bundle"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["preprocessing"].update(preprocessing)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_every_consumer_honours_normalized_in_graph(tiny_bundle, tmp_path):
    from runtime import Bundle, Engine
    from runtime.keyframe import KeyframePredictor

    folder = _edited_bundle(tiny_bundle, tmp_path, normalized_in_graph=True)
    identity = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    engine = Engine.open(folder, backend="ort-cpu", cache_dir=tmp_path / "cache")
    keyframes = KeyframePredictor(folder, backend="ort-cpu", cache_dir=tmp_path / "cache")
    for pre in (engine.preprocessor, keyframes.preprocessor, Preprocessor.for_bundle(Bundle.open(folder))):
        assert (pre.mean, pre.std) == identity and pre.input_size == (56, 70)
    frame = np.full((4, 4, 3), 255, np.uint8)
    np.testing.assert_allclose(engine.preprocessor(frame), 1.0)  # [0, 1] pixels, as the graph expects
    normal = Preprocessor.for_bundle(Bundle.open(tiny_bundle.bundle))
    assert (normal.mean, normal.std) == (IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("field, value", [("resize", "nearest"), ("align_corners", False), ("layout", "NHWC"),
                                          ("color", "BGR"), ("value_range", [0, 255])])
def test_a_preprocessing_the_runtime_cannot_do_is_refused(tiny_bundle, tmp_path, field, value):
    from runtime import Bundle
    from runtime.errors import BundleError

    with pytest.raises(BundleError, match=f"{field}=.*re-export"):
        Bundle.open(_edited_bundle(tiny_bundle, tmp_path, **{field: value}))
