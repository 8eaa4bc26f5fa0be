"""What every benchmark task measures with: wall and CPU time of a call, resident memory, the
real frames, and progress lines on stderr (the parent streams them through)."""
from __future__ import annotations

import os
import resource
import sys
import time
from typing import List

import numpy as np


def log(message: str) -> None:
    print(f"    {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        return 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss is KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def read_frames(paths: List[str]) -> List[np.ndarray]:
    from runtime.sources import read_image

    return [np.ascontiguousarray(read_image(p)[:, :, :3]) for p in paths]


def timed(fn, *args, **kwargs):
    """fn(*args, **kwargs) -> (its result, wall ms, CPU ms of this process: all its threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3
