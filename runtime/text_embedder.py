"""`TextEmbedder`: captions -> text embeddings with the bundle's tokenizer and text graph, behind
the caption cache, so the same caption never runs the text graph twice (in a run or across runs).

The one way captions become embeddings in the runtime: the `Engine`, keyframe mode and INT8
calibration all use it. The tokenizer and the graph load on the first cache miss, so a run whose
captions are all cached never opens them.

    embedder = TextEmbedder.open("bundles/paper")
    emb = embedder(["an office", "a street at night"])       # float32 [2, D]
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Type, Union

import numpy as np

from .backends import pick_backend
from .backends.base import Backend
from .bundle import Bundle
from .cache import CaptionCache
from .errors import BundleError
from .tokenizer import ClipTokenizer

_NO_TEXT_GRAPH = "this bundle has no text graph: pass text embeddings, or re-export with the text graph"


class TextEmbedder:
    """Captions -> float32 [B, D] for one bundle. backend: the class that runs the text graph;
    cache: a `CaptionCache` keyed by this bundle's text encoder (``hits``/``misses`` count lookups)."""

    def __init__(self, bundle: Bundle, backend: Type[Backend], cache: CaptionCache) -> None:
        if cache.encoder_id != bundle.text_encoder_id or cache.dim != bundle.text_dim:
            raise BundleError(f"the caption cache is for {cache.encoder_id!r} ({cache.dim}-d) but the bundle's text "
                              f"encoder is {bundle.text_encoder_id!r} ({bundle.text_dim}-d)")
        self.bundle, self.backend, self.cache = bundle, backend, cache
        self._graph: Optional[Backend] = None
        self._tokenizer: Optional[ClipTokenizer] = None

    @classmethod
    def open(cls, bundle: Union[Bundle, str, Path], *, backend: str = "auto",
             cache_dir: Optional[Union[str, Path]] = None) -> "TextEmbedder":
        """For a bundle (folder or `Bundle`): the named backend (auto: the best that runs the text
        graph) and the persistent caption cache in ``cache_dir`` (default: the user cache folder)."""
        bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        if not bundle.has_graph("text"):
            raise BundleError(_NO_TEXT_GRAPH)
        cache = CaptionCache(bundle.text_encoder_id, bundle.text_dim, directory=cache_dir)
        return cls(bundle, pick_backend(backend, bundle, ("text",)), cache)

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        """captions (list of B str) -> float32 [B, D]; the text graph runs only on cache misses."""
        return self.cache.get_or_compute(list(captions), self._run)

    def _run(self, captions: List[str]) -> np.ndarray:
        if self._graph is None:
            if self.bundle.tokenizer_path is None or not self.bundle.has_graph("text"):
                raise BundleError(_NO_TEXT_GRAPH)
            self._tokenizer = ClipTokenizer.from_file(self.bundle.tokenizer_path)
            self._graph = self.backend.load(self.bundle, "text")
        return self._graph.run({"token_ids": self._tokenizer(captions)})["text_emb"].astype(np.float32)

    def close(self) -> None:
        """Release the text graph's backend (GPU memory); it reloads on the next miss."""
        if self._graph is not None:
            self._graph.close()
            self._graph = None
