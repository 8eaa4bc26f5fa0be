"""Caption-embedding cache: the text encoder never runs twice for the same caption.

Two levels: an in-memory LRU and a persistent folder, both keyed by the
text encoder's identity string and the exact caption string.

On-disk format (version 1): ``<directory>/v1/<sha256 hex>.npz`` where the hash is taken over
``utf8(encoder_id) + b"\\0" + utf8(caption)``. Each file is an uncompressed ``np.savez`` with
``embedding`` float32 [dim], ``encoder_id`` and ``caption`` as UTF-8 bytes (uint8 arrays, so
any string round-trips exactly; numpy's unicode dtype drops trailing NULs). Files are loaded
with ``allow_pickle=False`` and checked against the key, the dimension and finiteness; a file
that fails any check is renamed ``*.corrupt`` (kept for inspection) and recomputed.

Concurrency: every entry is written to a temporary file in the same folder and moved into place
with os.replace, and read in one ``read_bytes`` call, so a reader sees a whole old file, a whole
new file or none. Two processes computing the same caption both write it; the last rename wins
and both files are valid. An instance is not meant to be shared between threads.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from runtime.atomic import PendingFile, atomic_write_bytes
from runtime.errors import CacheError, Tr2mRuntimeWarning

FORMAT_VERSION = 1

ComputeFn = Callable[[list[str]], np.ndarray]


def default_cache_dir() -> Path:
    """``<user cache dir>/tr2m/text_embeddings`` (platformdirs: ~/.cache/tr2m/... on Linux)."""
    import platformdirs  # only needed when no folder is given

    return Path(platformdirs.user_cache_dir("tr2m")) / "text_embeddings"


def _utf8(text: str) -> bytes:
    # surrogatepass: any Python str (even one with lone surrogates) maps to exactly one key.
    return text.encode("utf-8", "surrogatepass")


def cache_key(encoder_id: str, caption: str) -> str:
    """sha256 hex of ``utf8(encoder_id) + b"\\0" + utf8(caption)``: the entry's file stem."""
    return hashlib.sha256(_utf8(encoder_id) + b"\0" + _utf8(caption)).hexdigest()


class _InvalidEntry(Exception):
    """A cache file that must not be used; the message says why (internal)."""


