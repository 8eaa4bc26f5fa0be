"""Atomic file writes: write a temporary file in the destination folder, then os.replace.

A reader (another process, a player, a later run) sees either the old file or the complete new
one, never a partial file, and a crash leaves at most a hidden ``.NAME.XXXX.tmpSUFFIX`` behind.
Not fsync'ed: this protects against concurrent readers and crashed processes, not power loss.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

TEMP_MARK = ".tmp"


def temp_name_for(path: Path) -> Path:
    """A fresh hidden temporary path next to ``path`` that keeps its suffix (format guessing
    by PyAV/OpenCV looks at the extension)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_MARK}{path.suffix}")


class PendingFile:
    """A file being written under a temporary name until ``commit()`` moves it into place.

    Usage: ``p = PendingFile(path); write to p.temp; p.commit()`` (or ``p.discard()``).
    Also a context manager: commits on success, discards on an exception.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.temp = temp_name_for(self.path)
        self.done = False

    def commit(self) -> Path:
        """Atomically replace ``path`` with the temporary file; returns ``path``. If the rename
        fails (e.g. ``path`` is a folder), the temporary file is removed and the error raised."""
        try:
            os.replace(self.temp, self.path)
        except BaseException:
            self.discard()
            raise
        self.done = True
        return self.path

    def discard(self) -> None:
        """Remove the temporary file if it exists (no error if it was never created)."""
        self.done = True
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "PendingFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with PendingFile(path) as pending:
        with open(pending.temp, "xb") as f:
            f.write(data)
    return pending.path
