"""The INT8 calibration set: real frames through the runtime's exact preprocessing, with captions.

INT8 ranges are only as good as the activations they were measured on, so calibration inputs
must be what the deployed runtime will feed: frames decoded by ``runtime.sources`` (videos,
image folders, images), resized and normalized by ``runtime.preprocess.Preprocessor.for_bundle``
(the bundle's own preprocessing), and text embeddings from the runtime's ``TextEmbedder`` (the
bundle's tokenizer and text graph on ONNX Runtime, behind the caption cache) from captions that
describe the footage, so ``text_emb`` has the distribution the head really sees.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from runtime.bundle import Bundle
from runtime.preprocess import Preprocessor
from runtime.sources import open_source
from runtime.text_embedder import TextEmbedder

# Below this many frames a warning is given. INT8 scales come from the extremes (MinMax) or the
# histogram tails (percentile, entropy) of each activation over the calibration set; those tails
# are set by the scene types, lighting, depth ranges and captions present. A few dozen frames
# from one clip cover one scene: ranges fitted to it clip anything brighter or farther later.
# 64 is a floor for coverage, not an optimum (NVIDIA's PTQ examples use ~500 images for
# ImageNet classifiers; more frames cost calibration time linearly and nothing at run time).
MIN_RECOMMENDED_FRAMES = 64

# Used only when no caption is given; real deployments should describe their footage.
DEFAULT_CAPTIONS = ("an indoor scene", "a room", "an outdoor scene", "a street")


class CalibrationWarning(UserWarning):
    """The calibration set is probably too small or too uniform for good INT8 ranges."""


@dataclass(frozen=True)
class CalibrationConfig:
    """How frames are sampled: ``size`` frames in all, split evenly over the sources.

    every: keep every k-th frame of a video (neighbouring frames are near duplicates); image
    folders and single images use every image. seed: None takes the first eligible frames in
    order; an int samples uniformly at random among all eligible frames of each source
    (reservoir sampling: one pass, memory bounded by ``size``), reproducibly.
    """

    size: int = 128
    every: int = 10
    seed: Optional[int] = None

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"calibration size must be at least 1, got {self.size}")
        if self.every < 1:
            raise ValueError(f"every must be at least 1 (1 = every frame), got {self.every}")


@dataclass
class CalibrationSet:
    """N calibration samples. image: float32 [N,3,H,W] (preprocessed); text_emb: float32 [N,D]."""

    image: np.ndarray
    text_emb: np.ndarray
    captions: List[str]
    origins: List[str]  # "path#frame" per sample
    meta: Dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def feeds(self, batch: int = 1) -> Iterator[Dict[str, np.ndarray]]:
        """Graph feeds {"image": [b,3,H,W], "text_emb": [b,D]} in order."""
        for start in range(0, len(self), batch):
            yield {"image": self.image[start:start + batch], "text_emb": self.text_emb[start:start + batch]}

    def reader(self, batch: int = 1):
        """An onnxruntime.quantization CalibrationDataReader over ``feeds(batch)``."""
        from onnxruntime.quantization import CalibrationDataReader

        samples = self

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self._feeds = samples.feeds(batch)

            def get_next(self):
                return next(self._feeds, None)

            def rewind(self):
                self._feeds = samples.feeds(batch)

        return _Reader()


def sample_frames(sources: Sequence[str | Path], config: CalibrationConfig,
                  preprocess: Preprocessor) -> Tuple[np.ndarray, List[str]]:
    """Frames from every source, preprocessed: (float32 [N,3,H,W], origins). N <= config.size."""
    if not sources:
        raise ValueError("no calibration sources given: pass videos, image folders or images")
    quota = math.ceil(config.size / len(sources))
    images, origins = [], []
    for index, spec in enumerate(sources):
        picked = _sample_source(spec, quota, config, index, preprocess)
        images += [img for _, img in picked]
        origins += [origin for origin, _ in picked]
    images, origins = images[:config.size], origins[:config.size]
    return np.stack(images).astype(np.float32, copy=False), origins


def _sample_source(spec, quota: int, config: CalibrationConfig, index: int, preprocess: Preprocessor):
    rng = None if config.seed is None else np.random.default_rng([config.seed, index])
    kept: List[Tuple[str, np.ndarray]] = []
    seen = 0
    with open_source(spec) as source:
        step = config.every if source.info.kind == "video" else 1
        for frame in source:
            if frame.index % step:
                continue
            origin = f"{spec}#{frame.name or frame.index}"
            if rng is None:
                kept.append((origin, preprocess(frame.rgb)[0]))
                if len(kept) == quota:
                    break
            elif seen < quota:  # reservoir sampling: the first `quota` fill it ...
                kept.append((origin, preprocess(frame.rgb)[0]))
            else:  # ... then frame n replaces a random slot with probability quota / (n + 1)
                slot = int(rng.integers(0, seen + 1))
                if slot < quota:
                    kept[slot] = (origin, preprocess(frame.rgb)[0])
            seen += 1
        for skipped in source.skipped:  # damaged images of a folder: calibrated without them, said
            warnings.warn(f"calibration skipped {skipped}", CalibrationWarning, stacklevel=3)
    if rng is not None:  # reservoir order is arbitrary: keep the stream order, deterministically
        kept.sort(key=lambda item: _frame_order(item[0]))
    return kept


def _frame_order(origin: str):
    tail = origin.rsplit("#", 1)[-1]
    return (0, int(tail), "") if tail.isdigit() else (1, 0, tail)


def build_calibration_set(bundle: Bundle | str | Path, sources: Sequence[str | Path], *,
                          captions: Optional[Sequence[str]] = None,
                          config: CalibrationConfig = CalibrationConfig()) -> CalibrationSet:
    """Sample frames from ``sources`` and pair each with a caption embedding.

    captions: assigned in turn (sample i gets captions[i % len]); None uses generic ones with a
    warning. Warns (CalibrationWarning) below MIN_RECOMMENDED_FRAMES frames or with one source.
    """
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    if not captions:
        warnings.warn("calibrating with generic captions: pass captions that describe the calibration "
                      "footage, so text_emb has the values the deployed model sees", CalibrationWarning, stacklevel=2)
        captions = DEFAULT_CAPTIONS
    images, origins = sample_frames(sources, config, Preprocessor.for_bundle(bundle))
    _warn_if_thin(len(origins), sources)
    unique = list(dict.fromkeys(captions))
    table = dict(zip(unique, TextEmbedder.open(bundle, backend="ort-cpu")(unique)))
    assigned = [captions[i % len(captions)] for i in range(len(origins))]
    text_emb = np.stack([table[c] for c in assigned])
    meta = {"frames": len(origins), "sources": [str(s) for s in sources], "captions": list(unique),
            "every": config.every, "seed": config.seed}
    return CalibrationSet(image=images, text_emb=text_emb, captions=assigned, origins=origins, meta=meta)


def _warn_if_thin(count: int, sources: Sequence) -> None:
    if count < MIN_RECOMMENDED_FRAMES:
        warnings.warn(
            f"only {count} calibration frames (fewer than {MIN_RECOMMENDED_FRAMES}): INT8 ranges fitted to so few "
            "frames follow their particular scenes and clip unseen brighter or farther ones; add frames "
            "(more sources, a smaller --calib-every, a larger --calib-size)", CalibrationWarning, stacklevel=3)
    elif len(sources) == 1:
        warnings.warn("all calibration frames come from one source: INT8 ranges will fit that scene; mix in "
                      "footage of the other scenes the model will see", CalibrationWarning, stacklevel=3)
