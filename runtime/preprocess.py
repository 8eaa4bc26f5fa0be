"""Torch-free preprocessing: frame -> normalized NCHW batch, and depth back to frame size.

The model was trained on images resized with ``F.interpolate(mode="bilinear",
align_corners=True)`` (for Depth Anything and DINOv2 alike), so the resize here reproduces that exactly
(float32, same source-index arithmetic as PyTorch's CPU kernel) instead of using cv2.resize,
whose half-pixel mapping is ``align_corners=False`` and whose weights are fixed-point.

Speed: the resize is separable and gathers whole rows first (cheap, contiguous), converting to
float32 only the rows it keeps; the column pass gathers from the flattened ``W*C`` axis. The
index/weight plans are cached per (input length, output length) and the temporaries live in
per-thread scratch buffers (safe to call from several threads; results are always fresh arrays
unless ``out=`` is given).
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from runtime.errors import FrameError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Full-scale value per accepted integer dtype: a frame is divided by it to land in [0, 1].
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}

Frames = Union[np.ndarray, Sequence[np.ndarray]]


@dataclass(frozen=True)
class _AxisPlan:
    """Bilinear align_corners plan for one axis: out[j] = lerp(in[i0[j]], in[i1[j]], w[j])."""

    i0: np.ndarray  # intp [n_out]
    i1: np.ndarray  # intp [n_out]
    w: np.ndarray   # float32 [n_out], weight of i1


@functools.lru_cache(maxsize=64)
def _axis_plan(n_in: int, n_out: int) -> _AxisPlan:
    # Same float32 arithmetic as PyTorch's CPU kernel (area_pixel_compute_scale/source_index),
    # so floor() lands on the same source index even where the product is nearly an integer.
    scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0.0)
    src = np.arange(n_out, dtype=np.float32) * scale
    i0 = np.minimum(src.astype(np.intp), n_in - 1)
    w = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    for a in (i0, i1, w):
        a.setflags(write=False)
    return _AxisPlan(i0=i0, i1=i1, w=w)


@functools.lru_cache(maxsize=64)
def _flat_column_plan(n_in: int, n_out: int, channels: int) -> _AxisPlan:
    """The column plan expanded to the flattened (W*C) axis of a row-major [H, W, C] array."""
    p = _axis_plan(n_in, n_out)
    ch = np.arange(channels)
    i0 = (p.i0[:, None] * channels + ch).ravel()
    i1 = (p.i1[:, None] * channels + ch).ravel()
    w = np.repeat(p.w, channels)
    for a in (i0, i1, w):
        a.setflags(write=False)
    return _AxisPlan(i0=i0, i1=i1, w=w)


def _lerp_(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a + (b - a) * w, in place in a and b (float32 arrays the caller owns)."""
    np.subtract(b, a, out=b)
    np.multiply(b, w, out=b)
    np.add(a, b, out=a)
    return a


_SCRATCH = threading.local()
_SCRATCH_MAX = 12  # buffers kept per thread (a few shapes: preprocess and resize_back)


