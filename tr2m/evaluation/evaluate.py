"""Evaluate TR2M on a depth dataset under the BTS / ZoeDepth protocol (`metrics`).

Two predictors behind one interface, `predict(image [3,H,W] RGB in [0,1], caption) -> depth [h,w]`:
- `TorchPredictor`: a PyTorch `TR2M` (any preset, checkpoint or random weights). The image is
  resized to the model's input size; the depth comes back at that size and the metric protocol
  resizes it to the GT (bilinear, align_corners=True), as the authors' evaluation does.
- `BundlePredictor`: an exported bundle run by the torch-free `runtime.Engine` (imported only
  when used), fed the 8-bit frame; it returns depth at the frame's resolution.

`evaluate(predictor, dataset, protocol)` scores every sample (metrics per image over valid
pixels, then the mean over images) and returns an `EvalReport`; `write_json` saves it atomically.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tr2m.atomic import atomic_target
from tr2m.config import get_preset
from tr2m.transforms import prepare

from .metrics import METRIC_NAMES, PROTOCOLS, EvalProtocol, MetricAccumulator, get_protocol

# The protocol each dataset reader is scored with unless told otherwise (folder: must be given).
DEFAULT_PROTOCOLS = {"nyu": "nyu", "kitti": "kitti", "void": "void", "c3vd": "c3vd"}

# The model input size the authors evaluate each dataset at (eval_4d.py: frames 480 rows high,
# NYU, VOID and C3VD, go in at 434x560; KITTI's KB window at 350x1204), named by the preset
# that carries it. The folder reader has none: it keeps the model's configured size.
EVAL_PRESETS = {"nyu": "paper", "kitti": "kitti", "void": "paper", "c3vd": "paper"}


class Predictor(Protocol):
    def predict(self, image: torch.Tensor, caption: str) -> Any:
        """image: float32 [3,H,W] RGB in [0,1]; caption: str -> metric depth [h,w] (numpy or tensor)."""

    def describe(self) -> Dict[str, Any]:
        """What is being evaluated (goes into the report)."""


class TorchPredictor:
    """A PyTorch TR2M model; captions are embedded once each (memoised)."""

    def __init__(self, model, *, description: Optional[Dict[str, Any]] = None, amp: Optional[torch.dtype] = None) -> None:
        self.model = model.eval()
        self.amp = amp
        self.description = {"kind": "torch", "preset": model.config.name,
                            "input_size": list(model.config.input_size),
                            "input_size_from": "the model's config", **(description or {})}
        self._text: Dict[str, torch.Tensor] = {}

    def _embed(self, caption: str) -> torch.Tensor:
        if caption not in self._text:
            self._text[caption] = self.model.encode_text([caption]).float()
        return self._text[caption]

    @torch.no_grad()
    def predict(self, image: torch.Tensor, caption: str) -> torch.Tensor:
        cfg = self.model.config
        device = self.model.device
        x = prepare(image[None].float().to(device), cfg.input_size, cfg.mean, cfg.std)
        with torch.autocast(device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            depth = self.model(x, self._embed(caption))["depth"]
        return depth[0, 0].float().cpu()

    def describe(self) -> Dict[str, Any]:
        return dict(self.description)


class EngineUnavailable(RuntimeError):
    """The torch-free runtime (runtime.Engine) is not installed or not importable."""


class BundlePredictor:
    """An exported bundle, run by `runtime.Engine` (ONNX Runtime / TensorRT, no torch)."""

    def __init__(self, bundle_dir: str | os.PathLike, *, backend: Optional[str] = None,
                 precision: Optional[str] = None) -> None:
        try:
            from runtime import Engine
        except ImportError as e:
            raise EngineUnavailable(f"bundle evaluation needs runtime.Engine, which cannot be imported ({e})") from e
        options = {k: v for k, v in (("backend", backend), ("precision", precision)) if v}
        self.engine = Engine.open(str(bundle_dir), **options)
        self.description = {"kind": "bundle", "bundle": str(bundle_dir), "input_size": list(self.engine.input_size),
                            "input_size_from": "fixed by the bundle",
                            "backend": getattr(self.engine, "backend_name", backend or "auto"),
                            "precision": getattr(self.engine, "precision", precision or "default")}

    def predict(self, image: torch.Tensor, caption: str) -> np.ndarray:
        frame = (image.permute(1, 2, 0).float().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
        return np.asarray(self.engine.predict(frame, caption=caption), dtype=np.float32)

    def describe(self) -> Dict[str, Any]:
        return dict(self.description)


@dataclass
class EvalReport:
    """Mean metrics over the scored images, and what produced them."""

    dataset: str
    protocol: Dict[str, Any]
    metrics: Dict[str, float]
    count: int
    skipped: int
    seconds: float
    model: Dict[str, Any] = field(default_factory=dict)
    per_image: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def default_protocol(dataset_name: str) -> str:
    """The protocol a dataset reader is scored with by default."""
    if dataset_name not in DEFAULT_PROTOCOLS:
        raise ValueError(f"dataset {dataset_name!r} has no default protocol; pass one of "
                         f"{', '.join(sorted(PROTOCOLS))} (--protocol)")
    return DEFAULT_PROTOCOLS[dataset_name]


def authors_input_size(dataset_name: str) -> Optional[Tuple[int, int]]:
    """The input size (H, W) the authors evaluate `dataset_name` at; None when they have none."""
    preset = EVAL_PRESETS.get(dataset_name)
    return None if preset is None else get_preset(preset).input_size


def eval_input_size(dataset_name: str, configured: Tuple[int, int]) -> Tuple[Tuple[int, int], str]:
    """The input size (H, W) to score `dataset_name` at when the user named none, and why.

    The authors' size for the dataset wins over the size a checkpoint's stored config (or a
    default preset) carries: a KITTI score at 434x560 is not comparable with the paper's KITTI
    score at 350x1204. Datasets without one keep the configured size.
    """
    size = authors_input_size(dataset_name)
    if size is None:
        return tuple(configured), "the model's config"
    reason = f"the authors' size for {dataset_name}"
    if tuple(size) != tuple(configured):
        reason += f"; the checkpoint's config says {configured[0]}x{configured[1]}"
    return size, reason


def evaluate(predictor: Predictor, dataset: Dataset, protocol: str | EvalProtocol, *, limit: Optional[int] = None,
             num_workers: int = 0, progress: bool = True, per_image: bool = True,
             dataset_name: Optional[str] = None) -> EvalReport:
    """Score `predictor` on the samples of a `tr2m.data` reader (eval split: caption line 0).

    Each sample's depth [1,H,W] is the GT as scored: the protocol's crop applies to it (for
    KITTI the KB-cropped window, as the authors score it).
    Raises ValueError when no image had a valid pixel.
    """
    proto = get_protocol(protocol)
    accumulator = MetricAccumulator(proto)
    total = len(dataset) if limit is None else min(limit, len(dataset))
    loader = DataLoader(torch.utils.data.Subset(dataset, range(total)), batch_size=None, num_workers=num_workers)
    rows: List[Dict[str, Any]] = []
    started = time.monotonic()
    for sample in tqdm(loader, total=total, desc="eval", disable=not progress, dynamic_ncols=True, leave=False):
        depth = predictor.predict(sample["image"], sample["caption"])
        metrics = accumulator.update(depth, sample["depth"][0])
        if per_image:
            rows.append({"name": sample["name"], "caption": sample["caption"],
                         **({"skipped": True} if metrics is None else metrics)})
    name = dataset_name or getattr(getattr(dataset, "config", None), "name", type(dataset).__name__)
    return EvalReport(dataset=name, protocol=asdict(proto), metrics=accumulator.compute(), count=accumulator.count,
                      skipped=accumulator.skipped, seconds=round(time.monotonic() - started, 3),
                      model=predictor.describe(), per_image=rows)


def format_table(metrics: Mapping[str, float]) -> str:
    """Two aligned lines: metric names, then values (BTS order)."""
    names = [n for n in METRIC_NAMES if n in metrics]
    width = max(9, *(len(n) + 1 for n in names))
    head = "".join(f"{n:>{width}}" for n in names)
    values = "".join(f"{metrics[n]:>{width}.4f}" if math.isfinite(metrics[n]) else f"{'nan':>{width}}" for n in names)
    return f"{head}\n{values}"


def _strict(value: Any) -> Any:
    """NaN and infinities -> None (JSON has no such numbers), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented, strict JSON (non-finite floats become null), atomically: a
    temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_strict(data), indent=2, default=str, allow_nan=False)
    with atomic_target(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path
