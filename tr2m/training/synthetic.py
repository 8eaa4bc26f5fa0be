"""A synthetic proof that training works: scenes whose scale and shift maps are known.

With random encoders nothing real can be learnt, so the relative disparity is made up instead:
for each scene the true inverse depth 1/d, and smooth known maps A_true, B_true, give

    rel = (1/d - B_true) / A_true        so that   d = 1 / (A_true * rel + B_true)  exactly.

The head never sees rel (it sees the frozen, random tiny DINOv2's tokens of the image and the
caption's embedding), and 1/d is drawn independently of the image, so the only way to lower the
loss is to predict A_true and B_true from what determines them:
- the caption: one of four scene types, each with its own global scale and shift;
- the image content: A_true follows the red channel's smooth field, B_true the green one's
  (A_true = s * exp(0.8 (u - 0.5)), B_true = b * exp(0.8 (v - 0.5)), u, v in [0, 1]).
The blue channel and a pixel noise are distractors. `run_proof` trains the tiny preset with the
real `Trainer` (rel replaced through the sample's "rel" entry) and scores held-out scenes before
and after: AbsRel, delta1, and Pearson r between predicted and true A and B, pooled over pixels
("r") and within scenes after removing each scene's mean log value ("spatial r", which only
the image can explain).
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from tr2m.evaluation.metrics import EvalProtocol, MetricAccumulator
from tr2m.transforms import prepare


class SceneType(NamedTuple):
    caption: str
    scale: float
    shift: float


# Global A and B per caption. B_true stays below 1/DEPTH_RANGE[1] so that rel > 0 everywhere.
SCENE_TYPES: Tuple[SceneType, ...] = (
    SceneType("a small kitchen", 0.03, 0.06),
    SceneType("an office with desks", 0.05, 0.15),
    SceneType("a long corridor", 0.08, 0.10),
    SceneType("a bedroom at night", 0.12, 0.04),
)
DEPTH_RANGE = (1.0, 4.0)  # metres; B_true is about a third of 1/depth, so both maps matter
SPREAD = 0.8  # log-range of the content-driven factor of A_true and B_true
PROTOCOL = EvalProtocol("synthetic", 1e-3, 1e3, "none")


def smooth_field(rng: np.random.Generator, size: Tuple[int, int], waves: int = 3, cycles: float = 1.5) -> np.ndarray:
    """A smooth random field in [0, 1], [H,W]: a sum of `waves` plane cosines of <= `cycles` periods."""
    height, width = size
    y, x = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    field_ = np.zeros(size)
    for _ in range(waves):
        angle = rng.uniform(0, 2 * np.pi)
        freq = rng.uniform(0.3, cycles) * 2 * np.pi
        field_ += np.cos(freq * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    return (field_ - field_.min()) / max(field_.max() - field_.min(), 1e-6)


class SyntheticScenes(Dataset):
    """`count` procedural scenes at `size`, generated on the fly from (seed, index).

    Samples follow `tr2m.data` (image [3,H,W] in [0,1], depth, mask, caption, name, dataset,
    crop_box) plus rel [1,H,W] (replaces Depth Anything's), scale_true and shift_true [1,H,W].
    """

    def __init__(self, count: int, size: Tuple[int, int], seed: int = 0) -> None:
        if count < 1:
            raise ValueError(f"need at least one scene, got {count}")
        self.count, self.size, self.seed = count, tuple(size), seed

    @property
    def cache_id(self) -> str:
        return f"synthetic:{self.seed}:{self.count}:{self.size[0]}x{self.size[1]}"

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Dict[str, Any]:
        rng = np.random.default_rng([self.seed, index])
        scene = SCENE_TYPES[index % len(SCENE_TYPES)]
        u, v, w = (smooth_field(rng, self.size) for _ in range(3))
        image = np.clip(np.stack([u, v, w]) * 0.8 + 0.1 + rng.normal(0, 0.03, (3, *self.size)), 0, 1)
        scale = scene.scale * np.exp(SPREAD * (u - 0.5))
        shift = scene.shift * np.exp(SPREAD * (v - 0.5))
        near, far = DEPTH_RANGE
        inverse = 1 / far + (1 / near - 1 / far) * smooth_field(rng, self.size, waves=4, cycles=2.0)
        rel = (inverse - shift) / scale

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(a, dtype=np.float32))

        return {
            "image": tensor(image), "depth": tensor(1 / inverse)[None], "mask": torch.ones(1, *self.size, dtype=torch.bool),
            "caption": scene.caption, "name": f"scene_{index:05d}", "dataset": "synthetic",
            "crop_box": torch.tensor([0, 0, *self.size], dtype=torch.int64),
            "rel": tensor(rel)[None], "scale_true": tensor(scale)[None], "shift_true": tensor(shift)[None],
        }


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------

def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two flat arrays; NaN when either is constant (e.g. an untrained head's maps)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 1e-12 * a.size else float("nan")


def _centred_logs(maps: np.ndarray) -> np.ndarray:
    """[S,H,W] positive maps -> log maps minus each scene's mean log value."""
    logs = np.log(maps)
    return logs - logs.mean(axis=(1, 2), keepdims=True)


@torch.no_grad()
def score(model, dataset: SyntheticScenes, batch_size: int = 16) -> Dict[str, float]:
    """AbsRel, delta1 (and the other metrics) and A/B correlations of `model` on `dataset`."""
    cfg = model.config
    accumulator = MetricAccumulator(PROTOCOL)
    maps: Dict[str, list] = {"scale": [], "shift": [], "scale_true": [], "shift_true": []}
    model.eval()
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: torch.stack([s[k] for s in samples]) for k in ("image", "depth", "rel", "scale_true", "shift_true")}
        tokens = model.image_encoder(prepare(batch["image"], cfg.input_size, cfg.mean, cfg.std))
        out = model.from_features(batch["rel"], tokens, model.encode_text([s["caption"] for s in samples]))
        for depth, gt in zip(out["depth"], batch["depth"]):
            accumulator.update(depth[0], gt[0])
        for key in maps:
            maps[key].append((out[key] if key in out else batch[key])[:, 0].numpy())
    arrays = {k: np.concatenate(v) for k, v in maps.items()}
    metrics = accumulator.compute()
    return {
        "abs_rel": metrics["abs_rel"], "d1": metrics["d1"], "rmse": metrics["rmse"], "silog": metrics["silog"],
        "r_scale": pearson(arrays["scale"], arrays["scale_true"]),
        "r_shift": pearson(arrays["shift"], arrays["shift_true"]),
        "r_scale_spatial": pearson(_centred_logs(arrays["scale"]), _centred_logs(arrays["scale_true"])),
        "r_shift_spatial": pearson(_centred_logs(arrays["shift"]), _centred_logs(arrays["shift_true"])),
    }


