"""The TR2M training loop (the authors have not released theirs; recipe in docs/method.md).

Only the head trains: the frozen encoders' outputs (Depth Anything's raw disparity D_r, DINOv2
tokens, CLIP text embeddings) are computed under no_grad, or read from a `FeatureCache`. One step:

    rel, tokens, text -> head (DDP-wrapped)        -> depth, A, B, mids, embedding
                      -> EMA head (no grad)         -> key mids for the fine contrast
    TR2MLoss -> backward -> clip grad norm -> AdamW -> EMA update (momentum 0.99)

The LR decays x0.9 per epoch (ExponentialLR); the contrast weight ramps linearly from 0 over
`contrast_warmup_steps` (random mids make the contrast noise at first). AMP (autocast + GradScaler)
runs on CUDA only. Multi-GPU: torchrun + DistributedDataParallel (see `distributed`); only rank 0
writes files. Randomness is derived from (seed, epoch, index) per sample and (seed, step, rank)
per step, so a resumed run repeats the uninterrupted one exactly (tested to be bitwise on CPU).

Files in `out_dir` (rank 0):
    train_config.json         the TrainConfig
    log.csv                   step, epoch, lr, loss parts (mean over the last `log_every` steps
                              and over ranks), grad_norm, contrast_weight, seconds
    last.safetensors          head + model config (`tr2m.create_model(None, checkpoint=...)` loads it)
    last_state.safetensors    everything needed to resume (see `state`)
    final.safetensors, final.pth   at the end: the head, in our format and in the authors' released
                              format ({"state_dict": ...}, readable by their evaluation code)
Ctrl-C (or SIGTERM) finishes the current step, saves a resumable checkpoint and returns with
`interrupted=True` (the CLI exits 130); a second Ctrl-C aborts at once.
"""
from __future__ import annotations

import csv
import dataclasses
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tr2m.build import create_model
from tr2m.checkpoint import check_fits, save_checkpoint, save_released_format
from tr2m.data import NO_AUGMENT, AugmentConfig, DatasetConfig, build_dataset
from tr2m.device import resolve_device
from tr2m.model import TR2M
from tr2m.transforms import prepare, resize

from .distributed import DistContext, all_reduce_mean, any_rank, derive_seed, setup, teardown
from .ema import EMA
from .feature_cache import FeatureCache, encoder_fingerprint
from .losses import LOSS_PRESETS, LossConfig, TR2MLoss, get_loss_preset
from .sampling import EpochSamples, MixedBatchSampler
from .state import STATE_FILE, TrainingState, load_training_state, save_training_state

AMP_MODES = ("auto", "fp16", "bf16", "off")
LOG_FIELDS = ("step", "epoch", "lr", "total", "silog", "pseudo", "coarse", "fine", "smooth", "pseudo_kept",
              "grad_norm", "contrast_weight", "seconds")
