"""One output folder: which outputs it holds, its creation and clean-up, and its sinks.

`Outputs.prepare` creates the folder (and checks that it is writable) before any work starts;
after a run that wrote no frame, `remove_created` takes away what `prepare` made, so a failed
or interrupted start leaves nothing behind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .atomic import PendingFile
from .display_range import auto_range
from .errors import OutputError
from .labelled_sink import LabelledVideoSink
from .sinks import Intrinsics, Sink, SinkGroup, make_sink

# Output name -> file or folder name under Outputs.folder.
OUTPUT_NAMES = {"video": "depth.mp4", "png16": "png16", "npz": "npz", "ply": "ply", "csv": "depth.csv"}


@dataclass
class Outputs:
    """Which outputs to write under one folder, and how.

    range_m: fixed colour range of the video in metres; None = auto from the first frame.
    fps: frame rate of the video. label: corner text on the video ("" for none).
    maps: the NPZ files also hold the scale, shift and relative maps (costs a resize each).
    """

    folder: Path
    video: bool = True
    side_by_side: bool = False
    png16: bool = False
    npz: bool = False
    maps: bool = False
    ply: bool = False
    intrinsics: Optional[Intrinsics] = None
    fov_deg: Optional[float] = None
    ply_stride: int = 1
    csv: bool = False
    range_m: Optional[Tuple[float, float]] = None
    fps: float = 30.0
    label: str = ""
    _created: List[Path] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.selected():
            raise OutputError("no output selected: enable at least one of video, png16, npz, ply, csv")
        if self.ply and (self.intrinsics is None) == (self.fov_deg is None):
            raise OutputError("the PLY output needs a camera: give a field of view (--fov DEG) "
                              "or intrinsics (--intrinsics fx,fy,cx,cy), not both")

    def selected(self) -> List[str]:
        return [name for name in OUTPUT_NAMES if getattr(self, name)]

    def paths(self) -> Dict[str, Path]:
        """Output name -> the file (video, csv) or folder (png16, npz, ply) it writes."""
        return {name: self.folder / OUTPUT_NAMES[name] for name in self.selected()}

    def prepare(self) -> None:
        """Create the folder and check that files can be written in it (OutputError if not)."""
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.folder}: cannot create the output folder ({e.strerror or e})") from e
        self._created = missing[::-1] + [p for p in self.paths().values() if not p.exists()]
        probe = PendingFile(self.folder / ".probe")
        try:
            with open(probe.temp, "xb"):
                pass
        except OSError as e:
            self.remove_created()
            raise OutputError(f"{self.folder}: cannot write in the output folder ({e.strerror or e})") from e
        finally:
            probe.discard()

    def remove_created(self) -> None:
        """After a run that wrote no frame: remove the output files (a header-only CSV) and the
        folders that did not exist before `prepare`, folders only if empty."""
        for path in sorted(self._created, key=lambda p: len(p.parts), reverse=True):
            try:
                path.rmdir() if path.is_dir() else path.unlink()
            except OSError:
                pass  # not empty or already gone: leave it

    def open(self, first_depth: np.ndarray) -> Dict[str, Sink]:
        """The sinks by output name, built when the first depth map [H, W] exists (it may set the
        colour range of the video)."""
        paths, sinks = self.paths(), {}
        builders = {
            "video": lambda: LabelledVideoSink(paths["video"], min_m=lo, max_m=hi, fps=self.fps,
                                               side_by_side=self.side_by_side, label=self.label),
            "png16": lambda: make_sink("png16", paths["png16"]),
            "npz": lambda: make_sink("npz", paths["npz"], compressed=False),  # float32 barely compresses
            "ply": lambda: make_sink("ply", paths["ply"], intrinsics=self.intrinsics, hfov_deg=self.fov_deg,
                                     stride=self.ply_stride),
            "csv": lambda: make_sink("csv", paths["csv"]),
        }
        lo, hi = self.range_m or auto_range(first_depth)
        try:
            for name in self.selected():
                sinks[name] = builders[name]()
        except BaseException:
            SinkGroup(list(sinks.values())).abort()
            raise
        return sinks
