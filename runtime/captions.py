"""Which caption describes which frame: one fixed caption, or ranges from a JSON or SRT file.

Range semantics (both kinds): half-open, ``start <= t < end``; a missing ``end`` runs to the end
of the stream. Ranges are checked in file order and the first match wins (overlaps allowed).
Frames in no range (gaps), and frames without a timestamp facing time ranges, get the schedule's
default caption: the ``default`` argument (the CLI passes ``--caption``), else the JSON file's
``"default"`` key, else ``DEFAULT_CAPTION``.

JSON: a list of ranges, or ``{"default": str, "ranges": [...]}``; each range is
``{"start": s, "end": s, "caption": str}`` in seconds or ``{"start_frame": i, "end_frame": j,
"caption": str}`` in frame indices (0-based). SRT: standard numbered cues
``HH:MM:SS,mmm --> HH:MM:SS,mmm`` (a '.' separator is accepted), text lines joined by a space,
simple markup (<i>, {\\an8}) removed.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from runtime.errors import CaptionError, CaptionFileError

DEFAULT_CAPTION = "an image of a scene"


@dataclass(frozen=True)
class CaptionRange:
    """One caption over [start, end) in seconds (``unit="s"``) or frame indices (``"frame"``)."""

    caption: str
    start: float
    end: float = math.inf
    unit: str = "s"

    def __post_init__(self) -> None:
        if self.unit not in ("s", "frame"):
            raise CaptionError(f"range unit must be 's' or 'frame', got {self.unit!r}")
        if not isinstance(self.caption, str) or not self.caption.strip():
            raise CaptionError("a caption range needs a non-empty caption")
        if not (0 <= self.start < self.end):
            raise CaptionError(f"range [{self.start}, {self.end}) is empty or negative")

    def covers(self, frame_index: int, timestamp_s: float | None) -> bool:
        t = frame_index if self.unit == "frame" else timestamp_s
        return t is not None and self.start <= t < self.end


@dataclass(frozen=True)
class CaptionSchedule:
    """Frame -> caption. Build with ``fixed(caption)`` or ``from_file(path, default=None)``."""

    default: str = DEFAULT_CAPTION
    ranges: tuple[CaptionRange, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.default, str) or not self.default.strip():
            raise CaptionError("the default caption must be a non-empty string")

    @classmethod
    def fixed(cls, caption: str) -> "CaptionSchedule":
        """The same caption for every frame."""
        return cls(default=caption)

    @classmethod
    def from_file(cls, path: Path | str, default: str | None = None) -> "CaptionSchedule":
        """Ranges from a .json or .srt file; ``default`` covers the gaps (see module doc)."""
        path = Path(path)
        parse = _PARSERS.get(path.suffix.lower())
        if parse is None:
            raise CaptionFileError(f"{path}: unsupported caption file type "
                                   f"'{path.suffix}'; use one of {sorted(_PARSERS)}")
        file_default, ranges = parse(path, _read_text(path))
        if not ranges:
            raise CaptionFileError(f"{path}: no caption ranges found")
        return cls(default=default or file_default or DEFAULT_CAPTION, ranges=tuple(ranges))

    def caption_at(self, frame_index: int, timestamp_s: float | None = None) -> str:
        """The caption of frame ``frame_index`` (0-based) shown at ``timestamp_s`` seconds."""
        for r in self.ranges:
            if r.covers(frame_index, timestamp_s):
                return r.caption
        return self.default

    def captions(self) -> list[str]:
        """Every caption the schedule can produce (unique, in order): to warm a cache."""
        return list(dict.fromkeys([r.caption for r in self.ranges] + [self.default]))


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CaptionFileError(f"{path}: caption file not found") from None
    except OSError as e:
        raise CaptionFileError(f"{path}: cannot read caption file ({e.strerror})") from e
    try:
        text = data.decode("utf-8-sig")  # tolerate a BOM (common in SRT files)
    except UnicodeDecodeError as e:
        raise CaptionFileError(f"{path}: not UTF-8 text (byte {e.start}); re-save it as UTF-8"
                               ) from None
    if not text.strip():
        raise CaptionFileError(f"{path}: caption file is empty")
    return text


# ------------------------------------------------------------------------------------ JSON
_TIME_KEYS = {"start", "end"}
_FRAME_KEYS = {"start_frame", "end_frame"}


def _parse_json(path: Path, text: str) -> tuple[str | None, list[CaptionRange]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise CaptionFileError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    default = None
    if isinstance(doc, dict):
        unknown = set(doc) - {"default", "ranges"}
        if unknown or not isinstance(doc.get("ranges"), list):
            raise CaptionFileError(f"{path}: expected a list of ranges or "
                                   '{"default": ..., "ranges": [...]}')
        default, doc = doc.get("default"), doc["ranges"]
        if default is not None and (not isinstance(default, str) or not default.strip()):
            raise CaptionFileError(f"{path}: \"default\" must be a non-empty string")
    if not isinstance(doc, list):
        raise CaptionFileError(f"{path}: expected a JSON list of caption ranges")
    return default, [_json_range(path, i, item) for i, item in enumerate(doc)]


def _json_range(path: Path, i: int, item: Any) -> CaptionRange:
    where = f"{path}: range #{i}"
    if not isinstance(item, dict) or not isinstance(item.get("caption"), str):
        raise CaptionFileError(f"{where} needs a \"caption\" string")
    keys = set(item) - {"caption"}
    unit = "frame" if keys & _FRAME_KEYS else "s"
    start_key, end_key = ("start_frame", "end_frame") if unit == "frame" else ("start", "end")
    if keys - {start_key, end_key} or start_key not in keys:
        raise CaptionFileError(f"{where} must have \"start\"/\"end\" (seconds) or "
                               f"\"start_frame\"/\"end_frame\", got keys {sorted(item)}")
    start, end = item[start_key], item.get(end_key)
    for v in (start,) if end is None else (start, end):
        ok = isinstance(v, int) if unit == "frame" else isinstance(v, (int, float))
        if not ok or isinstance(v, bool):
            raise CaptionFileError(f"{where}: {start_key}/{end_key} must be "
                                   f"{'integers' if unit == 'frame' else 'numbers'}, got {v!r}")
    end = math.inf if end is None else end
    try:
        return CaptionRange(caption=item["caption"].strip(), start=start, end=end, unit=unit)
    except CaptionError as e:
        raise CaptionFileError(f"{where}: {e}") from None


# ------------------------------------------------------------------------------------ SRT
_SRT_TIME = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})\s*-->\s*"
                       r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")
_SRT_MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")


def _srt_seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def _parse_srt(path: Path, text: str) -> tuple[str | None, list[CaptionRange]]:
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n").strip())
    return None, [_srt_cue(path, block) for block in blocks]


def _srt_cue(path: Path, block: str) -> CaptionRange:
    lines = block.split("\n")
    if lines and lines[0].strip().isdigit():
        lines = lines[1:]  # the cue number
    match = _SRT_TIME.match(lines[0]) if lines else None
    if match is None:
        raise CaptionFileError(f"{path}: malformed SRT cue {block[:60]!r}: expected "
                               "'HH:MM:SS,mmm --> HH:MM:SS,mmm'")
    g = match.groups()
    caption = " ".join(_SRT_MARKUP.sub("", ln).strip() for ln in lines[1:]).strip()
    try:
        return CaptionRange(caption=" ".join(caption.split()), start=_srt_seconds(*g[:4]),
                            end=_srt_seconds(*g[4:]))
    except CaptionError as e:
        raise CaptionFileError(f"{path}: SRT cue at {lines[0].strip()!r}: {e}") from None


_PARSERS: dict[str, Callable[[Path, str], tuple[str | None, list[CaptionRange]]]] = {
    ".json": _parse_json,
    ".srt": _parse_srt,
}
