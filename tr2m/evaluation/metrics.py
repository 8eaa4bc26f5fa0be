"""Depth metrics under the BTS / ZoeDepth protocol, in numpy (docs/method.md, Evaluation).

numpy is the primary array type so that predictions from the torch-free runtime can be scored
with the same code; CPU torch tensors are accepted too (converted through `.detach().cpu()`,
without importing torch here).

Protocol, per image:
  1. resize the prediction to the ground-truth size (bilinear, align_corners=True);
  2. clip it to [min_depth, max_depth], +inf -> max_depth, NaN -> min_depth;
  3. valid = min_depth < gt < max_depth, inside the protocol's crop;
  4. metrics over the valid pixels. The dataset score is the mean of the per-image metrics.

Crops apply to the ground truth as it is scored. For KITTI that is the KB-cropped 352x1216
window (the dataset reader crops image and GT alike), so the Garg fractions are taken of the
window's own height and width. This is the authors' convention: their evaluation loader
(dataset_nyukiti.py, online-eval branch, used by eval_4d.py) KB-crops the GT together with the
image, so their "paste the prediction into a zero frame of the GT's size" step is a no-op and
the Garg mask is computed on 352x1216 (rows 143:349, cols 43:1172). BTS's online evaluation,
which that loader descends from, does the same. Mapping the full-frame Garg box into the window
instead (BTS's offline eval_with_pngs.py on full-size GT) scores rows 130:348 and cols 31:1184 of
the window: 4-6% more valid pixels on real KITTI frames, farther away and higher in the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

METRIC_NAMES = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")

Window = Tuple[int, int, int, int]  # row0, row1, col0, col1 (python slice bounds)


def _no_crop(height: int, width: int) -> Window:
    return 0, height, 0, width


def _eigen_nyu(height: int, width: int) -> Window:
    """Eigen et al. crop in pixels of a 480x640 NYU frame (the authors also use it on VOID,
    SUN RGB-D and iBims at that size)."""
    return 45, 471, 41, 601


def _garg(height: int, width: int) -> Window:
    """Garg et al. ECCV16 crop, as fractions of the frame (KITTI, DIODE outdoor)."""
    return (int(0.40810811 * height), int(0.99189189 * height),
            int(0.03594771 * width), int(0.96405229 * width))


CROPS: Dict[str, Callable[[int, int], Window]] = {
    "none": _no_crop,
    "eigen_nyu": _eigen_nyu,
    "garg": _garg,
}


@dataclass(frozen=True)
class EvalProtocol:
    """Depth caps (in the dataset's depth unit) and the crop name (a key of `CROPS`)."""

    name: str
    min_depth: float
    max_depth: float
    crop: str = "none"

    def __post_init__(self) -> None:
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"protocol {self.name!r}: need 0 <= min_depth < max_depth, "
                             f"got {self.min_depth}, {self.max_depth}")
        if self.crop not in CROPS:
            raise ValueError(f"protocol {self.name!r}: unknown crop {self.crop!r}; "
                             f"valid crops: {sorted(CROPS)}")


# Caps and crops of the authors' evaluation scripts (eval_4d.py, eval_zero.py). C3VD and SimCol
# depths are in millimetres (C3VD TIFF x 100/65535), hence their 0.1..100 caps.
PROTOCOLS: Dict[str, EvalProtocol] = {p.name: p for p in (
    EvalProtocol("nyu", 1e-3, 10.0, "eigen_nyu"),
    EvalProtocol("kitti", 1e-3, 80.0, "garg"),
    EvalProtocol("void", 0.2, 5.0, "eigen_nyu"),
    EvalProtocol("sunrgbd", 1e-3, 8.0, "eigen_nyu"),
    EvalProtocol("ibims", 1e-3, 10.0, "eigen_nyu"),
    EvalProtocol("diode_outdoor", 1e-3, 80.0, "garg"),
    EvalProtocol("hypersim", 1e-3, 80.0, "none"),
    EvalProtocol("c3vd", 0.1, 100.0, "none"),
    EvalProtocol("simcol", 0.1, 100.0, "none"),
)}


