"""Batches that fit an optimization profile: split along the batch axis, run, join.

A TensorRT engine (native, or built by ONNX Runtime's TensorRT provider) accepts only batch
sizes inside its profile's [min, max]; `--batch` has no upper bound and one call can bring more
new captions than the text engine's maximum. So every batched run goes through `run_in_chunks`,
with the limits read from the engine itself (or its sidecar).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

# The batch range engines are built for by default (tr2m-export trt --max-batch) and the profile
# given to ONNX Runtime's TensorRT provider.
DEFAULT_MAX_BATCH = 8

Feeds = Mapping[str, np.ndarray]
Outputs = Dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchLimits:
    """The batch sizes a profile accepts: min <= batch <= max."""

    min: int = 1
    max: Optional[int] = None  # None: no limit (plain ONNX Runtime)

    @classmethod
    def from_profile(cls, profile: Mapping[str, Mapping[str, Tuple[int, ...]]]) -> "BatchLimits":
        """{input: {"min": shape, "opt": shape, "max": shape}} (a sidecar's profile, or the engine's)
        -> the batch range every input accepts."""
        if not profile:
            return cls()
        return cls(min=max(int(p["min"][0]) for p in profile.values()),
                   max=min(int(p["max"][0]) for p in profile.values()))


def chunk_bounds(total: int, limits: BatchLimits) -> Iterator[Tuple[int, int]]:
    """(start, stop) of consecutive chunks of at most limits.max rows covering range(total)."""
    step = total if limits.max is None else limits.max
    for start in range(0, total, max(step, 1)):
        yield start, min(start + step, total)


def run_in_chunks(run: Callable[[Feeds], Outputs], feeds: Feeds, limits: BatchLimits) -> Outputs:
    """`run` on chunks of `feeds` that fit `limits`, outputs concatenated in order.

    Every feed shares the batch axis (axis 0). A chunk below limits.min is padded by repeating its
    last row, and the padded rows are dropped from the outputs.
    """
    total = _batch_size(feeds)
    parts = []
    for start, stop in chunk_bounds(total, limits):
        chunk = {k: v[start:stop] for k, v in feeds.items()}
        pad = max(limits.min - (stop - start), 0)
        if pad:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in chunk.items()}
        out = run(chunk)
        parts.append({k: v[: stop - start] for k, v in out.items()})
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _batch_size(feeds: Feeds) -> int:
    sizes = {len(v) for v in feeds.values()}
    if len(sizes) != 1:
        raise ValueError(f"inputs disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()
