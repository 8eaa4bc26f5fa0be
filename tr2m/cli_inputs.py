"""Command-line inputs shared by `tr2m-train` and `tr2m-eval`: the error a user can fix (printed
as one `error:` line, exit 2), and the checks both commands run on their arguments."""
from __future__ import annotations

from typing import Any, Optional, Tuple

EXIT_USAGE = 2


class InputError(Exception):
    """A bad input the user can fix; printed as one `error:` line."""


def one_line(error: Any) -> str:
    """The error's message on one line (messages from libraries may span several)."""
    return " ".join(str(error).split())


def parse_size(value: Optional[str], option: Optional[str] = "--input-size") -> Optional[Tuple[int, int]]:
    """'HxW' -> (H, W), both positive multiples of 14 (the ViT patch); None when not given.

    The one parser of every command's size option; ``option`` names it in the error (None: the
    caller names it, as click does).
    """
    if not value:
        return None
    named = f"{option} " if option else ""
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise InputError(f"{named}expected HxW such as 434x560, got {value!r}") from None
    if height % 14 or width % 14 or height <= 0 or width <= 0:
        nearest = f"{max(14, round(height / 14) * 14)}x{max(14, round(width / 14) * 14)}"
        raise InputError(f"{named}{value}: height and width must be positive multiples of 14 (e.g. {nearest})")
    return height, width


def check_checkpoint(path: str) -> None:
    """Read the checkpoint once up front so any failure names the file (torch.load on a file that
    is no checkpoint at all can raise a bare KeyError from its unpickler)."""
    import tr2m

    try:
        tr2m.read_checkpoint(path)
    except tr2m.CheckpointError:
        raise
    except Exception as e:
        raise InputError(f"cannot read checkpoint {path}: not a PyTorch or safetensors checkpoint "
                         f"({type(e).__name__}: {one_line(e)})") from e
