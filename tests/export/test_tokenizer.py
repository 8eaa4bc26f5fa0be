"""export.tokenizer writes a tokenizers JSON equivalent to open_clip's SimpleTokenizer."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
regex = pytest.importorskip("regex")
from tokenizers import Tokenizer  # noqa: E402

from export.tokenizer import (  # noqa: E402
    build_clip_tokenizer,
    find_open_clip_bpe,
    read_clip_merges,
)


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clip_tokenizer(tmp_path_factory.mktemp("export_tokenizer") / "tokenizer.json")


@pytest.fixture(scope="module")
def reference():
    """open_clip's own SimpleTokenizer (the default one behind open_clip.tokenize)."""
    return open_clip_tokenizer.SimpleTokenizer()


def test_build_creates_folders_and_leaves_only_the_file(tmp_path):
    out = build_clip_tokenizer(tmp_path / "bundle" / "text" / "tokenizer.json")
    assert out == tmp_path / "bundle" / "text" / "tokenizer.json"
    assert [path.name for path in out.parent.iterdir()] == ["tokenizer.json"]
    assert Tokenizer.from_file(str(out)).get_vocab_size() == 49408


def test_build_replaces_an_existing_file(tmp_path):
    out = tmp_path / "tokenizer.json"
    out.write_text("not a tokenizer", encoding="utf-8")
    build_clip_tokenizer(out)
    assert Tokenizer.from_file(str(out)).token_to_id("<end_of_text>") == 49407


def test_vocabulary_equals_open_clip(tokenizer_file, reference):
    assert Tokenizer.from_file(str(tokenizer_file)).get_vocab() == reference.encoder


def test_merges_keep_open_clip_ranks(tokenizer_file, reference):
    merges = json.loads(tokenizer_file.read_text(encoding="utf-8"))["model"]["merges"]
    ranked = sorted(reference.bpe_ranks, key=reference.bpe_ranks.get)
    assert [tuple(merge) for merge in merges] == ranked


def test_pre_tokenizer_splits_every_code_point_like_open_clip(tokenizer_file, reference):
    """Every Unicode scalar value lands in the same class (letter, digit, other, dropped).

    Joined with '!' (an 'other'), other characters merge into its runs; joined with 'a',
    letters do; the natural order checks runs and "'" the case-insensitive contractions.
    """
    split = Tokenizer.from_file(str(tokenizer_file)).pre_tokenizer[0]
    every_char = "".join(chr(cp) for cp in range(sys.maxunicode + 1) if not 0xD800 <= cp < 0xE000)
    not_other = regex.sub(r"[^\s\p{L}\p{N}]", "", every_char, flags=regex.IGNORECASE)
    for text in (every_char, "!".join(every_char), "a".join(not_other), "'".join(not_other)):
        expected = [match.span() for match in reference.pat.finditer(text)]
        assert [offsets for _, offsets in split.pre_tokenize_str(text)] == expected


@pytest.mark.parametrize("text", ["tom & jerry été 東京 😀 a photo of a cat", "", "'s !!<"])
def test_decoder_matches_open_clip_decode(tokenizer_file, reference, text):
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    ids = [49406, *reference.encode(text), 49407]
    assert tokenizer.decode(ids, skip_special_tokens=False) == reference.decode(ids)


def test_bundled_bpe_file_is_found():
    assert find_open_clip_bpe().name == "bpe_simple_vocab_16e6.txt.gz"


def test_truncated_bpe_file_is_refused(tmp_path):
    path = tmp_path / "bpe.txt.gz"
    path.write_bytes(gzip.compress("#version: 0.2\ni n\nt h\n".encode("utf-8")))
    with pytest.raises(ValueError, match="not a CLIP BPE file"):
        read_clip_merges(path)