def _scratch(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread reusable buffer: fresh multi-MB temporaries per frame cost page faults
    (glibc hands them back to the OS), which doubled the resize time when measured."""
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (name, shape, np.dtype(dtype))
    if key not in buffers:
        if len(buffers) >= _SCRATCH_MAX:
            buffers.clear()  # many different sizes: start over rather than grow
        buffers[key] = np.empty(shape, dtype=dtype)
    return buffers[key]


def _gather_rows(flat: np.ndarray, index: np.ndarray, name: str) -> np.ndarray:
    """flat[index] as float32 [len(index), flat.shape[1]] in a scratch buffer."""
    out = _scratch(name, (len(index), flat.shape[1]), np.dtype(np.float32))
    if flat.dtype == np.float32:
        return np.take(flat, index, axis=0, out=out)
    raw = _scratch(name + "_raw", out.shape, flat.dtype)
    np.copyto(out, np.take(flat, index, axis=0, out=raw), casting="unsafe")
    return out


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    """(height, width) as two positive ints, or FrameError."""
    try:
        h, w = (int(s) for s in size)
        valid = (h, w) == tuple(size) and h > 0 and w > 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise FrameError(f"size must be two positive integers (height, width), got {size!r}")
    return h, w


def resize_bilinear_align_corners(img: np.ndarray, size: Sequence[int],
                                  out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear resize matching ``F.interpolate(mode="bilinear", align_corners=True)``.

    img: [H, W] or [H, W, C], any real dtype (uint8 and uint16 are not rescaled).
    size: (out_h, out_w). out: optional float32 C-contiguous buffer of the result's shape.
    Returns float32 [out_h, out_w] or [out_h, out_w, C], C-contiguous (``out`` if given).
    """
    out_h, out_w = _check_size(size)
    if img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise FrameError(f"resize expects [H, W] or [H, W, C], got shape {img.shape}")
    if img.dtype.kind not in "uif":
        raise FrameError(f"resize expects integer or float pixels, got dtype {img.dtype}")
    h, w = img.shape[:2]
    c = img.shape[2] if img.ndim == 3 else 1
    flat = np.ascontiguousarray(img).reshape(h, w * c)
    rows = _axis_plan(h, out_h)
    mid = _lerp_(_gather_rows(flat, rows.i0, "top"), _gather_rows(flat, rows.i1, "bottom"),
                 rows.w[:, None])
    cols = _flat_column_plan(w, out_w, c)
    shape = (out_h, out_w, c) if img.ndim == 3 else (out_h, out_w)
    left = np.empty((out_h, out_w * c), np.float32) if out is None else _flat_view(out, shape)
    np.take(mid, cols.i0, axis=1, out=left)
    right = np.take(mid, cols.i1, axis=1, out=_scratch("right", left.shape, left.dtype))
    _lerp_(left, right, cols.w)
    return left.reshape(shape) if out is None else out


def _flat_view(out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """out as [out_h, out_w * C] without a copy, after checking it can hold the result."""
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise FrameError(f"out must be a C-contiguous float32 array of shape {shape}")
    return out.reshape(shape[0], -1)


def _rgb_channels(frame: np.ndarray) -> np.ndarray:
    """Validate a frame and return it as [H, W, 1] (gray) or [H, W, 3] (RGB), dtype unchanged."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"a frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype not in _FULL_SCALE:
        raise FrameError(f"frame dtype {frame.dtype} is not supported: use uint8 or uint16")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4) or 0 in frame.shape[:2]:
        raise FrameError(
            f"frame shape {frame.shape} is not an image: use [H,W], [H,W,1], [H,W,3] or [H,W,4]")
    return frame[:, :, :3]  # RGBA: the alpha channel carries no depth cue, drop it


def to_rgb_float(frame: np.ndarray) -> np.ndarray:
    """uint8/uint16 gray, RGB or RGBA frame -> float32 [H, W, 3] RGB in [0, 1].

    uint8 is divided by 255, uint16 by 65535; gray is repeated on three channels.
    """
    rgb = _rgb_channels(frame)
    out = rgb.astype(np.float32) * np.float32(1.0 / _FULL_SCALE[frame.dtype])
    return np.ascontiguousarray(np.broadcast_to(out, out.shape[:2] + (3,)))


@dataclass(frozen=True)
class Preprocessor:
    """Frames -> float32 [B, 3, H, W] batch at the model's fixed input size.

    Each frame is resized (bilinear, align_corners=True) to ``input_size``, scaled to [0, 1]
    and normalized as ``(x - mean) / std``. Use mean=(0, 0, 0), std=(1, 1, 1) when the graph
    normalizes internally (the bundle manifest says which).
    """

    input_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", _check_size(self.input_size))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise FrameError("mean and std must have three values (R, G, B)")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if any(not s > 0 for s in self.std):
            raise FrameError(f"std must be positive, got {self.std}")

    @classmethod
    def for_bundle(cls, bundle) -> "Preprocessor":
        """The preprocessing a bundle's manifest asks for (`runtime.bundle.Preprocessing`): its
        input size, and its mean/std unless the graph normalizes itself (then identity)."""
        pre = bundle.preprocessing
        if pre.normalized_in_graph:
            return cls((pre.height, pre.width), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        return cls((pre.height, pre.width), mean=pre.mean, std=pre.std)

    def __call__(self, frames: Frames) -> np.ndarray:
        """frames: one [H,W(,C)] frame, a [B,H,W,C] array or a sequence of frames (sizes may
        differ). Returns float32 [B, 3, input_h, input_w], C-contiguous."""
        batch = [frames] if isinstance(frames, np.ndarray) and frames.ndim < 4 else list(frames)
        if not batch:
            raise FrameError("no frames to preprocess")
        out = np.empty((len(batch), 3) + self.input_size, dtype=np.float32)
        for i, frame in enumerate(batch):
            self._fill(frame, out[i])
        return out

    def _fill(self, frame: np.ndarray, out: np.ndarray) -> None:
        """Resize and normalize one frame into out: float32 [3, h, w] (a view of the batch)."""
        rgb = _rgb_channels(frame)
        # Resize the integer frame first (fewer pixels to convert), then fold the [0, 1]
        # scaling and the normalization into one multiply-add per channel, x * k - m, written
        # straight into the planar output (cheaper than a transposed copy of the HWC result).
        shape = self.input_size + rgb.shape[2:]
        small = resize_bilinear_align_corners(
            rgb, self.input_size, out=_scratch("preprocess", shape, np.dtype(np.float32)))
        for ch in range(3):
            std = np.float32(self.std[ch])
            k = np.float32(1.0 / _FULL_SCALE[frame.dtype]) / std
            src = small[:, :, min(ch, small.shape[2] - 1)]  # a gray frame feeds all three
            np.multiply(src, k, out=out[ch])
            out[ch] -= np.float32(self.mean[ch]) / std


def resize_back(depth: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Model-resolution maps back to the frame size (bilinear, align_corners=True).

    depth: float [B, h, w] or [h, w]. size: (H, W). Returns float32 [B, H, W] or [H, W].
    """
    if depth.ndim == 2:
        return resize_bilinear_align_corners(depth, size)
    if depth.ndim != 3:
        raise FrameError(f"resize_back expects [B, h, w] or [h, w], got shape {depth.shape}")
    # The batch rides along as channels: one pass over all maps.
    out = resize_bilinear_align_corners(depth.transpose(1, 2, 0), size)
    return np.ascontiguousarray(out.transpose(2, 0, 1))
