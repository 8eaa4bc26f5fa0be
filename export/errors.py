"""Turning known failures into one-line CLI errors (no tracebacks for the user)."""
from __future__ import annotations

import signal
import sys
import warnings
from typing import Callable, TypeVar

import click

T = TypeVar("T")


def known_errors() -> tuple:
    """Exceptions whose message is meant for the user (raised on purpose at the edges)."""
    from runtime.errors import Tr2mRuntimeError
    from tr2m.checkpoint import CheckpointError

    from .bundle import ExportError
    from .calibration import CalibrationUnavailable
    from .openvino_ir import OpenVINOExportError
    from .trt.errors import TrtError

    return (ExportError, CalibrationUnavailable, OpenVINOExportError, TrtError, CheckpointError, Tr2mRuntimeError, FileNotFoundError, NotADirectoryError,
            PermissionError, ValueError, OSError)


def run_cli(action: Callable[[], T]) -> T:
    """Run `action`; known errors print `error: ...` and exit 2, Ctrl-C exits 130.

    SIGTERM is turned into KeyboardInterrupt so that clean-up (`finally`) runs for it too.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # one `warning: ...` line each, no source excerpt
        try:
            return action()
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was written", err=True)
            sys.exit(130)
        except known_errors() as e:
            message = " ".join(str(e).split()) or type(e).__name__
            click.echo(f"error: {message}", err=True)
            sys.exit(2)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {category.__name__}: {' '.join(str(message).split())}", err=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
