"""The video's colour range policy: a fixed range in metres, from the bundle or from a first frame.

The bundle carries its range (manifest "display_range_m", from the preset's config at export);
the runtime keeps no table of its own.

A fixed range keeps one colour meaning one distance for the whole video (a per-frame range would
make the colours flicker with the scene).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import numpy as np

from .errors import Tr2mRuntimeWarning

Range = Tuple[float, float]

FALLBACK_RANGE = (0.5, 10.0)  # a first frame without a single valid depth: a room-sized range


def default_range(manifest: dict) -> Optional[Range]:
    """The colour range a bundle asks for: its manifest's "display_range_m" (written by export from
    the preset's config); None (or an older bundle without the field) means auto: fixed from the
    first frame, which an older bundle says once."""
    if "display_range_m" not in manifest:
        warnings.warn("this bundle predates display_range_m (exported by an older tr2m): the video's colour range "
                      "is fixed from the first frame; pass --range MIN:MAX or re-export the bundle",
                      Tr2mRuntimeWarning, stacklevel=2)
        return None
    span = manifest["display_range_m"]
    if span is None:
        return None
    lo, hi = (float(v) for v in span)
    return lo, hi


def auto_range(depth_m: np.ndarray) -> Range:
    """A range from one depth map [H, W]: its 2nd..98th percentiles over valid pixels, rounded out."""
    valid = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
    if valid.size == 0:
        return FALLBACK_RANGE
    lo, hi = np.percentile(valid, [2, 98])
    lo, hi = _round_down(float(lo)), _round_up(float(hi))
    return (lo, hi) if hi > lo else (lo, lo * 2 + 1)


def _round_down(x: float) -> float:
    """x rounded down to one significant digit (0.63 -> 0.6); 0 for x <= 0."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x))
    return round(math.floor(x / 10.0 ** e) * 10.0 ** e, -e)


def _round_up(x: float) -> float:
    """x rounded up to one significant digit (273 -> 300)."""
    e = math.floor(math.log10(x))
    return round(math.ceil(x / 10.0 ** e) * 10.0 ** e, -e)