CONFIG_FILE = "train_config.json"
LOG_FILE = "log.csv"
LAST_CHECKPOINT = "last.safetensors"
FINAL_CHECKPOINT = "final.safetensors"
FINAL_RELEASED = "final.pth"


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (defaults: the paper's recipe) and where things come from / go.

    preset: model preset (`tr2m.list_presets()`); None takes the config in `init_checkpoint`.
    datasets: readers to train on (`tr2m.data.DatasetConfig`; `train` is forced on).
    batch_size: per process (the paper's 8 was one GPU's batch).
    lr, lr_decay: AdamW LR 1e-5, x0.9 per epoch (paper). weight_decay 0.01: AdamW's default (the
        paper gives none). betas: AdamW's defaults.
    grad_clip: max global grad norm (<= 0 disables clipping; the norm is still logged).
    amp: "auto" = float16 autocast + GradScaler on CUDA (PyTorch AMP's default, as the authors ran),
        "bf16", "fp16" or "off"; ignored on CPU (always float32 there).
    loss_preset: a key of `tr2m.training.losses.LOSS_PRESETS`; loss_overrides: LossConfig fields
        to change in it, e.g. {"rho": 0.85, "w_pseudo": 1.0}.
    ema_momentum: the key branch's momentum (authors' options: 0.99).
    contrast_warmup_steps: the contrast weight ramps linearly from 0 to its value over these steps
        (not published; 1000 steps ~ a third of an NYU epoch at batch 8).
    max_steps: stop after this many optimizer steps in all (smoke runs, tests); None = all epochs.
    save_every: also save a resumable checkpoint every N steps (0: at epoch ends only).
    cache_dir: cache the frozen encoders' outputs there (see `feature_cache` for what it changes);
        cache_hflip is then the flip probability the trainer applies itself.
    pretrained: load the encoders from their sources; False builds them randomly (offline tests).
    init_checkpoint: start the head from these weights (fine-tuning); resume uses `resume`.
    resume: a run folder or its last_state.safetensors.
    """

    preset: Optional[str] = "paper"
    out_dir: str = "runs/tr2m"
    datasets: Tuple[DatasetConfig, ...] = ()
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-5
    lr_decay: float = 0.9
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    amp: str = "auto"
    loss_preset: str = "default"
    loss_overrides: Dict[str, Any] = field(default_factory=dict)
    ema_momentum: float = 0.99
    contrast_warmup_steps: int = 1000
    seed: int = 0
    log_every: int = 20
    save_every: int = 0
    num_workers: int = 4
    max_steps: Optional[int] = None
    cache_dir: Optional[str] = None
    cache_hflip: float = 0.5
    device: str = "auto"
    progress: bool = True
    pretrained: bool = True
    init_checkpoint: Optional[str] = None
    input_size: Optional[Tuple[int, int]] = None
    relative_source: Optional[str] = None
    image_source: Optional[str] = None
    text_source: Optional[str] = None
    resume: Optional[str] = None

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 < self.lr_decay <= 1, f"lr_decay must lie in (0, 1], got {self.lr_decay}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.ema_momentum < 1, f"ema_momentum must lie in [0, 1), got {self.ema_momentum}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.amp in AMP_MODES, f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}"),
            (self.loss_preset in LOSS_PRESETS, f"unknown loss preset {self.loss_preset!r}; valid: {sorted(LOSS_PRESETS)}"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (self.num_workers >= 0 and self.save_every >= 0 and self.contrast_warmup_steps >= 0,
             "num_workers, save_every and contrast_warmup_steps must be >= 0"),
            (0 <= self.cache_hflip <= 1, f"cache_hflip must lie in [0, 1], got {self.cache_hflip}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.loss_config()  # validates loss_overrides

    def loss_config(self) -> LossConfig:
        """The LossConfig of loss_preset with loss_overrides applied."""
        names = [f.name for f in dataclasses.fields(LossConfig)]
        unknown = sorted(set(self.loss_overrides) - set(names))
        if unknown:
            raise ValueError(f"unknown loss settings {unknown}; valid: {', '.join(names)}")
        return get_loss_preset(self.loss_preset, **self.loss_overrides)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        kwargs = dict(data)
        kwargs["datasets"] = tuple(_dataset_config(d) for d in kwargs.get("datasets", ()))
        for key in ("betas", "input_size"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def _dataset_config(data: Mapping[str, Any] | DatasetConfig) -> DatasetConfig:
    if isinstance(data, DatasetConfig):
        return data
    data = dict(data)
    if isinstance(data.get("augment"), Mapping):
        data["augment"] = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["augment"].items()})
    return DatasetConfig(**data)


@dataclass
class TrainResult:
    """What `fit` did: counters, whether it was interrupted, and the files it wrote (rank 0)."""

    step: int
    epoch: int
    interrupted: bool
    out_dir: Path
    files: Dict[str, Path] = field(default_factory=dict)
    skipped_steps: int = 0


class HeadForward(nn.Module):
    """The head as one module whose forward is `TR2M.from_features`: the unit DDP wraps.

    from_features only reads `self.head`, so it is reused as is: training and inference share one
    code path. forward(rel [B,1,H,W], tokens [B,N,C], text_emb [B,D]) -> the model's output dict.
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, rel: torch.Tensor, tokens: torch.Tensor, text_emb: torch.Tensor) -> Dict[str, torch.Tensor]:
        return TR2M.from_features(self, rel, tokens, text_emb)