# ------------------------------------------------------------------------------------------------
# The proof
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProofConfig:
    """How long and on what the proof trains (the tiny preset, random encoders, CPU).

    lr 1e-3 (not the paper's 1e-5): a freshly initialised tiny head has to be trained from scratch
    in minutes, not fine-tuned over 20 epochs. The LR decays per epoch to `final_lr_ratio` of its
    start.
    """

    train_scenes: int = 512
    test_scenes: int = 64
    steps: int = 1500
    batch_size: int = 8
    lr: float = 1e-3
    final_lr_ratio: float = 0.1
    seed: int = 0
    out_dir: Optional[str] = None
    progress: bool = True


@dataclass
class ProofResult:
    before: Dict[str, float]
    after: Dict[str, float]
    steps: int
    train_seconds: float
    config: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        rows = [("AbsRel", "abs_rel"), ("delta1", "d1"), ("RMSE", "rmse"), ("r(A, A_true)", "r_scale"),
                ("r(B, B_true)", "r_shift"), ("spatial r(A)", "r_scale_spatial"), ("spatial r(B)", "r_shift_spatial")]
        lines = [f"{'':>14}{'before':>10}{'after':>10}"]
        for label, key in rows:
            lines.append(f"{label:>14}{_fmt(self.before[key]):>10}{_fmt(self.after[key]):>10}")
        lines.append(f"{self.steps} steps in {self.train_seconds:.1f} s; AbsRel ratio after/before "
                     f"{self.after['abs_rel'] / self.before['abs_rel']:.3f}")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def run_proof(config: ProofConfig = ProofConfig()) -> ProofResult:
    """Train the tiny preset on synthetic scenes with the real Trainer; score before and after."""
    import tr2m

    from .trainer import TrainConfig, Trainer

    torch.manual_seed(config.seed)
    model = tr2m.create_model("tiny", pretrained=False)
    size = model.config.input_size
    train_set = SyntheticScenes(config.train_scenes, size, seed=config.seed)
    test_set = SyntheticScenes(config.test_scenes, size, seed=config.seed + 10_000)
    before = score(model, test_set)
    steps_per_epoch = math.ceil(config.train_scenes / config.batch_size)
    epochs = max(1, math.ceil(config.steps / steps_per_epoch))
    with tempfile.TemporaryDirectory(prefix="tr2m-proof-") as tmp:
        train_config = TrainConfig(
            preset="tiny", out_dir=config.out_dir or tmp, epochs=epochs, batch_size=config.batch_size, lr=config.lr,
            lr_decay=config.final_lr_ratio ** (1 / epochs), max_steps=config.steps, num_workers=0, device="cpu",
            pretrained=False, seed=config.seed, log_every=50, contrast_warmup_steps=config.steps // 5,
            progress=config.progress,
        )
        trainer = Trainer(train_config, model=model, datasets=[train_set])
        started = time.monotonic()
        result = trainer.fit()
        seconds = time.monotonic() - started
    return ProofResult(before=before, after=score(model, test_set), steps=result.step, train_seconds=seconds,
                       config=asdict(config))
