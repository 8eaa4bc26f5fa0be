"""The runtime's exceptions: one base class, one subclass per edge that can fail.

Every message is a single line that says what is wrong and what to do about it; the CLI prints
``error: <message>`` and exits non-zero, so a message must make sense without a traceback.
"""
from __future__ import annotations


class Tr2mRuntimeError(Exception):
    """Base of every error the runtime raises on purpose."""

    def __str__(self) -> str:
        # Messages may be built from file contents or library errors: keep them to one line.
        return " ".join(super().__str__().split())


class FrameError(Tr2mRuntimeError, ValueError):
    """A frame array has a dtype or shape the runtime cannot use."""


class SourceError(Tr2mRuntimeError):
    """An input (video, image, folder, camera) cannot be opened or decoded."""


class CaptionError(Tr2mRuntimeError, ValueError):
    """A caption or caption schedule is invalid."""


class CaptionFileError(CaptionError):
    """A caption file (JSON or SRT) cannot be read or parsed."""


class CacheError(Tr2mRuntimeError):
    """The caption-embedding cache was given embeddings it must not store."""


class OutputError(Tr2mRuntimeError):
    """An output (video, PNG, NPZ, PLY, CSV) cannot be written."""


class OptionsError(Tr2mRuntimeError, ValueError):
    """Run options that contradict each other or are out of range."""


class BundleError(Tr2mRuntimeError):
    """An exported bundle is missing, incomplete or does not match this runtime."""


class ClusterError(Tr2mRuntimeError):
    """Ray is missing, or a Ray cluster cannot be started or reached."""


class Tr2mRuntimeWarning(UserWarning):
    """Something was skipped or degraded but the run goes on (a corrupt cache entry, an
    unreadable file in a folder, a video cut short)."""
