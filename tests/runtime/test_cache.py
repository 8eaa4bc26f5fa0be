"""runtime.cache: counts, persistence, corruption handling and two writers at once."""
from __future__ import annotations

import io
import multiprocessing
import warnings

import numpy as np
import pytest

from runtime.cache import CaptionCache, cache_key
from runtime.errors import CacheError, Tr2mRuntimeWarning
from tests.runtime.fixtures_io import (DIM, ENCODER_ID, CountingEncoder, cache_writer_process,
                                       fake_embedding)


def expected(captions: list[str]) -> np.ndarray:
    return np.stack([fake_embedding(c) for c in captions])


def test_a_schedule_computes_each_distinct_caption_once(tmp_path):
    distinct = ["an office", "a street at night", "a kitchen"]
    schedule = [distinct[(i // 7) % 3] for i in range(60)]  # 60 frames, captions change
    cache, encoder = CaptionCache(ENCODER_ID, DIM, tmp_path), CountingEncoder()
    for caption in schedule:
        got = cache.get_or_compute([caption], encoder)
        np.testing.assert_array_equal(got, expected([caption]))
    assert encoder.computed == distinct  # one call per new caption, in first-seen order
    assert (cache.misses, cache.hits, cache.disk_hits) == (3, 57, 0)

    again, encoder2 = CaptionCache(ENCODER_ID, DIM, tmp_path), CountingEncoder()
    for caption in schedule:
        np.testing.assert_array_equal(again.get_or_compute([caption], encoder2),
                                      expected([caption]))
    assert encoder2.calls == []  # a second run on the same folder never runs the encoder
    assert (again.misses, again.hits, again.disk_hits) == (0, 60, 3)


def test_one_batch_sends_only_missing_unique_captions_in_one_call(tmp_path):
    cache, encoder = CaptionCache(ENCODER_ID, DIM, tmp_path), CountingEncoder()
    cache.get_or_compute(["b"], encoder)
    batch = ["a", "b", "a", "c", "b"]
    got = cache.get_or_compute(batch, encoder)
    assert encoder.calls == [["b"], ["a", "c"]]
    assert got.shape == (5, DIM) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected(batch))
    assert cache.hits + cache.misses == 6 and cache.misses == 3


def test_returned_arrays_cannot_corrupt_the_cache(tmp_path):
    cache = CaptionCache(ENCODER_ID, DIM, tmp_path)
    first = cache.get_or_compute(["x"], CountingEncoder())
    first[:] = 0
    np.testing.assert_array_equal(cache.get_or_compute(["x"], CountingEncoder()), expected(["x"]))


def test_entries_are_keyed_by_encoder_identity_and_exact_caption(tmp_path):
    CaptionCache(ENCODER_ID, DIM, tmp_path).get_or_compute(["an office"], CountingEncoder())
    other, encoder = CaptionCache("another-encoder", DIM, tmp_path), CountingEncoder()
    other.get_or_compute(["an office", "an office ", "An office"], encoder)
    assert encoder.computed == ["an office", "an office ", "An office"]
    assert cache_key("a", "b") != cache_key("a", "b ") != cache_key("b", "a")
    with pytest.raises(CacheError, match="without NUL"):  # keeps the hashed key unambiguous
        CaptionCache("a\0b", DIM, tmp_path)


def test_lru_evicts_from_memory_but_disk_still_serves(tmp_path):
    cache, encoder = CaptionCache(ENCODER_ID, DIM, tmp_path, capacity=2), CountingEncoder()
    for caption in ["a", "b", "c", "a"]:
        cache.get_or_compute([caption], encoder)
    assert encoder.computed == ["a", "b", "c"] and cache.disk_hits == 1


def test_unwritable_folder_warns_and_caches_in_memory_only(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should go")
    with pytest.warns(Tr2mRuntimeWarning, match="caching in memory only"):
        cache = CaptionCache(ENCODER_ID, DIM, blocker / "cache", capacity=1)
    assert not cache.persistent and cache.path_for("a") is None
    encoder = CountingEncoder()
    for caption in ["a", "a", "b", "a"]:
        np.testing.assert_array_equal(cache.get_or_compute([caption], encoder),
                                      expected([caption]))
    assert encoder.computed == ["a", "b", "a"]  # capacity 1, nothing on disk


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _utf8(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8)


def _entry(encoder_id=ENCODER_ID, caption="an office", vec=None) -> bytes:
    vec = fake_embedding("an office") if vec is None else vec
    return _npz(embedding=vec, encoder_id=_utf8(encoder_id), caption=_utf8(caption))


BAD_ENTRIES = {
    "truncated": lambda good: good[: len(good) // 2],
    "garbage": lambda good: b"\x00\x01 not an npz at all" * 10,
    "empty": lambda good: b"",
    "wrong shape": lambda good: _entry(vec=np.zeros(DIM - 1, np.float32)),
    "wrong dtype": lambda good: _entry(vec=np.zeros(DIM, np.float64)),
    "nan": lambda good: _entry(vec=np.full(DIM, np.nan, np.float32)),
    "foreign encoder": lambda good: _entry(encoder_id="someone-else"),
    "other caption": lambda good: _entry(caption="a kitchen"),
    "missing key": lambda good: _npz(embedding=fake_embedding("an office")),
    "pickled object": lambda good: _npz(embedding=np.array([{"a": 1}], dtype=object),
                                        encoder_id=_utf8(ENCODER_ID), caption=_utf8("an office")),
}


@pytest.mark.parametrize("kind", sorted(BAD_ENTRIES))
def test_a_bad_file_is_set_aside_and_recomputed(tmp_path, kind):
    CaptionCache(ENCODER_ID, DIM, tmp_path).get_or_compute(["an office"], CountingEncoder())
    path = CaptionCache(ENCODER_ID, DIM, tmp_path).path_for("an office")
    path.write_bytes(BAD_ENTRIES[kind](path.read_bytes()))

    cache, encoder = CaptionCache(ENCODER_ID, DIM, tmp_path), CountingEncoder()
    with pytest.warns(Tr2mRuntimeWarning, match="unusable") as record:
        got = cache.get_or_compute(["an office"], encoder)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    np.testing.assert_array_equal(got, expected(["an office"]))
    assert encoder.computed == ["an office"]
    assert path.with_name(path.name + ".corrupt").exists()

    fresh, encoder = CaptionCache(ENCODER_ID, DIM, tmp_path), CountingEncoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten entry is valid again
        fresh.get_or_compute(["an office"], encoder)
    assert encoder.calls == []


@pytest.mark.parametrize("bad,message", [
    (lambda c: np.zeros((len(c), DIM + 1), np.float32), "returned shape"),
    (lambda c: np.full((len(c), DIM), np.nan, np.float32), "NaN or infinite"),
])
def test_bad_encoder_output_raises_and_stores_nothing(tmp_path, bad, message):
    cache = CaptionCache(ENCODER_ID, DIM, tmp_path)
    with pytest.raises(CacheError, match=message):
        cache.get_or_compute(["a"], bad)
    assert not cache.path_for("a").exists()
    assert cache.get_or_compute(["a"], CountingEncoder()).shape == (1, DIM)


def test_misuse_raises_clear_errors(tmp_path):
    with pytest.raises(CacheError, match="non-empty string"):
        CaptionCache("", DIM, tmp_path)
    with pytest.raises(CacheError, match="list of strings"):
        CaptionCache(ENCODER_ID, DIM, tmp_path).get_or_compute("an office", CountingEncoder())
    empty = CaptionCache(ENCODER_ID, DIM, tmp_path).get_or_compute([], CountingEncoder())
    assert empty.shape == (0, DIM)


def test_two_processes_writing_the_same_keys_leave_a_valid_cache(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    rounds, keys = 4, 50
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=cache_writer_process, args=(str(tmp_path), rounds, keys,
                                                              barrier)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    folder = CaptionCache(ENCODER_ID, DIM, tmp_path).directory
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == rounds * keys and all(n.endswith(".npz") for n in names)
    captions = [f"round {r} caption {i}" for r in range(rounds) for i in range(keys)]
    cache, encoder = CaptionCache(ENCODER_ID, DIM, tmp_path), CountingEncoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(cache.get_or_compute(captions, encoder), expected(captions))
    assert encoder.calls == []
