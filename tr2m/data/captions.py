"""Scene captions in the RSA / TR2M format.

One UTF-8 .txt per image, mirroring the image's path under a captions root
(`<captions_root>/<image path without extension>.txt`). The released files have 15 lines:
10 scene descriptions, then 5 "An image with a ..., a ..." object lists. Training draws a random
line (the authors' augmentation), evaluation always takes line 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np


class CaptionError(FileNotFoundError):
    """A caption file is missing or empty."""


def caption_path(captions_root: str | Path, image_rel: str | Path) -> Path:
    """Where the caption of `image_rel` (a path relative to the image root) lives."""
    return Path(captions_root) / Path(str(image_rel).lstrip("/")).with_suffix(".txt")


def read_captions(path: str | Path) -> List[str]:
    """The non-empty, stripped lines of a caption file."""
    path = Path(path)
    if not path.is_file():
        raise CaptionError(f"caption file {path} not found; point captions_root at the folder of "
                           "RSA/TR2M caption files, or set default_caption")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise CaptionError(f"caption file {path} has no text")
    return lines


def pick_caption(lines: List[str], train: bool, rng: Optional[np.random.Generator] = None) -> str:
    """A random line when training (needs rng), line 0 otherwise."""
    if not train:
        return lines[0]
    if rng is None:
        raise ValueError("training caption choice needs a random generator")
    return lines[int(rng.integers(len(lines)))]
