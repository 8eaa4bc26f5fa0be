"""Depth -> colour over a FIXED metric range, and a colour-bar legend labelled in metres.

A fixed range (not per-frame min-max) keeps colours comparable across frames: the same colour
means the same distance for the whole video. Near is red, far is blue (turbo colormap, linear
in metres); values outside the range are clipped to its ends; invalid depth (NaN, inf, <= 0)
is drawn black.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

INVALID_RGB = (0, 0, 0)


@functools.lru_cache(maxsize=1)
def turbo_lut() -> np.ndarray:
    """Turbo colormap as a read-only uint8 [256, 3] RGB table (index 0 dark blue, 255 dark red)."""
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    lut = cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)[:, 0, ::-1].copy()  # BGR -> RGB
    lut.setflags(write=False)
    return lut


@dataclass(frozen=True)
class DepthColorizer:
    """depth_m float [H, W] -> uint8 [H, W, 3] RGB over the fixed range [min_m, max_m]."""

    min_m: float
    max_m: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_m) and math.isfinite(self.max_m)
                and 0 <= self.min_m < self.max_m):
            raise ValueError(f"depth range must satisfy 0 <= min < max, got "
                             f"[{self.min_m}, {self.max_m}]")

    def lut_index(self, depth_m: np.ndarray) -> np.ndarray:
        """uint8 [H, W] turbo index: 255 at min_m (near, red), 0 at max_m (far, blue)."""
        scale = 255.0 / (self.max_m - self.min_m)
        t = (np.float32(self.max_m) - depth_m.astype(np.float32, copy=False)) * np.float32(scale)
        return np.clip(np.nan_to_num(t, nan=0.0), 0, 255).round().astype(np.uint8)

    def __call__(self, depth_m: np.ndarray) -> np.ndarray:
        rgb = turbo_lut()[self.lut_index(depth_m)]
        rgb[~(np.isfinite(depth_m) & (depth_m > 0))] = INVALID_RGB
        return rgb


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (step 1, 2, 2.5 or 5 x 10^k) inside [lo, hi]; the step whose tick
    count is closest to ``target`` wins (ties: the larger step, fewer labels)."""
    power = 10.0 ** math.floor(math.log10((hi - lo) / max(target - 1, 1)))
    best: list[float] = []
    for step in (m * power for m in (1, 2, 2.5, 5, 10)):
        first = math.ceil(lo / step - 1e-9) * step
        count = int(math.floor((hi - first) / step + 1e-9)) + 1
        ticks = [round(first + i * step, 10) for i in range(count)]
        if not best or abs(len(ticks) - target) <= abs(len(best) - target):
            best = ticks
    return best


def _label(value: float) -> str:
    return f"{value:g} m"


def legend(height: int, colorizer: DepthColorizer) -> np.ndarray:
    """Colour bar uint8 [height, width, 3] RGB: far (max_m) at the top, near at the bottom,
    ticks labelled in metres with cv2.putText. Width grows with the label text."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, height / 900)
    thick = max(1, round(scale * 2))
    ticks = nice_ticks(colorizer.min_m, colorizer.max_m)
    text_w = max(cv2.getTextSize(_label(t), font, scale, thick)[0][0] for t in ticks)
    margin = max(6, height // 40)
    bar_w = max(12, height // 30)
    if height < 4 * margin:  # too short for labels (a tiny image): the bare colour bar
        bar = colorizer(np.linspace(colorizer.max_m, colorizer.min_m, height, dtype=np.float32)[:, None])
        return np.ascontiguousarray(np.repeat(bar, bar_w, axis=1))
    out = np.full((height, margin * 3 + bar_w + text_w, 3), 255, np.uint8)
    top, bottom = margin, height - margin
    depths = np.linspace(colorizer.max_m, colorizer.min_m, bottom - top, dtype=np.float32)
    out[top:bottom, margin:margin + bar_w] = colorizer(depths[:, None])
    for t in ticks:
        y = round(top + (colorizer.max_m - t) / (colorizer.max_m - colorizer.min_m)
                  * (bottom - top - 1))
        cv2.line(out, (margin + bar_w, y), (margin + bar_w + margin // 2, y), (0, 0, 0), thick)
        text_h = cv2.getTextSize(_label(t), font, scale, thick)[0][1]
        baseline_y = min(max(y + text_h // 2, text_h), height - 1)
        cv2.putText(out, _label(t), (margin * 2 + bar_w, baseline_y), font, scale, (0, 0, 0),
                    thick, cv2.LINE_AA)
    return out
