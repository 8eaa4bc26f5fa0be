"""Fixtures for the runtime tests: the CLIP tokenizer file, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def clip_tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tokenizer.json built from open_clip's bundled BPE (skips when open_clip is absent)."""
    pytest.importorskip("open_clip", reason="building the tokenizer file needs open_clip_torch")
    from export.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(tmp_path_factory.mktemp("clip_tokenizer") / "tokenizer.json")


@pytest.fixture(scope="session")
def clip_tokenizer(clip_tokenizer_file: Path):
    """A runtime.tokenizer.ClipTokenizer loaded from the session's tokenizer file."""
    from runtime.tokenizer import ClipTokenizer

    return ClipTokenizer.from_file(clip_tokenizer_file)


@pytest.fixture(scope="module")
def bedroom_frames():
    """The first 8 frames of the real bedroom video (runtime Frames)."""
    from tests.runtime.fixtures_io import BEDROOM, first_frames

    return first_frames(BEDROOM, 8)


@pytest.fixture
def tiny_engine(tiny_bundle, tmp_path):
    """The session's tiny bundle on ONNX Runtime CPU, with a caption cache of its own."""
    from runtime import Engine

    return Engine.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path / "cache")