class Trainer:
    """Trains `model.head` on `datasets`; `fit()` runs the epochs (see the module docstring).

    datasets: readers yielding the sample dicts of `tr2m.data` (a sample may carry its own "rel"
    [1,H,W], which then replaces Depth Anything's: the synthetic proof uses it). With a cache
    folder, pass readers whose own augmentation is off (`build_datasets` does).
    """

    def __init__(self, config: TrainConfig, *, model: TR2M, datasets: Sequence[Dataset],
                 ctx: Optional[DistContext] = None) -> None:
        self.config = config
        self.ctx = ctx or DistContext(device=resolve_device(config.device))
        self.device = self.ctx.device
        self.model = model.to(self.device).train()
        self.head = model.head
        self.online = HeadForward(self.head)
        if self.ctx.distributed:  # broadcasts rank 0's head to every rank
            # static_graph: the same parameters are used at every step, but not all of them
            # (crossattn.ln_visual only feeds the query of a one-token attention, whose softmax is 1).
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.online = DistributedDataParallel(self.online, device_ids=ids, static_graph=True)
        self.ema = EMA(self.head, config.ema_momentum)
        self.key_branch = HeadForward(self.ema.module)
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=config.lr_decay)
        self.amp_dtype = amp_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.loss_config = config.loss_config()
        self.loss = TR2MLoss(self.loss_config)
        self.cache = FeatureCache(config.cache_dir, encoder_fingerprint(model)) if config.cache_dir else None
        self.samples = EpochSamples(datasets, seed=config.seed, hflip=config.cache_hflip if self.cache else 0.0)
        self.sources = [source_id(ds) for ds in datasets]
        self.sampler = MixedBatchSampler(self.samples.sizes, config.batch_size, seed=config.seed,
                                         rank=self.ctx.rank, world_size=self.ctx.world_size)
        self.loader = DataLoader(
            self.samples, batch_sampler=self.sampler, num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=config.num_workers > 0,
            worker_init_fn=_ignore_sigint, generator=torch.Generator(),
        )
        self.out_dir = Path(config.out_dir)
        self.epoch = self.step = self.step_in_epoch = self.skipped_steps = 0
        self._started = time.monotonic()

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, batch: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
        """One optimizer step on a collated batch; returns the detached loss parts (+ grad_norm)."""
        torch.manual_seed(derive_seed(self.config.seed, self.step, self.ctx.rank))
        batch = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        rel, tokens = self.features(batch)
        text = self.model.encode_text(list(batch["caption"])).float()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            outputs = self.online(rel, tokens, text)
            with torch.no_grad():
                keys = self.key_branch(rel, tokens, text)
        weight = self.contrast_factor()
        self.loss.config = dataclasses.replace(self.loss_config, w_contrast=self.loss_config.w_contrast * weight)
        total, parts = self.loss(outputs, batch, key_outputs={k: keys[k] for k in ("scale_mid", "shift_mid")})
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.head.parameters(), clip)
        if self.scaler.is_enabled() or torch.isfinite(grad_norm):  # the scaler skips non-finite steps itself
            self.scaler.step(self.optimizer)
        else:
            self.skipped_steps += 1
        self.scaler.update()
        self.ema.update(self.head)
        self.step += 1
        self.step_in_epoch += 1
        parts["grad_norm"] = grad_norm.detach().float()
        parts["contrast_weight"] = torch.tensor(weight, device=grad_norm.device)
        return parts

    def contrast_factor(self) -> float:
        warmup = self.config.contrast_warmup_steps
        return 1.0 if warmup <= 0 else min(1.0, self.step / warmup)

    def features(self, batch: Mapping[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Frozen features of the batch: rel [B,1,h,w] and tokens [B,N,C] at the model's input size."""
        cfg = self.model.config
        own_rel = batch.get("rel")
        cached = self._cached(batch) if self.cache else None
        if cached is None:
            images = prepare(batch["image"].float(), cfg.input_size, cfg.mean, cfg.std)
            with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                                 enabled=self.amp_dtype is not None):
                tokens = self.model.image_encoder(images).float()
                rel = None if own_rel is not None else self.model.relative(images).float()
            if self.cache:
                tokens = tokens.half().float()  # what the cache returns from now on
                self._store(batch, rel, tokens)
        else:
            rel, tokens = cached
        if own_rel is not None:
            rel = resize(own_rel.float(), cfg.input_size)
        return rel, tokens

    def _cache_keys(self, batch: Mapping[str, Any]) -> List[Tuple[str, str, bool]]:
        return [(self.sources[int(s)], str(n), bool(f)) for s, n, f in zip(batch["source"], batch["name"], batch["flip"])]

    def _cached(self, batch: Mapping[str, Any]) -> Optional[Tuple[Optional[torch.Tensor], torch.Tensor]]:
        entries = [self.cache.get(*key) for key in self._cache_keys(batch)]
        if any(e is None for e in entries):
            return None
        rel = torch.stack([e["rel"] for e in entries]).to(self.device)
        return rel, torch.stack([e["tokens"] for e in entries]).to(self.device)

    def _store(self, batch: Mapping[str, Any], rel: Optional[torch.Tensor], tokens: torch.Tensor) -> None:
        for i, key in enumerate(self._cache_keys(batch)):
            # A sample with its own rel caches an empty rel: only its tokens come from the encoders.
            self.cache.put(*key, rel[i] if rel is not None else torch.zeros(1, 0, 0), tokens[i])

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Run (or resume) training until the last epoch, max_steps, or an interrupt."""
        cfg = self.config
        if cfg.resume:
            self.load_state(cfg.resume)
        log = self._open_log()
        interrupted = False
        with StopRequest(announce=self.ctx.is_main) as stop:
            while self.epoch < cfg.epochs and not self._max_steps_reached():
                stopped, interrupted = self._run_epoch(stop, log)
                if self.step_in_epoch >= len(self.sampler.batches(self.epoch)):
                    self._end_epoch()  # also when max_steps landed on the epoch's last batch
                elif stopped:
                    self.save()
                if stopped:
                    break
        files = self._last_files()
        if not interrupted and self.ctx.is_main:
            files.update(self._write_final())
        if log is not None:
            log.close()
        return TrainResult(self.step, self.epoch, interrupted, self.out_dir, files, self.skipped_steps)

    def _run_epoch(self, stop: "StopRequest", log: Optional["CSVLog"]) -> Tuple[bool, bool]:
        """Steps through the rest of the current epoch; returns (stopped early, by an interrupt)."""
        cfg = self.config
        self.sampler.set_epoch(self.epoch, start=self.step_in_epoch)
        total = len(self.sampler) + self.step_in_epoch
        window = LossWindow()
        bar = tqdm(total=total, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and self.ctx.is_main), dynamic_ncols=True, leave=False)
        try:
            for batch in self.loader:
                window.add(self.train_step(batch))
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step_in_epoch == total:
                    row = self._log_row(window.flush(self.ctx))
                    bar.set_postfix(loss=f"{row['total']:.4f}", lr=f"{row['lr']:.2e}")
                    if log is not None:
                        log.write(row)
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
                interrupted = any_rank(stop.requested, self.ctx)
                if interrupted or self._max_steps_reached():
                    return True, interrupted
        finally:
            bar.close()
        return False, False

    def _max_steps_reached(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def _end_epoch(self) -> None:
        self.scheduler.step()
        self.epoch += 1
        self.step_in_epoch = 0
        self.save()

    def _log_row(self, means: Dict[str, float]) -> Dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"], **means,
                "seconds": round(time.monotonic() - self._started, 3)}

    def _open_log(self) -> Optional["CSVLog"]:
        if not self.ctx.is_main:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        from tr2m.evaluation.evaluate import write_json

        write_json(self.out_dir / CONFIG_FILE, self.config.to_dict())
        return CSVLog(self.out_dir / LOG_FILE, LOG_FIELDS, keep_until_step=self.step)

    # -- checkpoints ---------------------------------------------------------------------------
    def _last_files(self) -> Dict[str, Path]:
        return {"checkpoint": self.out_dir / LAST_CHECKPOINT, "state": self.out_dir / STATE_FILE}

    def save(self) -> Dict[str, Path]:
        """Write last.safetensors (head + config) and the resumable state (rank 0 only)."""
        files = self._last_files()
        if not self.ctx.is_main:
            return files
        self.out_dir.mkdir(parents=True, exist_ok=True)
        counters = {"epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch}
        save_checkpoint(self.head, self.model.config, files["checkpoint"],
                        extra={k: str(v) for k, v in counters.items()})
        save_training_state(files["state"], TrainingState(
            head=self.head.state_dict(), ema=self.ema.state_dict(), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), counters=counters,
            train_config=self.config.to_dict(), model_config=self.model.config.to_json(),
        ))
        return files

    def load_state(self, path: str) -> None:
        """Restore head, EMA head, optimizer, scheduler, scaler and counters from a saved state."""
        state = load_training_state(path)
        check_fits(self.head, state.head, source=str(path))
        self.head.load_state_dict(state.head, strict=True)
        self.ema.load_state_dict(state.ema)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if state.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.scaler)
        self.epoch = int(state.counters["epoch"])
        self.step = int(state.counters["step"])
        self.step_in_epoch = int(state.counters["step_in_epoch"])

    def _write_final(self) -> Dict[str, Path]:
        final = self.out_dir / FINAL_CHECKPOINT
        save_checkpoint(self.head, self.model.config, final, extra={"epoch": str(self.epoch), "step": str(self.step)})
        return {"final": final, "released": save_released_format(self.head, self.out_dir / FINAL_RELEASED)}


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

def amp_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for `mode` on `device`; None means float32 (always on CPU)."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    return torch.float16  # "auto" and "fp16": PyTorch AMP's default, with a GradScaler


def source_id(dataset: Dataset) -> str:
    """A stable name for a dataset (feature-cache keys): its `cache_id`, or name:root:split."""
    explicit = getattr(dataset, "cache_id", None)
    if explicit:
        return str(explicit)
    cfg = getattr(dataset, "config", None)
    if cfg is not None and hasattr(cfg, "root"):
        return f"{cfg.name}:{Path(cfg.root).resolve()}:{cfg.split}"
    return f"{type(dataset).__name__}:{len(dataset)}"


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; only the main process decides what to do with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """While active, SIGINT/SIGTERM set `requested` instead of raising; a second SIGINT raises."""

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self.announce = announce
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            tqdm.write("interrupt: finishing this step and saving a resumable checkpoint (Ctrl-C again to abort)")

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class LossWindow:
    """Sums of the loss parts since the last flush (tensors: no device sync until flushed)."""

    def __init__(self) -> None:
        self.sums: Dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, parts: Mapping[str, torch.Tensor]) -> None:
        for name, value in parts.items():
            self.sums[name] = self.sums.get(name, 0) + value.detach().float()
        self.count += 1

    def flush(self, ctx: DistContext) -> Dict[str, float]:
        """Means over the window and over ranks (every rank must call it at the same step)."""
        if not self.count:
            return {}
        names = sorted(self.sums)
        means = all_reduce_mean(torch.stack([self.sums[n] for n in names]) / self.count, ctx)
        self.sums, self.count = {}, 0
        return dict(zip(names, means.tolist()))


class CSVLog:
    """Appends rows to a CSV file (flushed per row). On resume, rows past the resumed step (logged
    after the last save of an interrupted run) are dropped first, so steps never repeat."""

    def __init__(self, path: Path, fields: Sequence[str], keep_until_step: int = 0) -> None:
        self.path = Path(path)
        kept = self._rows_until(keep_until_step) if keep_until_step and self.path.is_file() else []
        self.file = open(self.path, "w", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, fieldnames=list(fields), extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(kept)
        self.file.flush()

    def _rows_until(self, step: int) -> List[Dict[str, str]]:
        with open(self.path, newline="", encoding="utf-8") as f:
            return [row for row in csv.DictReader(f) if row.get("step", "").isdigit() and int(row["step"]) <= step]

    def write(self, row: Mapping[str, Any]) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


# ------------------------------------------------------------------------------------------------
# Building from a config
# ------------------------------------------------------------------------------------------------

def build_model(config: TrainConfig, device: torch.device | str = "cpu") -> TR2M:
    """The model named by the config. Seeded, so random encoders are identical on every rank."""
    torch.manual_seed(config.seed)
    return create_model(
        config.preset, pretrained=config.pretrained, checkpoint=config.init_checkpoint, input_size=config.input_size,
        relative_source=config.relative_source, image_source=config.image_source, text_source=config.text_source,
        device=device,
    )


def build_datasets(config: TrainConfig) -> List[Dataset]:
    """Training readers for config.datasets (readers' augmentation off when caching features)."""
    if not config.datasets:
        raise ValueError("no training dataset given")
    built = []
    for dc in config.datasets:
        dc = dataclasses.replace(dc, train=True, augment=NO_AUGMENT if config.cache_dir else dc.augment)
        built.append(build_dataset(dc))
    return built


def train(config: TrainConfig, *, datasets: Optional[Sequence[Dataset]] = None,
          model: Optional[TR2M] = None) -> TrainResult:
    """Build what is missing, join the torchrun process group if there is one, and fit."""
    ctx = setup(config.device)
    ok = False
    try:
        model = model if model is not None else build_model(config, ctx.device)
        datasets = list(datasets) if datasets is not None else build_datasets(config)
        result = Trainer(config, model=model, datasets=datasets, ctx=ctx).fit()
        ok = True
        return result
    finally:
        teardown(ctx, barrier=ok)


def describe(result: TrainResult) -> str:
    """A one-paragraph summary of a finished (or interrupted) run."""
    state = "interrupted" if result.interrupted else "finished"
    files = ", ".join(f"{k}: {v}" for k, v in result.files.items())
    return f"{state} at step {result.step} (epoch {result.epoch}); {files}" + (
        f"; {result.skipped_steps} non-finite steps skipped" if result.skipped_steps else "")


__all__ = [
    "TrainConfig", "TrainResult", "Trainer", "HeadForward", "amp_dtype", "build_datasets", "build_model", "train",
    "describe",
]