class CaptionCache:
    """Caption -> text embedding (float32 [dim]), in memory (LRU) and on disk.

    Counters: ``hits + misses`` is the number of captions requested; ``misses`` is the number
    sent to ``compute``; ``disk_hits`` counts hits read from disk (a subset of ``hits``).
    """

    def __init__(self, encoder_id: str, dim: int, directory: Path | str | None = None,
                 capacity: int = 1024) -> None:
        if not isinstance(encoder_id, str) or not encoder_id or "\0" in encoder_id:
            # No NUL inside: the first NUL of the hashed key then separates id from caption.
            raise CacheError("the cache needs the text encoder's identity: a non-empty string "
                             "without NUL characters")
        if int(dim) < 1 or int(capacity) < 1:
            raise CacheError(f"dim and capacity must be positive, got {dim} and {capacity}")
        self.encoder_id, self.dim, self.capacity = encoder_id, int(dim), int(capacity)
        self.hits = self.misses = self.disk_hits = 0
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        root = Path(directory) if directory is not None else default_cache_dir()
        self.directory: Path | None = self._usable_folder(root / f"v{FORMAT_VERSION}")

    # ----------------------------------------------------------------- public
    def get_or_compute(self, captions: Sequence[str], compute: ComputeFn) -> np.ndarray:
        """Embeddings for ``captions`` (list of B str) -> float32 [B, dim], a fresh array.

        ``compute(list of k str) -> [k, dim]`` is called at most once, with only the unique
        captions found neither in memory nor on disk, in first-seen order.
        """
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise CacheError("captions must be a list of strings (wrap a single caption in [])")
        found: dict[str, np.ndarray] = {}
        missing: dict[str, None] = {}  # an ordered set
        for caption in captions:
            if caption in found or caption in missing:
                self.hits += 1
            elif (vec := self._lookup(caption)) is not None:
                found[caption] = vec
                self.hits += 1
            else:
                missing[caption] = None
                self.misses += 1
        if missing:
            found.update(self._compute(list(missing), compute))
        if not captions:
            return np.empty((0, self.dim), np.float32)
        return np.stack([found[c] for c in captions])

    @property
    def persistent(self) -> bool:
        """False once the cache has fallen back to memory only (folder unusable)."""
        return self.directory is not None

    def path_for(self, caption: str) -> Path | None:
        """The file that holds (or would hold) ``caption``'s embedding; None if memory only."""
        if self.directory is None:
            return None
        return self.directory / f"{cache_key(self.encoder_id, caption)}.npz"

    # ----------------------------------------------------------------- lookup
    def _lookup(self, caption: str) -> np.ndarray | None:
        vec = self._memory.get(caption)
        if vec is not None:
            self._memory.move_to_end(caption)
            return vec
        vec = self._read(caption)
        if vec is not None:
            self.disk_hits += 1
            self._remember(caption, vec)
        return vec

    def _remember(self, caption: str, vec: np.ndarray) -> None:
        vec.setflags(write=False)  # callers get copies (np.stack); the cached one stays intact
        self._memory[caption] = vec
        self._memory.move_to_end(caption)
        while len(self._memory) > self.capacity:
            self._memory.popitem(last=False)

    def _compute(self, missing: list[str], compute: ComputeFn) -> dict[str, np.ndarray]:
        emb = np.asarray(compute(list(missing)))
        if emb.shape != (len(missing), self.dim):
            raise CacheError(f"the text encoder returned shape {emb.shape} for {len(missing)} "
                             f"captions, expected ({len(missing)}, {self.dim})")
        emb = emb.astype(np.float32)  # a copy: later changes to compute's array cannot leak in
        if not np.isfinite(emb).all():
            raise CacheError("the text encoder returned NaN or infinite values; check the "
                             "text graph and its precision (keep it in FP32)")
        out = {}
        for caption, vec in zip(missing, emb):
            out[caption] = vec.copy()
            self._remember(caption, out[caption])
            self._write(caption, out[caption])
        return out

    # ----------------------------------------------------------------- disk
    def _usable_folder(self, folder: Path) -> Path | None:
        """folder if it can be created and written (probed with a real file), else None."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = PendingFile(folder / ".probe")
            with open(probe.temp, "xb"):
                pass
            probe.discard()
        except OSError as e:
            _warn(f"cannot write the caption cache folder {folder} ({e.strerror or e}); "
                  "caching in memory only for this run")
            return None
        return folder

    def _read(self, caption: str) -> np.ndarray | None:
        path = self.path_for(caption)
        if path is None:
            return None
        try:
            data = path.read_bytes()  # one read: a concurrent os.replace cannot tear it
        except FileNotFoundError:
            return None
        except OSError as e:
            _warn(f"cannot read caption cache entry {path} ({e.strerror or e}); recomputing")
            return None
        try:
            return self._decode(data, caption)
        except Exception as e:  # noqa: BLE001 - a cache file is untrusted input: any failure
            self._set_aside(path, str(e) or type(e).__name__)  # to decode means "not usable"
            return None

    def _decode(self, data: bytes, caption: str) -> np.ndarray:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            encoder_id = z["encoder_id"].tobytes()
            stored_caption = z["caption"].tobytes()
            vec = z["embedding"]
        if encoder_id != _utf8(self.encoder_id):
            raise _InvalidEntry(f"from another text encoder ({encoder_id[:80]!r})")
        if stored_caption != _utf8(caption):
            raise _InvalidEntry("for another caption")
        if vec.dtype != np.float32 or vec.shape != (self.dim,):
            raise _InvalidEntry(f"{vec.dtype} {vec.shape}, expected float32 ({self.dim},)")
        if not np.isfinite(vec).all():
            raise _InvalidEntry("holding NaN or infinite values")
        return vec

    def _write(self, caption: str, vec: np.ndarray) -> None:
        path = self.path_for(caption)
        if path is None:
            return
        buf = io.BytesIO()
        np.savez(buf, embedding=vec, encoder_id=np.frombuffer(_utf8(self.encoder_id), np.uint8),
                 caption=np.frombuffer(_utf8(caption), np.uint8))
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as e:
            _warn(f"cannot write the caption cache in {self.directory} ({e.strerror or e}); "
                  "caching in memory only for the rest of this run")
            self.directory = None

    def _set_aside(self, path: Path, reason: str) -> None:
        aside = path.with_name(path.name + ".corrupt")
        _warn(f"caption cache entry {path.name} is unusable ({reason}); moved to "
              f"{aside.name} and recomputing")
        try:
            os.replace(path, aside)
        except OSError:
            pass  # already moved by another process, or read-only: recomputing is enough


def _warn(message: str) -> None:
    warnings.warn(message, Tr2mRuntimeWarning, stacklevel=3)
