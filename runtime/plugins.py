"""Parts the runtime finds at run time instead of importing: entry points of installed packages.

The runtime never imports the torch side (tr2m, export, calib). Where a runtime command needs it
(the demo's bundle builder, --auto-caption's captioner), the package that provides the part
registers it under an entry-point group in setup.cfg, and the runtime loads it by name. Only
installed package metadata is consulted: nothing from a bundle or an input is ever imported.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Type

from .errors import Tr2mRuntimeError


def load_plugin(group: str, name: str, *, kind: str, needs: str, error: Type[Tr2mRuntimeError]) -> Any:
    """The object registered as ``name`` in the entry-point ``group``.

    kind: what it is, for messages ("captioner"); needs: the one-line remedy that starts every
    error (e.g. "... needs the torch extra (pip install 'tr2m[torch]')"). Raises ``error`` when
    nothing is registered, or when importing it fails (the extra is not installed).
    """
    found = entry_points(group=group, name=name)
    if not found:
        raise error(f"{needs}: no {kind} {name!r} is registered in the entry-point group {group!r}")
    entry = next(iter(found))
    try:
        return entry.load()
    except ImportError as e:
        raise error(f"{needs}: {entry.value} could not be imported ({e})") from None
