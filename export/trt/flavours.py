"""The TensorRT flavours one builder serves: TensorRT 10, TensorRT 11 and TensorRT for RTX.

They share the builder API (Builder, OnnxParser, IBuilderConfig, optimization profiles) and
differ in a few capabilities, recorded here instead of branching on names in the builder:

| flavour    | module        | typing                  | timing cache | builds for                     |
|------------|---------------|-------------------------|--------------|--------------------------------|
| tensorrt10 | tensorrt 10.x | strong, or weak + FP16  | yes          | the GPU it runs on (Jetson too)|
| tensorrt11 | tensorrt 11.x | strong only             | yes          | the GPU it runs on             |
| rtx        | tensorrt_rtx  | strong only             | no (no-op)   | a named SM, even without a GPU |

Strongly typed means precision comes from the graph (FP16 tensors, explicit Q/DQ): TensorRT 11
and TensorRT for RTX removed BuilderFlag.FP16/INT8, the calibrators and per-layer precision.
TensorRT 10 keeps the weak flags, so on Jetson (JetPack 6) an FP16 engine can also be built from
the FP32 graph. INT8 always comes from an explicit Q/DQ graph (calib/), never a calibrator.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Dict, Optional, Tuple

from runtime.trt_sidecar import FLAVOUR_IDS, current_gpu_cc, flavour_for_module, normalize_cc

from .errors import TargetError, TensorRTNotInstalled

INSTALL_HINT = {
    "tensorrt": "pip install 'tr2m[tensorrt]' (TensorRT 10/11 for CUDA 13 drivers; 'tr2m[tensorrt-cu12]' for CUDA 12)",
    "rtx": "pip install 'tr2m[rtx]' (TensorRT for RTX: RTX GPUs; also builds engines ahead of time without a GPU)",
}


@dataclass(frozen=True)
class Flavour:
    """What the builder needs to know about one TensorRT flavour."""

    name: str
    weak_typing: bool      # BuilderFlag.FP16 on an FP32 graph is available
    timing_cache: bool     # IBuilderConfig timing caches do something
    ahead_of_time: bool    # can build for a named compute capability, GPU or not

    @property
    def module_name(self) -> str:
        return FLAVOUR_IDS[self.name].module

    @property
    def label(self) -> str:
        return FLAVOUR_IDS[self.name].label

    @property
    def extra(self) -> str:
        return FLAVOUR_IDS[self.name].extra


FLAVOURS: Dict[str, Flavour] = {
    "tensorrt10": Flavour("tensorrt10", weak_typing=True, timing_cache=True, ahead_of_time=False),
    "tensorrt11": Flavour("tensorrt11", weak_typing=False, timing_cache=True, ahead_of_time=False),
    "rtx": Flavour("rtx", weak_typing=False, timing_cache=False, ahead_of_time=True),
}
# What --flavour accepts: a family resolves to the installed major.
CHOICES = ("auto", "tensorrt", "rtx", *FLAVOURS)


def import_module(name: str) -> ModuleType:
    """Import a TensorRT module; a missing one is answered with the pip extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        extra = "rtx" if name == "tensorrt_rtx" else "tensorrt"
        raise TensorRTNotInstalled(
            f"the {name} module is not installed ({e.msg if hasattr(e, 'msg') else e}): {INSTALL_HINT[extra]}"
        ) from e


def _try_import(name: str) -> Optional[ModuleType]:
    try:
        return import_module(name)
    except TensorRTNotInstalled:
        return None


def resolve_flavour(choice: str = "auto") -> Tuple[Flavour, ModuleType]:
    """--flavour value -> (Flavour, imported module).

    auto: TensorRT 10/11 when it is installed and a CUDA GPU is present; otherwise TensorRT for
    RTX (which can build ahead of time without a GPU); otherwise TensorRT (failing later, clearly).
    """
    if choice not in CHOICES:
        raise ValueError(f"unknown TensorRT flavour {choice!r}; choose one of: {', '.join(CHOICES)}")
    if choice == "auto":
        return _auto()
    if choice == "rtx":
        return FLAVOURS["rtx"], import_module("tensorrt_rtx")
    module = import_module("tensorrt")
    flavour = FLAVOURS[flavour_for_module("tensorrt", module.__version__)]
    if choice not in ("tensorrt", flavour.name):
        raise TensorRTNotInstalled(f"--flavour {choice} asked, but the installed tensorrt is {module.__version__}: "
                                   f"{INSTALL_HINT['tensorrt']}")
    return flavour, module


def _auto() -> Tuple[Flavour, ModuleType]:
    tensorrt = _try_import("tensorrt")
    if tensorrt is not None and current_gpu_cc() is not None:
        return FLAVOURS[flavour_for_module("tensorrt", tensorrt.__version__)], tensorrt
    rtx = _try_import("tensorrt_rtx")
    if rtx is not None:
        return FLAVOURS["rtx"], rtx
    if tensorrt is not None:
        return FLAVOURS[flavour_for_module("tensorrt", tensorrt.__version__)], tensorrt
    raise TensorRTNotInstalled(f"no TensorRT is installed: {INSTALL_HINT['tensorrt']}, or {INSTALL_HINT['rtx']}")


def rtx_targets(trt: ModuleType) -> Tuple[str, ...]:
    """The compute capabilities this TensorRT for RTX can build for, as "smXY"."""
    return tuple(n.lower() for n in trt.ComputeCapability.__members__ if n.startswith("SM"))


def resolve_target(flavour: Flavour, trt: ModuleType, target: Optional[str]) -> str:
    """The compute capability to build for, as "smXY".

    Ahead-of-time flavours (rtx) build for ``target`` or, when None, the current GPU. The others
    build for the GPU they run on: ``target`` must be None or equal to it.
    """
    here = current_gpu_cc()
    if flavour.ahead_of_time:
        valid = rtx_targets(trt)
        if target is None:
            if here is None:
                raise TargetError(f"no CUDA GPU found to build for: pass --target (one of {', '.join(valid)})")
            target = here
        target = _normalize(target)
        if target not in valid:
            raise TargetError(f"{flavour.label} {trt.__version__} cannot build for {target}; "
                              f"choose one of: {', '.join(valid)}")
        return target
    if here is None:
        raise TargetError(f"{flavour.label} builds engines on the GPU they will run on, and no CUDA GPU was "
                          "found; build on the target device, or use --flavour rtx --target smXY for an "
                          "ahead-of-time TensorRT-for-RTX build")
    if target is not None and _normalize(target) != here:
        raise TargetError(f"{flavour.label} builds for the GPU it runs on ({here}), not {_normalize(target)}: "
                          "build on the target device, or leave --target out")
    return here


def _normalize(target: str) -> str:
    try:
        return normalize_cc(target)
    except ValueError as e:
        raise TargetError(str(e)) from e
