"""`Engine`: metric depth from frames and captions, on whichever backend can run the bundle.

Data flows one way: frame -> preprocess -> graph -> postprocess. Captions become embeddings
through the bundle's tokenizer and text graph, behind the caption cache, so a caption seen
before (in this run or an earlier one) never runs the text graph again.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from .backends import BACKENDS, backend_candidates, skipped, with_options
from .backends.base import Backend, BackendUnavailable
from .bundle import Bundle
from .cache import CaptionCache
from .errors import BundleError, CaptionError, Tr2mRuntimeWarning
from .preprocess import Preprocessor, resize_back
from .text_embedder import TextEmbedder

PRECISION_GRAPHS = {"fp32": "image", "fp16": "image_fp16", "int8": "image_int8"}
MAPS = ("depth", "scale", "shift", "rel")


@dataclass
class Prediction:
    """One frame's result at the frame's own resolution (float32 [H, W]); depth in metres."""

    depth: np.ndarray
    scale: Optional[np.ndarray] = None
    shift: Optional[np.ndarray] = None
    rel: Optional[np.ndarray] = None


@dataclass
class StageTimes:
    """Milliseconds spent per stage (sums over calls) and how many calls."""

    totals: Dict[str, float] = field(default_factory=dict)
    calls: Dict[str, int] = field(default_factory=dict)
    last: Dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, started: float) -> None:
        ms = (time.perf_counter() - started) * 1e3
        self.totals[stage] = self.totals.get(stage, 0.0) + ms
        self.calls[stage] = self.calls.get(stage, 0) + 1
        self.last[stage] = ms

    def mean(self) -> Dict[str, float]:
        return {k: v / self.calls[k] for k, v in self.totals.items()}


class Engine:
    """A bundle opened for inference. `Engine.open(bundle_dir)`; then `predict(frame, caption=...)`."""

    def __init__(self, bundle: Bundle, backend: type, *, precision: str = "fp32",
                 cache: Optional[CaptionCache] = None, lazy: bool = False):
        self._graph = _graph_for(bundle, precision, backend)
        self.bundle = bundle
        self.precision = precision
        self.backend_name = backend.name
        if precision == "fp16" and backend.name == "ort-cpu":
            # Measured on the paper preset (bench/RESULTS.md): FP16 graphs are ~8% slower on the CPU.
            warnings.warn("the FP16 graph is for GPUs: on the CPU it is slower than FP32 (use --precision fp32 or int8)",
                          Tr2mRuntimeWarning, stacklevel=2)
        self._image: Optional[Backend] = None if lazy else backend.load(bundle, self._graph)
        self.preprocessor = Preprocessor.for_bundle(bundle)
        self.text = TextEmbedder(bundle, backend, cache or CaptionCache(bundle.text_encoder_id, bundle.text_dim))
        self.times = StageTimes()

    @classmethod
    def open(cls, bundle_dir: str | Path, *, backend: str = "auto", precision: str = "fp32",
             cache_dir: Optional[str | Path] = None, verify: bool = True, backend_options=None,
             lazy: bool = False) -> "Engine":
        """Open a bundle folder; `backend` is auto or a name of `runtime.backends.BACKENDS`;
        backend_options: settings for the backend that takes them (e.g. `OpenVINOOptions`);
        lazy: load the image graph on the first `predict` only (keyframe mode never runs it)."""
        bundle = Bundle.open(bundle_dir, verify=verify)
        cache = CaptionCache(bundle.text_encoder_id, bundle.text_dim, directory=cache_dir)
        graphs = [_graph_for(bundle, precision)] + (["text"] if bundle.has_graph("text") else [])
        for candidate in backend_candidates(backend, bundle, graphs):
            try:
                return cls(bundle, with_options(candidate, backend_options), precision=precision, cache=cache,
                           lazy=lazy)
            except BackendUnavailable as e:  # it passed its checks but could not load (e.g. deserialize)
                if backend != "auto":
                    raise
                skipped(candidate.name, str(e))
        raise AssertionError("unreachable: backend_candidates raises when none is left")

    @property
    def backend_class(self) -> type:
        """The backend class (with its options) that runs this engine's graphs."""
        return self.text.backend

    def describe_backend(self) -> Dict[str, str]:
        """What the image graph runs on (device, inference precision, ...), for run summaries; empty
        when it was never loaded (keyframe mode runs the halves: loading it only to describe it would
        cost its memory)."""
        return self._image.describe() if self._image is not None else {}

    def close(self) -> None:
        """Release the backends' device memory and streams (GPU backends)."""
        if self._image is not None:
            self._image.close()
        self.text.close()

    @property
    def image(self) -> Backend:
        """The backend running the image graph of this precision (loaded now if opened lazily)."""
        if self._image is None:
            self._image = self.backend_class.load(self.bundle, self._graph)
        return self._image

    @property
    def cache(self) -> CaptionCache:
        """The caption-embedding cache (its hits and misses count this engine's lookups)."""
        return self.text.cache

    @property
    def input_size(self):
        return self.preprocessor.input_size

    @property
    def untrained(self) -> bool:
        return self.bundle.untrained

    # --- captions -> embeddings -------------------------------------------------------------
    def embed(self, captions: Sequence[str]) -> np.ndarray:
        """captions (list of B str) -> float32 [B, D]; the text graph runs only on cache misses."""
        started = time.perf_counter()
        embeddings = self.text(captions)
        self.times.add("text", started)
        return embeddings

    def prefetch(self, captions: Sequence[str]) -> None:
        """Embed ``captions`` now (into the caption cache) and release the text graph: a run whose
        captions are all known up front then holds only the image graph while it predicts (the
        text graph reloads if an unknown caption comes)."""
        if captions:
            self.embed(list(captions))
        self.text.close()

    # --- frames -> depth --------------------------------------------------------------------
    def predict(self, frame: np.ndarray, caption: Optional[str] = None, *, text_emb: Optional[np.ndarray] = None,
                return_maps: bool = False):
        """frame: [H,W,3] RGB (uint8/uint16/float), gray or RGBA -> depth float32 [H,W] in metres
        (or a `Prediction` with the scale, shift and relative maps when `return_maps`)."""
        return self.predict_batch([frame], None if caption is None else [caption],
                                  text_emb=None if text_emb is None else np.asarray(text_emb)[None],
                                  return_maps=return_maps)[0]

    def predict_batch(self, frames: Sequence[np.ndarray], captions: Optional[Sequence[str]] = None, *,
                      text_emb: Optional[np.ndarray] = None, return_maps: bool = False) -> list:
        """B frames (any sizes) + B captions (or text_emb [B, D]) -> B results (see `predict`)."""
        frames = list(frames)
        embeddings = self._embeddings(len(frames), captions, text_emb)
        started = time.perf_counter()
        batch = self.preprocessor(frames)
        self.times.add("preprocess", started)
        started = time.perf_counter()
        outputs = self.image.run({"image": batch, "text_emb": embeddings})
        self.times.add("image", started)
        started = time.perf_counter()
        results = [self._postprocess(outputs, i, frame.shape[:2], return_maps) for i, frame in enumerate(frames)]
        self.times.add("postprocess", started)
        return results

    def _embeddings(self, count: int, captions, text_emb) -> np.ndarray:
        if text_emb is not None:
            return _checked_embeddings(np.asarray(text_emb, dtype=np.float32), count, self.bundle.text_dim)
        if captions is None:
            raise CaptionError("no caption given: pass caption='a short scene description' (e.g. 'an office')")
        if len(captions) != count:
            raise CaptionError(f"got {len(captions)} captions for {count} frames: give one per frame")
        return self.embed(captions)

    def _postprocess(self, outputs: Dict[str, np.ndarray], index: int, size, return_maps: bool):
        if not return_maps:
            return resize_back(outputs["depth"][index, 0], size)
        names = [k for k in MAPS if k in outputs]
        resized = resize_back(np.stack([outputs[k][index, 0] for k in names]), size)  # one pass for all maps
        return Prediction(**dict(zip(names, resized)))


