"""Numerical parity of exported graphs against PyTorch, on real frames when given.

Tolerances (median relative error over all pixels, per output):
- FP32 ONNX Runtime vs PyTorch: 1e-4 (observed ~1e-6 on CPU; the margin covers kernels
  that sum in another order, e.g. MLAS vs oneDNN);
- FP16 graph vs PyTorch FP32: 5e-3 for depth (half has 11 bits of mantissa: ~5e-4 per op,
  accumulated over ~40 blocks).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np
import torch

TOLERANCES = {"fp32": 1e-4, "fp16": 5e-3}
CAPTIONS = ("an office", "a street at night", "a kitchen")


@dataclass(frozen=True)
class ParityStat:
    graph: str
    output: str
    batch: int
    median_rel: float
    p99_rel: float
    max_rel: float

    def row(self) -> str:
        return (f"{self.graph:<12} {self.output:<9} b={self.batch:<2} median {self.median_rel:.2e}  "
                f"p99 {self.p99_rel:.2e}  max {self.max_rel:.2e}")


def relative_error(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|got - ref| / |ref|, with |ref| floored at 1e-6 of its own scale (D_r is 0 in places)."""
    floor = max(float(np.abs(ref).max()) * 1e-6, 1e-12)
    return np.abs(got.astype(np.float64) - ref) / np.maximum(np.abs(ref), floor)


def compare(graph: str, outputs: Sequence[str], got: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> List[ParityStat]:
    stats = []
    for name, g, r in zip(outputs, got, ref):
        err = relative_error(g, r)
        stats.append(ParityStat(graph, name, int(r.shape[0]), float(np.median(err)),
                                float(np.quantile(err, 0.99)), float(err.max())))
    return stats


def parity_batches(frames: Sequence[np.ndarray], model, batches: Sequence[int] = (1, 2)) -> List[torch.Tensor]:
    """Normalized image batches from real RGB frames (or seeded noise when none are given)."""
    from tr2m.transforms import prepare, to_tensor

    cfg = model.config
    if frames:
        images = [prepare(to_tensor(f)[None], cfg.input_size, cfg.mean, cfg.std)[0] for f in frames]
    else:
        gen = torch.Generator().manual_seed(0)
        images = [torch.randn(3, *cfg.input_size, generator=gen) for _ in range(max(batches))]
    out, start = [], 0
    for size in batches:
        out.append(torch.stack([images[(start + i) % len(images)] for i in range(size)]))
        start += size
    return out


def bundle_feeds(bundle, frames: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
    """Feeds for every graph input, batch 2: real frames through the runtime's preprocessing
    (seeded noise when none are given), captions through the bundle's tokenizer and text graph."""
    from runtime.preprocess import Preprocessor
    from runtime.tokenizer import ClipTokenizer

    pre = bundle.preprocessing
    if frames:
        picked = [frames[i % len(frames)] for i in range(2)]
        image = Preprocessor.for_bundle(bundle)(picked)
    else:
        image = np.random.default_rng(0).standard_normal((2, 3, pre.height, pre.width)).astype(np.float32)
    token_ids = ClipTokenizer.from_file(bundle.tokenizer_path)(list(CAPTIONS[:2]))
    text_emb = run_ort(bundle.graph_path("text"), {"token_ids": token_ids})[0].astype(np.float32)
    return {"image": image, "token_ids": token_ids, "text_emb": text_emb}


def check(stats: Sequence[ParityStat], precision: str, checked_outputs: Sequence[str]) -> List[str]:
    """Failures: outputs whose median relative error passes the written tolerance."""
    limit = TOLERANCES[precision]
    return [f"{s.graph}/{s.output} (batch {s.batch}): median relative error {s.median_rel:.2e} > {limit:.0e}"
            for s in stats if s.output in checked_outputs and s.median_rel > limit]


def run_ort(path: Path, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def read_frames(paths: Sequence[Path]) -> List[np.ndarray]:
    """RGB frames [H,W,3] (uint8, or uint16 for 16-bit files) read as the runtime reads images:
    gray and RGBA converted, EXIF orientation applied; a bad file raises SourceError (one line,
    and no libjpeg chatter on stderr, unlike cv2.imread)."""
    from runtime.sources import read_image

    return [read_image(path) for path in paths]


def stats_table(stats: Sequence[ParityStat]) -> str:
    return "\n".join(s.row() for s in stats)


def as_dict(stats: Sequence[ParityStat]) -> List[Dict]:
    return [s.__dict__ for s in stats]
