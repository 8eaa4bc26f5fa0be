"""Training augmentations: the BTS / RSA recipe the authors kept.

A horizontal flip with probability `hflip` (image, depth and mask together), then, with probability
`photometric`, gamma, brightness and per-channel colour factors on the image only, clipped to [0,1].
Geometry other than the flip (crops, rotation) is not applied: the authors' TR2M runs left it off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

Range = Tuple[float, float]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and uniform ranges. NYU uses brightness (0.75, 1.25), the rest (0.9, 1.1)."""

    hflip: float = 0.5
    photometric: float = 0.5
    gamma: Range = (0.9, 1.1)
    brightness: Range = (0.9, 1.1)
    colour: Range = (0.9, 1.1)

    def __post_init__(self) -> None:
        if not (0.0 <= self.hflip <= 1.0 and 0.0 <= self.photometric <= 1.0):
            raise ValueError(f"probabilities must lie in [0, 1], got hflip={self.hflip}, "
                             f"photometric={self.photometric}")
        for name in ("gamma", "brightness", "colour"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ValueError(f"{name} range must satisfy 0 < low <= high, got {(low, high)}")


NO_AUGMENT = AugmentConfig(hflip=0.0, photometric=0.0)


def photometric(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """image float32 [H,W,3] in [0,1] -> gamma, brightness, per-channel colour, clipped to [0,1]."""
    gamma = rng.uniform(*config.gamma)
    brightness = rng.uniform(*config.brightness)
    colour = rng.uniform(*config.colour, size=3).astype(np.float32)
    out = np.power(image, gamma) * brightness * colour
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def augment(image: np.ndarray, depth: np.ndarray, config: AugmentConfig,
            rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """image float32 [H,W,3] in [0,1], depth float32 [H,W] -> augmented copies (same shapes)."""
    if rng.random() < config.hflip:
        image, depth = image[:, ::-1], depth[:, ::-1]
    if rng.random() < config.photometric:
        image = photometric(image, config, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(depth)
