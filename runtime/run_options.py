"""`RunOptions`: how one source is run (captions, outputs, loop, predictor), built once at the edge.

A front end (the `tr2m-run` command, a batch worker, a notebook) builds one frozen `RunOptions`
and hands it to `runtime.source_run`; every rule that ties options together is checked here, in
`__post_init__`, so a contradiction is one `OptionsError` before any work starts.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

from .backends.openvino import OpenVINOOptions
from .captions import DEFAULT_CAPTION, CaptionSchedule
from .engine import Engine
from .errors import OptionsError
from .output_folder import OUTPUT_NAMES, Outputs
from .sinks import Intrinsics

RangeChoice = Union[None, str, Tuple[float, float]]  # None: the bundle's; "auto"; (min_m, max_m)
_OV_FIELDS = {"device": "device", "precision": "inference_precision", "hint": "hint", "cache_dir": "cache_dir"}


@dataclass(frozen=True)
class RunOptions:
    """Options of a run; names follow `tr2m-run`'s flags (``--ply-stride`` -> ``ply_stride``).

    caption / captions_file: the caption of every frame / a schedule file (JSON or SRT; caption
    is then its default). auto_caption / caption_model: the front end captions the scenes first
    (`runtime.autocaption`) and passes the schedule it wrote. depth_range: the video's fixed colour range, None for the bundle's,
    "auto" for one fixed from the first frame. keyframe_every / smooth: keyframe mode.
    backend / precision / cache_dir: how `open_engine` opens the bundle; ov_*: the openvino
    backend's device, inference precision, performance hint and compiled-model cache.
    """

    caption: Optional[str] = None
    captions_file: Optional[Path] = None
    auto_caption: bool = False
    caption_model: Optional[str] = None
    video: bool = True
    side_by_side: bool = False
    png16: bool = False
    npz: bool = False
    maps: bool = False
    ply: bool = False
    fov: Optional[float] = None
    intrinsics: Optional[Intrinsics] = None
    ply_stride: int = 1
    csv: bool = False
    depth_range: RangeChoice = None
    max_frames: Optional[int] = None
    batch: int = 1
    keyframe_every: Optional[int] = None
    smooth: Optional[float] = None
    backend: str = "auto"
    precision: str = "fp32"
    cache_dir: Optional[Path] = None
    ov_device: Optional[str] = None
    ov_precision: Optional[str] = None
    ov_hint: Optional[str] = None
    ov_cache_dir: Optional[Path] = None

    def __post_init__(self) -> None:
        for failed, message in self._rules():
            if failed:
                raise OptionsError(message)

    def _rules(self):
        """(broken, message) pairs: options that only make sense together, and ranges."""
        camera = self.fov is not None or self.intrinsics is not None
        keyframes = self.keyframe_every is not None
        return [
            (not any(getattr(self, name) for name in OUTPUT_NAMES),
             "no output selected: enable at least one of video, png16, npz, ply, csv"),
            (camera and not self.ply, "--fov/--intrinsics apply to --ply: add --ply"),
            (self.fov is not None and self.intrinsics is not None, "give --fov or --intrinsics, not both"),
            (self.ply and not camera, "--ply needs the camera: --fov DEG or --intrinsics fx,fy,cx,cy"),
            (self.maps and not self.npz, "--maps stores the scale/shift/relative maps in the NPZ files: add --npz"),
            (self.side_by_side and not self.video, "--side-by-side is a video layout: drop --no-video"),
            (self.smooth is not None and not keyframes, "--smooth applies to keyframe mode: add --keyframe-every K"),
            (keyframes and self.batch > 1, "keyframe mode runs one frame at a time: drop --batch"),
            (self.backend not in ("auto", "openvino") and self.openvino_options() is not None,
             f"--ov-* options apply to the openvino backend, not {self.backend}: drop them or pass --backend openvino"),
            (self.auto_caption and self.captions_file is not None, "give --captions or --auto-caption, not both"),
            (self.caption_model is not None and not self.auto_caption,
             "--caption-model applies to --auto-caption: add it"),
            (self.caption is not None and not self.caption.strip(),
             "--caption is empty: describe the scene, e.g. 'an office'"),
            (self.batch < 1, f"--batch must be at least 1, got {self.batch}"),
            (self.max_frames is not None and self.max_frames < 1, f"--max-frames must be at least 1, got {self.max_frames}"),
            (self.keyframe_every is not None and self.keyframe_every < 1,
             f"--keyframe-every must be at least 1, got {self.keyframe_every}"),
            (self.ply_stride < 1, f"--ply-stride must be at least 1, got {self.ply_stride}"),
            (not _valid_range(self.depth_range), f"--range must be MIN:MAX with 0 <= MIN < MAX, or auto; "
                                                 f"got {self.depth_range!r}"),
        ]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "RunOptions":
        """From a mapping with (at least) these field names, e.g. click's parsed parameters;
        other keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def replace(self, **changes: Any) -> "RunOptions":
        return dataclasses.replace(self, **changes)

    def open_engine(self, bundle: Union[str, Path]) -> Engine:
        """The bundle opened with these options' backend, precision and caption-cache folder. In
        keyframe mode the fused image graph is not loaded: the keyframe predictor runs the halves."""
        return Engine.open(bundle, backend=self.backend, precision=self.precision, cache_dir=self.cache_dir,
                           backend_options=self.openvino_options(), lazy=self.keyframe_every is not None)

    def openvino_options(self) -> Optional[OpenVINOOptions]:
        """The --ov-* options as `OpenVINOOptions` (None when none was given: OpenVINO's defaults)."""
        given = {name: getattr(self, f"ov_{key}") for key, name in _OV_FIELDS.items()}
        given = {k: str(v) if k == "cache_dir" else v for k, v in given.items() if v is not None}
        return OpenVINOOptions(**given) if given else None

    def schedule(self, fallback: Optional[CaptionSchedule] = None) -> CaptionSchedule:
        """The caption schedule: the file's, else the caption for every frame, else ``fallback``
        (default: `DEFAULT_CAPTION` for every frame)."""
        caption = self.caption.strip() if self.caption else None
        if self.captions_file is not None:
            return CaptionSchedule.from_file(self.captions_file, default=caption)
        if caption:
            return CaptionSchedule.fixed(caption)
        return fallback or CaptionSchedule.fixed(DEFAULT_CAPTION)

    def outputs(self, folder: Union[str, Path]) -> Outputs:
        """The outputs these options select, under ``folder`` (range, fps and label are set by the run)."""
        return Outputs(folder=Path(folder), video=self.video, side_by_side=self.side_by_side, png16=self.png16,
                       npz=self.npz, maps=self.maps, ply=self.ply, intrinsics=self.intrinsics, fov_deg=self.fov,
                       ply_stride=self.ply_stride, csv=self.csv)


def _valid_range(choice: RangeChoice) -> bool:
    if choice is None or choice == "auto":
        return True
    try:
        lo, hi = (float(v) for v in choice)
    except (TypeError, ValueError):
        return False
    return 0 <= lo < hi < math.inf
