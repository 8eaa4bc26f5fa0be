"""Keyframe mode: relative depth every frame, the scale/shift maps every K frames.

Per frame, TR2M runs Depth Anything (small) for D_r and DINOv2-L + the head for the scale A and
shift B maps; the second half is ~10x the cost of the first. On video, A and B (metric scale of
the scene) change slowly, so `KeyframePredictor` runs the bundle's "relative" graph on every
frame and its "scale_shift" graph only on keyframes: the first frame, every `every`-th frame
after a keyframe, and whenever the caption (or text embedding) changes. In between it reuses A
and B, optionally smoothed over keyframes with an exponential moving average:

    A_k = smoothing * A_{k-1} + (1 - smoothing) * A_new      (the same for B)

smoothing = 0 keeps the newest maps (no smoothing); a caption change resets the average, since
the scene description, hence the metric scale, changed. Depth is computed here in float32 at the
model's resolution, depth = 1 / (A * D_r + B), then resized back to the frame (bilinear,
align_corners=True), exactly as the fused graph and `Engine` do: with every=1 and smoothing=0
the result is the per-frame engine's.

    from runtime import Engine
    from runtime.keyframe import KeyframePredictor
    engine = Engine.open("bundles/paper")
    kf = KeyframePredictor(engine, every=8, smoothing=0.5)
    for frame in frames:
        depth = kf.predict(frame, caption="an office")     # float32 [H, W], metres

Torch-free, like the rest of the runtime.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .backends import pick_backend, skipped, with_options
from .backends.base import Backend
from .bundle import Bundle
from .cache import CaptionCache
from .engine import Engine, Prediction, StageTimes
from .errors import BundleError, CaptionError
from .preprocess import Preprocessor, resize_back
from .text_embedder import TextEmbedder

HALVES = ("relative", "scale_shift")
HALF_SUFFIX = {"fp32": "", "fp16": "_fp16", "int8": "_int8"}  # graph name = half + suffix


def _half_graph(bundle: Bundle, half: str, precision: str) -> str:
    """The bundle graph running `half` in `precision`; refuses rather than falling back to FP32."""
    if precision not in HALF_SUFFIX:
        raise BundleError(f"unknown precision {precision!r}; choose one of: {', '.join(HALF_SUFFIX)}")
    graph = half + HALF_SUFFIX[precision]
    if bundle.has_graph(graph):
        return graph
    fixes = {
        "fp32": "re-export the bundle with --graphs image,relative,scale_shift,text",
        "fp16": "re-export the bundle with `tr2m-export onnx --half`, or use --precision fp32",
        "int8": "INT8 calibration quantizes the fused image graph only: use --precision fp32 or fp16 with keyframes",
    }
    raise BundleError(f"keyframe mode at {precision} needs the {graph!r} graph, which this bundle lacks: "
                      f"{fixes[precision]}")


class KeyframePredictor:
    """Metric depth on a frame sequence with A and B refreshed every `every` frames.

    source: an open `Engine` (its backend, precision, preprocessing and caption cache are shared;
    open it with lazy=True so its fused image graph is never loaded) or a bundle folder / `Bundle`
    (then `backend`, `precision` and `cache_dir` apply, as in `Engine.open`).
    every: K >= 1, frames per keyframe. smoothing: 0 <= s < 1, EMA weight of the previous maps.
    The halves run in the precision asked for (relative_fp16 and scale_shift_fp16 for fp16); a
    bundle without them is refused, never run in another precision.
    """

    def __init__(self, source: Union[Engine, Bundle, str, Path], *, every: int = 8, smoothing: float = 0.0,
                 backend: str = "auto", precision: str = "fp32", cache_dir: Optional[Union[str, Path]] = None,
                 verify: bool = True, backend_options=None):
        if int(every) != every or every < 1:
            raise ValueError(f"every must be a whole number of frames >= 1, got {every!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1) (0 = off), got {smoothing!r}")
        self.every, self.smoothing = int(every), float(smoothing)
        bundle = source.bundle if isinstance(source, Engine) else (
            source if isinstance(source, Bundle) else Bundle.open(source, verify=verify))
        precision = source.precision if isinstance(source, Engine) else precision
        halves = tuple(_half_graph(bundle, half, precision) for half in HALVES)
        if isinstance(source, Engine):
            backend_cls = source.backend_class  # with its options (e.g. OpenVINO's precision)
            reason = backend_cls.refusal(bundle, halves)  # e.g. TensorRT engines for image and text only
            if reason:
                skipped(backend_cls.name, reason)
                backend_cls = pick_backend("auto", bundle, halves)
            self.preprocessor, self._embed = source.preprocessor, source.embed
        else:
            backend_cls = with_options(pick_backend(backend, bundle, halves + (("text",) if bundle.has_graph("text")
                                                                               else ())), backend_options)
            self.preprocessor = Preprocessor.for_bundle(bundle)
            cache = CaptionCache(bundle.text_encoder_id, bundle.text_dim, directory=cache_dir)
            self._embed = TextEmbedder(bundle, backend_cls, cache)
        self.bundle, self.backend_name, self.precision = bundle, backend_cls.name, precision
        self.relative: Backend = backend_cls.load(bundle, halves[0])
        self.scale_shift: Backend = backend_cls.load(bundle, halves[1])
        self.times = StageTimes()
        self.reset()

    def reset(self) -> None:
        """Forget the maps and the caption: the next frame is a keyframe."""
        self._scale: Optional[np.ndarray] = None  # float32 [h, w], model resolution
        self._shift: Optional[np.ndarray] = None
        self._key_text: Optional[object] = None   # the caption string or text embedding in force
        self._since_key = 0
        self.frames = 0
        self.keyframes = 0
        self.last_was_keyframe = False

    # --- public -----------------------------------------------------------------------------
    def predict(self, frame: np.ndarray, caption: Optional[str] = None, *, text_emb: Optional[np.ndarray] = None,
                return_maps: bool = False, keyframe: bool = False):
        """frame: [H,W,3] RGB uint8/uint16 (as `Engine.predict`) -> depth float32 [H,W] in metres,
        or a `Prediction` with the scale, shift and rel maps when `return_maps`.
        keyframe=True forces A and B to be recomputed on this frame."""
        text = self._text_key(caption, text_emb)
        started = time.perf_counter()
        image = self.preprocessor([frame])
        self.times.add("preprocess", started)
        if keyframe or self._due(text):
            self._refresh(image, caption, text_emb, text)
        else:
            self._since_key += 1
            self.last_was_keyframe = False
        started = time.perf_counter()
        rel = self.relative.run({"image": image})["rel"][0, 0]
        self.times.add("relative", started)
        started = time.perf_counter()
        depth = np.reciprocal(self._scale * rel + self._shift)  # float32, as the fused graph
        out = resize_back(depth, frame.shape[:2])
        if return_maps:
            size = frame.shape[:2]
            out = Prediction(depth=out, scale=resize_back(self._scale, size), shift=resize_back(self._shift, size),
                             rel=resize_back(rel, size))
        self.times.add("postprocess", started)
        self.frames += 1
        return out

    # --- internals --------------------------------------------------------------------------
    @staticmethod
    def _text_key(caption: Optional[str], text_emb: Optional[np.ndarray]) -> object:
        if text_emb is not None:
            return np.array(text_emb, dtype=np.float32).reshape(-1)  # a copy: the caller may reuse its array
        if caption is None:
            raise CaptionError("no caption given: pass caption='a short scene description' (e.g. 'an office')")
        if not isinstance(caption, str):
            raise CaptionError(f"caption must be a string, got {type(caption).__name__}")
        return caption

    def _same_text(self, text: object) -> bool:
        old = self._key_text
        if isinstance(text, str) or isinstance(old, str) or old is None:
            return isinstance(text, str) and isinstance(old, str) and text == old
        return old.shape == text.shape and bool(np.array_equal(old, text))

    def _due(self, text: object) -> bool:
        return self._scale is None or self._since_key + 1 >= self.every or not self._same_text(text)

    def _refresh(self, image: np.ndarray, caption, text_emb, text: object) -> None:
        new_scene = not self._same_text(text)
        started = time.perf_counter()
        if text_emb is not None:
            emb = np.ascontiguousarray(np.asarray(text_emb, dtype=np.float32).reshape(1, -1))
            if emb.shape[1] != self.bundle.text_dim:
                raise CaptionError(f"text_emb must have {self.bundle.text_dim} values, got {emb.shape[1]}")
        else:
            emb = self._embed([caption])
        self.times.add("text", started)
        started = time.perf_counter()
        out = self.scale_shift.run({"image": image, "text_emb": emb})
        self.times.add("scale_shift", started)
        scale, shift = out["scale"][0, 0], out["shift"][0, 0]
        if self.smoothing and not new_scene and self._scale is not None:
            s = np.float32(self.smoothing)
            scale = s * self._scale + (np.float32(1) - s) * scale
            shift = s * self._shift + (np.float32(1) - s) * shift
        self._scale, self._shift = scale, shift
        self._key_text = text
        self._since_key = 0
        self.keyframes += 1
        self.last_was_keyframe = True
