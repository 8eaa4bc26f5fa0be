"""runtime.text_embedder: one way from captions to embeddings (Engine, keyframe mode, calibration)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from runtime import Engine
from runtime.bundle import Bundle
from runtime.cache import CaptionCache
from runtime.errors import BundleError
from runtime.keyframe import KeyframePredictor
from runtime.text_embedder import TextEmbedder
from tests.runtime.fixtures_io import REPO


def _calls(pattern: str, packages=("runtime", "calib", "bench")) -> list:
    """Modules of these packages whose code (comments and docstrings aside) matches pattern."""
    found = []
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            code = re.sub(r'"""[\s\S]*?"""', "", path.read_text())
            code = "\n".join(line.split("#")[0] for line in code.splitlines())
            if re.search(pattern, code):
                found.append(path.relative_to(REPO).as_posix())
    return found


def test_one_place_loads_the_tokenizer_and_the_text_graph_and_builds_the_preprocessor():
    assert _calls(r"ClipTokenizer\.from_file") == ["runtime/text_embedder.py"]
    assert _calls(r"load\([^)]*\"text\"") == ["runtime/text_embedder.py"]
    assert _calls(r"\bPreprocessor\(") == []  # every package builds it with Preprocessor.for_bundle(bundle)


def test_engine_and_keyframe_mode_embed_through_a_text_embedder(tiny_bundle, tmp_path):
    engine = Engine.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path / "cache")
    keyframes = KeyframePredictor(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path / "other")
    assert isinstance(engine.text, TextEmbedder) and isinstance(keyframes._embed, TextEmbedder)
    captions = ["an office", "a street at night"]
    np.testing.assert_array_equal(engine.embed(captions), keyframes._embed(captions))
    assert engine.cache is engine.text.cache and (engine.cache.misses, keyframes._embed.cache.misses) == (2, 2)


def test_a_cached_caption_never_opens_the_text_graph(tiny_bundle, tmp_path):
    first = TextEmbedder.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path)
    expected = first(["a kitchen", "a kitchen"])
    assert (first.cache.hits, first.cache.misses) == (1, 1) and expected.shape == (2, first.bundle.text_dim)
    again = TextEmbedder.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path)
    np.testing.assert_array_equal(again(["a kitchen"]), expected[:1])
    assert again.cache.disk_hits == 1 and again._graph is None and again._tokenizer is None


def test_a_cache_of_another_text_encoder_is_refused(tiny_bundle, tmp_path):
    bundle = Bundle.open(tiny_bundle.bundle)
    from runtime.backends import BACKENDS

    with pytest.raises(BundleError, match="caption cache is for"):
        TextEmbedder(bundle, BACKENDS["ort-cpu"], CaptionCache("another-encoder", bundle.text_dim, tmp_path))
