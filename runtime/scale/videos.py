"""What `tr2m-batch` runs: SOURCES expanded to videos, a unique folder name for each, and each
video's captions.

SOURCES may be video files, image folders (one source each), glob patterns, or a text file
(.txt / .list) naming one source per line (relative to the list's folder; blank lines and
``#`` comments skipped). Captions, first match wins: the mapping file (``--captions-map``, JSON
``{"name or file name": "caption" or "schedule.srt|.json"}``), a schedule beside the video (same
stem, ``.srt`` or ``.json``), then ``--caption`` (or the default caption).
"""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..captions import DEFAULT_CAPTION, CaptionSchedule
from ..errors import CaptionFileError, SourceError

LIST_SUFFIXES = frozenset({".txt", ".list"})
SCHEDULE_SUFFIXES = (".srt", ".json")


@dataclass(frozen=True)
class VideoJob:
    """One video: its source spec, its folder name under DIR, and where its captions come from
    (a caption, or a schedule file whose gaps fall back to ``caption``)."""

    source: str
    name: str
    caption: str
    schedule_file: Optional[str] = None

    def schedule(self) -> CaptionSchedule:
        if self.schedule_file:
            return CaptionSchedule.from_file(self.schedule_file, default=self.caption)
        return CaptionSchedule.fixed(self.caption)


def expand(specs: Sequence[str]) -> List[str]:
    """SOURCES -> source specs in order, duplicates dropped. SourceError if nothing matches."""
    out: Dict[str, None] = {}
    for spec in specs:
        for source in _expand_one(spec):
            out.setdefault(source, None)
    if not out:
        raise SourceError(f"no video matched {' '.join(specs)}: give video files, folders, globs or a list file")
    return list(out)


def _expand_one(spec: str) -> List[str]:
    path = Path(spec)
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return _read_list(path)
    if path.exists():
        return [str(path)]
    matches = sorted(glob.glob(spec, recursive=True))
    # A name that neither exists nor matches stays: it is reported as a failed video, not dropped.
    return matches if glob.has_magic(spec) else [spec]


def _read_list(path: Path) -> List[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: cannot read the list of sources ({e})") from None
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [str(p if (p := Path(e)).is_absolute() else path.parent / p) for e in entries]


def unique_names(sources: Sequence[str]) -> List[str]:
    """A folder name per source: its stem, with the parent folder's name (then a number) added
    when two sources share a stem (cam1/take.mp4 and cam2/take.mp4 -> cam1_take, cam2_take)."""
    stems = [Path(s).stem or "input" for s in sources]
    names = [s if stems.count(s) == 1 else f"{Path(src).parent.name}_{s}" for s, src in zip(stems, sources)]
    seen: Dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def load_caption_map(path: Optional[str]) -> Dict[str, str]:
    if path is None:
        return {}
    try:
        mapping = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CaptionFileError(f"{path}: cannot read the captions map ({e})") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise CaptionFileError(f'{path}: the captions map must be a JSON object {{"video name": "caption or file"}}')
    return mapping


def jobs(specs: Sequence[str], *, caption: Optional[str] = None, caption_map: Optional[str] = None) -> List[VideoJob]:
    """SOURCES -> one VideoJob per video, captions resolved (files are checked when a worker opens them)."""
    sources = expand(specs)
    mapping = load_caption_map(caption_map)
    base = Path(caption_map).parent if caption_map else Path(".")
    fallback = caption or DEFAULT_CAPTION
    out = []
    for source, name in zip(sources, unique_names(sources)):
        chosen = mapping.get(name) or mapping.get(Path(source).name)
        if chosen is not None and Path(chosen).suffix.lower() in SCHEDULE_SUFFIXES:
            out.append(VideoJob(source, name, fallback, str(base / chosen)))
        elif chosen is not None:
            out.append(VideoJob(source, name, chosen))
        else:
            out.append(VideoJob(source, name, fallback, _beside(source)))
    return out


def _beside(source: str) -> Optional[str]:
    for suffix in SCHEDULE_SUFFIXES:
        candidate = Path(source).with_suffix(suffix)
        if candidate.is_file():
            return str(candidate)
    return None
