"""Runners: one object per benchmark row, with one interface for eager PyTorch and the runtime.

    runner.load()
    depths, stage_ms = runner.predict(frames, caption)   # depth float32 [H, W] per frame
    ms = runner.text_miss(caption)                        # a caption never seen before
    ms = runner.cache_hit(caption)                        # None where there is no cache

Stages (ms per call): preprocess (frame -> normalized batch), text (caption -> embedding; a cache
hit inside predict), image (the model / graph), postprocess (maps -> depth at frame size).
Only the torch runner imports torch.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .backends import BackendSpec

StageMs = Dict[str, float]


class Skip(Exception):
    """This row cannot run here (no GPU, no graph): the message says why."""


class EngineRunner:
    """A row served by `runtime.Engine` (ONNX Runtime or TensorRT)."""

    def __init__(self, spec: BackendSpec, bundle: Path, cache_dir: Path, threads: Optional[int] = None):
        self.spec, self.bundle, self.cache_dir = spec, Path(bundle), Path(cache_dir)
        self.engine = None

    def load(self) -> None:
        from runtime import Bundle, Engine
        from runtime.backends import BACKENDS, BackendUnavailable
        from runtime.engine import PRECISION_GRAPHS

        bundle = Bundle.open(self.bundle, verify=False)
        backend = BACKENDS[self.spec.runtime_backend]
        if not backend.available(bundle):
            raise Skip(f"{self.spec.runtime_backend} cannot run here: {backend.requirement}")
        reason = backend.refusal(bundle, [PRECISION_GRAPHS[self.spec.precision]])  # engines for this GPU, graphs
        if reason:
            raise Skip(f"{self.spec.runtime_backend}: {reason}")
        try:
            self.engine = Engine(bundle, backend, precision=self.spec.precision, cache=_cache(bundle, self.cache_dir))
        except BackendUnavailable as e:  # e.g. the session did not get its provider: never time a CPU fallback
            raise Skip(str(e)) from e

    def predict(self, frames: Sequence[np.ndarray], caption: str) -> Tuple[List[np.ndarray], StageMs]:
        depths = self.engine.predict_batch(frames, [caption] * len(frames))
        return depths, dict(self.engine.times.last)

    def text_miss(self, caption: str) -> float:
        started = time.perf_counter()
        self.engine.embed([caption])
        return (time.perf_counter() - started) * 1e3

    def cache_hit(self, caption: str) -> Optional[float]:
        self.engine.embed([caption])
        started = time.perf_counter()
        self.engine.embed([caption])
        return (time.perf_counter() - started) * 1e3

    def describe(self) -> Dict[str, object]:
        info = {"backend": self.engine.backend_name, "graph": self.engine.image.__class__.__name__}
        session = getattr(self.engine.image, "session", None)
        if session is not None:
            info["providers"] = session.get_providers()
        meta = getattr(self.engine.image, "meta", None)  # native TensorRT: which engine ran
        if meta is not None:
            info["engine"] = meta.key
        return info


def _cache(bundle, directory: Path):
    from runtime.cache import CaptionCache

    return CaptionCache(bundle.text_encoder_id, bundle.text_dim, directory=directory)


class TorchRunner:
    """Eager PyTorch, the model rebuilt as the bundle was exported (preset, size, seed, checkpoint)."""

    def __init__(self, spec: BackendSpec, bundle: Path, *, seed: int = 0, checkpoint: Optional[Path] = None,
                 threads: Optional[int] = None):
        self.spec, self.bundle, self.seed, self.checkpoint = spec, Path(bundle), seed, checkpoint
        self.threads = threads
        self.model = None
        self.weights_match: Optional[bool] = None

    def load(self) -> None:
        import torch

        from runtime import Bundle

        self.device = self._device(torch)
        if self.threads:
            torch.set_num_threads(self.threads)
        manifest = Bundle.open(self.bundle, verify=False).manifest
        self.model = _rebuild(manifest, self.seed, self.checkpoint).to(self.device).eval()
        self.weights_match = _text_weights_match(self.model, manifest)
        self.autocast = self.spec.precision == "fp16"
        self.cfg = self.model.config
        self._emb: Dict[str, "torch.Tensor"] = {}

    def _device(self, torch):
        cuda = torch.cuda.is_available()
        if self.spec.device == "cuda" and not cuda:
            raise Skip("no CUDA GPU")
        if self.spec.precision == "fp16" and not cuda:
            raise Skip("FP16 eager needs a CUDA GPU")
        return torch.device("cuda" if cuda and self.spec.device in ("cuda", "auto") else "cpu")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()

    def _context(self):
        import contextlib

        import torch

        if self.autocast:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def embed(self, caption: str):
        if caption not in self._emb:  # the model holds no cache: a dict stands in for the runtime's
            with self._context():
                self._emb[caption] = self.model.encode_text([caption]).float()
        return self._emb[caption]

    def predict(self, frames: Sequence[np.ndarray], caption: str, flops=None) -> Tuple[List[np.ndarray], StageMs]:
        import torch

        from tr2m.transforms import prepare, resize, to_tensor

        stages: StageMs = {}
        started = time.perf_counter()
        emb = self.embed(caption).expand(len(frames), -1)
        stages["text"] = (time.perf_counter() - started) * 1e3
        started = time.perf_counter()
        batch = torch.stack([resize(to_tensor(f)[None].to(self.device), self.cfg.input_size)[0] for f in frames])
        batch = prepare(batch, self.cfg.input_size, self.cfg.mean, self.cfg.std)
        self._sync()
        stages["preprocess"] = (time.perf_counter() - started) * 1e3
        started = time.perf_counter()
        with torch.inference_mode(), self._context():
            out = self.model(batch, emb)
        self._sync()
        stages["image"] = (time.perf_counter() - started) * 1e3
        started = time.perf_counter()
        depth = out["depth"].float()
        depths = [resize(depth[i:i + 1], f.shape[:2])[0, 0].cpu().numpy() for i, f in enumerate(frames)]
        stages["postprocess"] = (time.perf_counter() - started) * 1e3
        return depths, stages

    def text_miss(self, caption: str) -> float:
        started = time.perf_counter()
        self.embed(caption)
        self._sync()
        return (time.perf_counter() - started) * 1e3

    def cache_hit(self, caption: str) -> Optional[float]:
        return None

    def count_flops(self, frame: np.ndarray, caption: str) -> Dict[str, float]:
        """FLOPs of one forward at batch 1 (torch.utils.flop_counter), total and per part."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from tr2m.transforms import prepare, resize, to_tensor

        image = prepare(resize(to_tensor(frame)[None].to(self.device), self.cfg.input_size),
                        self.cfg.input_size, self.cfg.mean, self.cfg.std)
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            self.model(image, self.embed(caption))
        text_counter = FlopCounterMode(display=False)
        with torch.inference_mode(), text_counter:
            self.model.encode_text(["a flop counting caption"])
        per_module = counter.get_flop_counts()
        parts = {part: float(sum(per_module.get(f"TR2M.{part}", {}).values())) for part in ("relative", "image_encoder")}
        total = float(counter.get_total_flops())
        # the head runs through fuse()/decode(), not its forward, so the counter files it under TR2M
        parts["head"] = total - sum(parts.values())
        return {"total": total, **parts, "text": float(text_counter.get_total_flops())}

    def describe(self) -> Dict[str, object]:
        import torch

        return {"device": str(self.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                "weights_match_bundle": self.weights_match}


def _rebuild(manifest: dict, seed: int, checkpoint: Optional[Path]):
    """The PyTorch model the bundle was exported from: random-init bundles are rebuilt from the
    preset with the export's seed and `tr2m.randomize_for_demo`; trained ones need the head checkpoint."""
    import torch

    import tr2m

    size = (int(manifest["preprocessing"]["height"]), int(manifest["preprocessing"]["width"]))
    untrained = bool(manifest.get("untrained"))
    if not untrained and checkpoint is None:
        raise Skip("the bundle is trained: pass --ckpt (the head checkpoint it was exported from)")
    torch.manual_seed(seed)
    model = tr2m.create_model(manifest["preset"], pretrained=checkpoint is not None and not untrained,
                              checkpoint=checkpoint, input_size=size)
    if untrained and checkpoint is None:
        tr2m.randomize_for_demo(model, seed=seed)
    return model


def _text_weights_match(model, manifest: dict) -> bool:
    """Whether the rebuilt text encoder is the bundle's (sha256 recorded by the export)."""
    from export.bundle import weights_sha256

    return weights_sha256(model.text_encoder) == manifest.get("text_encoder", {}).get("sha256")


def make_runner(spec: BackendSpec, bundle: Path, *, cache_dir: Path, seed: int = 0,
                checkpoint: Optional[Path] = None, threads: Optional[int] = None):
    if spec.kind == "torch":
        return TorchRunner(spec, bundle, seed=seed, checkpoint=checkpoint, threads=threads)
    return EngineRunner(spec, bundle, cache_dir, threads=threads)