def get_protocol(name: str | EvalProtocol) -> EvalProtocol:
    """A protocol by name (or the protocol itself); unknown names list the valid ones."""
    if isinstance(name, EvalProtocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown evaluation protocol {name!r}; valid: {sorted(PROTOCOLS)}") from None


def as_depth_map(x: Any) -> np.ndarray:
    """numpy array or CPU torch tensor [H,W], [1,H,W] or [1,1,H,W] -> float64 [H,W]."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    array = np.asarray(x, dtype=np.float64)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected a single depth map [H,W] (or [1,H,W], [1,1,H,W]), got {array.shape}")
    return array


def _axis_weights(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and weights w of an align_corners=True linear resize along one axis."""
    if n_out == 1 or n_in == 1:
        pos = np.zeros(n_out)
    else:
        pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, pos - i0


def resize_bilinear(x: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """[h,w] -> [H,W], bilinear with align_corners=True (torch's F.interpolate convention)."""
    if tuple(x.shape) == tuple(size):
        return x
    r0, r1, wr = _axis_weights(x.shape[0], size[0])
    c0, c1, wc = _axis_weights(x.shape[1], size[1])
    top = x[r0][:, c0] * (1 - wc) + x[r0][:, c1] * wc
    bottom = x[r1][:, c0] * (1 - wc) + x[r1][:, c1] * wc
    return top * (1 - wr)[:, None] + bottom * wr[:, None]


def prepare_prediction(pred: Any, gt_shape: Tuple[int, int], protocol: EvalProtocol) -> np.ndarray:
    """Prediction [h,w] -> [H,W] at the GT size, clipped to the caps, inf -> max, NaN -> min."""
    p = resize_bilinear(as_depth_map(pred), gt_shape)
    p = np.clip(p, protocol.min_depth, protocol.max_depth)  # +-inf land on the caps
    return np.where(np.isnan(p), protocol.min_depth, p)


def crop_mask(shape: Tuple[int, int], crop: str) -> np.ndarray:
    """bool [H,W]: the protocol's crop of a GT map of this shape (KITTI: the KB window itself)."""
    r0, r1, c0, c1 = CROPS[crop](*shape)
    mask = np.zeros(shape, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def valid_mask(gt: np.ndarray, protocol: EvalProtocol) -> np.ndarray:
    """bool [H,W]: min < gt < max inside the protocol's crop."""
    inside = (gt > protocol.min_depth) & (gt < protocol.max_depth)
    return inside & crop_mask(gt.shape, protocol.crop)


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> Dict[str, float]:
    """Metrics over matching 1-D arrays of valid GT and (cleaned) predicted depths, both > 0.

    SILog is 100 * sqrt(Var[ln p - ln gt]) with the variance clamped at 0, so pred = k * gt
    gives 0 rather than the NaN of the literal sqrt(mean(d^2) - mean(d)^2).
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.size == 0:
        raise ValueError("no valid pixels to score")
    ratio = np.maximum(gt / pred, pred / gt)
    d = np.log(pred) - np.log(gt)
    return {
        "d1": float(np.mean(ratio < 1.25)),
        "d2": float(np.mean(ratio < 1.25 ** 2)),
        "d3": float(np.mean(ratio < 1.25 ** 3)),
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(d ** 2))),
        "log10": float(np.mean(np.abs(np.log10(pred) - np.log10(gt)))),
        "silog": float(100.0 * np.sqrt(max(float(np.var(d)), 0.0))),
    }


def evaluate_image(pred: Any, gt: Any, protocol: str | EvalProtocol) -> Optional[Dict[str, float]]:
    """Full protocol for one image: pred [h,w] (any size), gt [H,W] -> metrics, or None when the
    image has no valid pixel (the authors' loop would average a NaN in; we skip it)."""
    proto = get_protocol(protocol)
    gt_map = as_depth_map(gt)
    p = prepare_prediction(pred, gt_map.shape, proto)
    mask = valid_mask(gt_map, proto)
    if not mask.any():
        return None
    return compute_errors(gt_map[mask], p[mask])


class MetricAccumulator:
    """Mean of per-image metrics over a dataset.

    >>> acc = MetricAccumulator("nyu")
    >>> acc.update(pred, gt)          # pred [h,w] / [1,h,w], gt [H,W]; numpy or CPU tensors
    >>> acc.compute()["abs_rel"]
    """

    def __init__(self, protocol: str | EvalProtocol) -> None:
        self.protocol = get_protocol(protocol)
        self.reset()

    def reset(self) -> None:
        self._sums = dict.fromkeys(METRIC_NAMES, 0.0)
        self.count = 0
        self.skipped = 0

    def add(self, metrics: Mapping[str, float]) -> None:
        """Add one image's metrics (a dict with every name in METRIC_NAMES)."""
        for name in METRIC_NAMES:
            self._sums[name] += float(metrics[name])
        self.count += 1

    def update(self, pred: Any, gt: Any) -> Optional[Dict[str, float]]:
        """Score one image and add it; returns its metrics (None if it had no valid pixel)."""
        metrics = evaluate_image(pred, gt, self.protocol)
        if metrics is None:
            self.skipped += 1
        else:
            self.add(metrics)
        return metrics

    def compute(self) -> Dict[str, float]:
        """Mean of each metric over the images added so far."""
        if self.count == 0:
            raise ValueError(f"no image with valid pixels was scored ({self.skipped} skipped)")
        return {name: total / self.count for name, total in self._sums.items()}