def _graph_for(bundle: Bundle, precision: str, backend: Optional[type] = None) -> str:
    """The image graph of a precision; it must exist for `backend` (any backend when None): on
    TensorRT 10 an FP16 engine built from the FP32 graph serves fp16 without an image_fp16.onnx."""
    if precision not in PRECISION_GRAPHS:
        raise BundleError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISION_GRAPHS)}")
    graph = PRECISION_GRAPHS[precision]
    if not any(b.provides(bundle, graph) for b in ([backend] if backend else BACKENDS.values())):
        hint = {"fp16": "re-export with --half", "int8": "quantize it: tr2m-export cpu-int8 (ort-cpu, no calibration), "
                "tr2m-export openvino --int8 or tr2m-export trt --int8 (calibrated)"}.get(precision, "")
        raise BundleError(f"bundle has no {precision} image graph ({graph}): {hint}".rstrip(": "))
    return graph


def _checked_embeddings(emb: np.ndarray, count: int, dim: int) -> np.ndarray:
    if emb.shape != (count, dim):
        raise CaptionError(f"text embeddings must have shape [{count}, {dim}], got {list(emb.shape)}")
    if not np.isfinite(emb).all():
        raise CaptionError("text embeddings contain NaN or inf")
    return np.ascontiguousarray(emb)
