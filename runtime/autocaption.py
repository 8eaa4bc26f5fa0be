"""The `tr2m-run --auto-caption` hook: a caption schedule made before the depth run.

Captioning needs PyTorch and a vision-language model, which the runtime never imports. The torch
side (tr2m.captioning) registers its captioner under the entry-point group ``tr2m.captioners``
(setup.cfg); the runtime looks it up by name and hands it a `CaptionRequest` of plain values.
Without the torch extra the lookup or the import fails, and that is one error line naming it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import Tr2mRuntimeError
from .plugins import load_plugin

GROUP = "tr2m.captioners"
VIDEO = "video"
NEEDS = "--auto-caption needs the torch extra (pip install 'tr2m[torch]')"


class AutoCaptionError(Tr2mRuntimeError):
    """The captioner could not caption this input (its message says why)."""


class AutoCaptionUnavailable(AutoCaptionError):
    """No captioner is installed, or it cannot be imported."""


@dataclass(frozen=True)
class CaptionRequest:
    """Caption the scenes of `source` (a video file or image folder) into the schedule `out`
    (.srt or .json); model: the vision-language model (None: the captioner's default)."""

    source: str
    out: Path
    model: Optional[str] = None
    quiet: bool = False


# A captioner writes request.out and returns its path; progress and notes go through log.
Captioner = Callable[[CaptionRequest, Callable[[str], None]], Path]


def find_captioner(name: str = VIDEO, group: Optional[str] = None) -> Captioner:
    """The captioner registered as ``name`` in the entry-point ``group`` (default GROUP)."""
    return load_plugin(group or GROUP, name, kind="captioner", needs=NEEDS, error=AutoCaptionUnavailable)
