"""The offline demo's bundle builder, registered for the runtime under the entry-point group
``tr2m.bundle_builders`` (setup.cfg) as ``tiny-demo``: `tr2m-run --demo` without --bundle finds
it there, so the torch-free runtime never imports export."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .bundle import ExportOptions, export_bundle


def build_demo_bundle(folder: Path, log: Callable[[str], None]) -> None:
    """`tr2m-export onnx --preset tiny --random-init --out folder`: the tiny UNTRAINED bundle."""
    export_bundle(ExportOptions(out=Path(folder), preset="tiny", random_init=True), log=lambda m: log(f"  {m}"))
