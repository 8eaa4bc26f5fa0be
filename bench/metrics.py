"""Numbers the benchmark reports: latency statistics, depth agreement, temporal flicker (numpy only).

Definitions (written once here, quoted in RESULTS.md):
- latency: median and 90th percentile (linear interpolation) of per-call wall times, in ms;
- agreement with a reference depth: relative error |d - d_ref| / d_ref and delta1 agreement
  max(d / d_ref, d_ref / d) < 1.25, both pooled over all finite, positive pixels of all frames
  at the frames' own resolution (median of the relative error; mean of the delta1 indicator);
- flicker: for each pair of consecutive frames, the "static" pixels are those whose grayscale
  value (frames box-blurred 5x5 at half resolution, 0..255) changed by less than
  `STATIC_THRESHOLD`; the pair's flicker is the median over static pixels of
  |d_t - d_{t-1}| / ((d_t + d_{t-1}) / 2); the clip's flicker is the mean over pairs that have at
  least `MIN_STATIC_FRACTION` static pixels, in percent. A flicker-free method on a static
  region scores 0; the image itself did not change there, so any change of depth is flicker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

DELTA1 = 1.25
STATIC_THRESHOLD = 2.0     # grey levels (0..255) after the blur
MIN_STATIC_FRACTION = 0.01


def latency(ms: Sequence[float]) -> Dict[str, float]:
    """Per-call times in ms -> {"median", "p90", "n"}; empty input gives NaNs."""
    values = np.asarray(list(ms), dtype=np.float64)
    if values.size == 0:
        return {"median": float("nan"), "p90": float("nan"), "n": 0}
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90)), "n": int(values.size)}


@dataclass(frozen=True)
class Agreement:
    """Candidate depth vs reference depth, pooled over pixels of all frames."""

    frames: int
    pixels: int
    median_rel: float
    p90_rel: float
    delta1: float


def agreement(candidate: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> Agreement:
    """Lists of depth maps [H, W] (same shapes pairwise) -> `Agreement`."""
    if len(candidate) != len(reference) or not candidate:
        raise ValueError(f"need the same, non-zero number of frames (got {len(candidate)} and {len(reference)})")
    rel, within = [], []
    for got, ref in zip(candidate, reference):
        if got.shape != ref.shape:
            raise ValueError(f"depth shapes differ: {got.shape} vs {ref.shape}")
        got, ref = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
        ok = np.isfinite(got) & np.isfinite(ref) & (got > 0) & (ref > 0)
        rel.append(np.abs(got[ok] - ref[ok]) / ref[ok])
        within.append(np.maximum(got[ok] / ref[ok], ref[ok] / got[ok]) < DELTA1)
    rel_all, within_all = np.concatenate(rel), np.concatenate(within)
    if rel_all.size == 0:
        return Agreement(len(candidate), 0, float("nan"), float("nan"), float("nan"))
    return Agreement(len(candidate), int(rel_all.size), float(np.median(rel_all)),
                     float(np.percentile(rel_all, 90)), float(within_all.mean()))


def _gray_small(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> blurred grey float32 [H/2, W/2] in 0..255."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(frame[:, :, :3]), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (gray.shape[1] // 2, gray.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return cv2.blur(small.astype(np.float32), (5, 5))


def static_masks(frames: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Frames (RGB uint8) -> for each consecutive pair a bool mask [H/2, W/2] of static pixels."""
    grays = [_gray_small(f) for f in frames]
    return [np.abs(b - a) < STATIC_THRESHOLD for a, b in zip(grays, grays[1:])]


@dataclass(frozen=True)
class Flicker:
    """Frame-to-frame change of depth on static pixels (see the module docstring)."""

    percent: float          # mean over usable pairs of the per-pair median, in %
    pairs: int              # pairs with enough static pixels
    static_fraction: float  # mean fraction of static pixels over all pairs


def flicker(depths: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> Flicker:
    """depths: [H, W] per frame; masks: from `static_masks` (one per consecutive pair)."""
    import cv2

    if len(masks) != len(depths) - 1:
        raise ValueError(f"need one mask per consecutive pair: {len(depths)} depths, {len(masks)} masks")
    per_pair, fractions = [], []
    for (a, b), mask in zip(zip(depths, depths[1:]), masks):
        size = (mask.shape[1], mask.shape[0])
        a = cv2.resize(a.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        ok = mask & np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        fractions.append(float(ok.mean()))
        if ok.mean() >= MIN_STATIC_FRACTION:
            per_pair.append(float(np.median(np.abs(b[ok] - a[ok]) / ((a[ok] + b[ok]) / 2))))
    percent = 100.0 * float(np.mean(per_pair)) if per_pair else float("nan")
    return Flicker(percent=percent, pairs=len(per_pair), static_fraction=float(np.mean(fractions)) if fractions else 0.0)


def ratio(numerator: Optional[float], denominator: Optional[float]) -> float:
    """numerator / denominator, NaN when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or not denominator or np.isnan(denominator):
        return float("nan")
    return float(numerator) / float(denominator)
