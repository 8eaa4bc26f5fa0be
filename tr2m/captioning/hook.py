"""tr2m.captioning's answer to the runtime's `--auto-caption` hook (runtime/autocaption.py).

setup.cfg registers `caption_schedule` under the entry-point group ``tr2m.captioners`` as
``video``, so `tr2m-run SRC --auto-caption` finds it without the runtime importing torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from runtime.autocaption import AutoCaptionError, CaptionRequest

from .cli import caption_video
from .models import DEFAULT_DESCRIBER, CaptionModelError


def caption_schedule(request: CaptionRequest, log: Callable[[str], None]) -> Path:
    """Detect the scenes of request.source, caption each, write request.out; returns its path."""
    try:
        return caption_video(request.source, request.out, model=request.model or DEFAULT_DESCRIBER,
                             quiet=request.quiet, log=log)
    except (CaptionModelError, ValueError) as e:  # bad model id, unwritable schedule form: one line
        raise AutoCaptionError(f"--auto-caption: {e}") from e
