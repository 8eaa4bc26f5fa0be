"""One output folder per video, published whole or not at all, and checked before it is trusted.

A worker writes a video's outputs into a hidden staging folder beside the final one
(``DIR/.NAME.partial-HOST-PID-XXXX``), seals it with ``complete.json`` (every file's size and
sha256), then renames it to ``DIR/NAME``. A reader therefore sees a complete folder or none; a
killed worker leaves only a staging folder, which the driver removes. A later run trusts a folder
only if its seal is there and every file still matches it.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
from pathlib import Path
from typing import Dict, Iterator, Optional

from ..atomic import atomic_write_bytes
from ..bundle import sha256_file

SEAL = "complete.json"
PARTIAL_MARK = ".partial-"


def staging_folder(out: Path, name: str) -> Path:
    """A fresh hidden folder beside ``out/name`` (same file system, so the final rename is atomic)."""
    tag = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    folder = out / f".{name}{PARTIAL_MARK}{tag}"
    folder.mkdir(parents=True)
    return folder


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != SEAL:
            yield path


def seal(folder: Path, summary: Optional[dict] = None) -> Path:
    """Write ``complete.json``: every file under ``folder`` with its size and sha256."""
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in _files(folder)}
    record = {"files": files, "summary": summary or {}}
    return atomic_write_bytes(folder / SEAL, (json.dumps(record, indent=1) + "\n").encode())


def check_complete(folder: Path) -> Optional[str]:
    """None if ``folder`` is sealed and every file matches its seal; else why not (one line)."""
    try:
        record = json.loads((folder / SEAL).read_text())
        listed: Dict[str, dict] = record["files"]
    except FileNotFoundError:
        return f"{folder.name}: no {SEAL} (never finished)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{folder.name}: unreadable {SEAL} ({e})"
    present = {p.relative_to(folder).as_posix() for p in _files(folder)}
    if present != set(listed):
        extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
        return f"{folder.name}: files differ from {SEAL} (missing {missing[:3]}, extra {extra[:3]})"
    for rel, meta in listed.items():
        path = folder / rel
        if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            return f"{folder.name}: {rel} changed since it was written"
    return None


def publish(staging: Path, final: Path) -> Path:
    """Move a sealed staging folder to ``final``, replacing an old incomplete one."""
    if final.exists():
        trash = final.with_name(f".{final.name}{PARTIAL_MARK}old-{secrets.token_hex(3)}")
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    return final


def remove_partials(out: Path) -> int:
    """Delete every staging folder under ``out`` (call when no worker is running); -> how many."""
    count = 0
    for folder in out.glob(f".*{PARTIAL_MARK}*"):
        shutil.rmtree(folder, ignore_errors=True)
        count += 1
    return count
