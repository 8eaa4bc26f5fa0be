"""The video's colour range policy: a fixed range in metres, from the bundle or from a first frame.

A fixed range keeps one colour meaning one distance for the whole video (a per-frame range would
make the colours flicker with the scene).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np

Range = Tuple[float, float]

# Fixed colour range (metres) per preset, when the bundle's manifest has no "display_range_m".
# None means "auto": fixed from the first frame (the untrained tiny preset has no metric scale).
PRESET_RANGES: Dict[str, Optional[Range]] = {"kitti": (1.0, 80.0), "tiny": None}
INDOOR_RANGE = (0.5, 10.0)  # paper, sunrgbd, paper_v2 and unknown presets


def default_range(manifest: dict) -> Optional[Range]:
    """The colour range a bundle asks for: manifest "display_range_m", else by preset; None = auto."""
    if manifest.get("display_range_m"):
        lo, hi = manifest["display_range_m"]
        return float(lo), float(hi)
    return PRESET_RANGES.get(manifest.get("preset", ""), INDOOR_RANGE)


def auto_range(depth_m: np.ndarray) -> Range:
    """A range from one depth map [H, W]: its 2nd..98th percentiles over valid pixels, rounded out."""
    valid = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
    if valid.size == 0:
        return INDOOR_RANGE
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
