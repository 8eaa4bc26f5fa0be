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
    """Peak resident set size of this process in MB: VmHWM (Linux /proc), else ru_maxrss.

    Not ru_maxrss on Linux: the kernel carries it across fork and exec, so a worker started by a
    parent that holds 4 GB reports at least 4 GB; VmHWM belongs to the process's own memory map."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024 / 1e6
    except (OSError, ValueError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KB on Linux, bytes on macOS


def read_frames(paths: List[str]) -> List[np.ndarray]:
    from runtime.sources import read_image

    return [np.ascontiguousarray(read_image(p)[:, :, :3]) for p in paths]


def timed(fn, *args, **kwargs):
    """fn(*args, **kwargs) -> (its result, wall ms, CPU ms of this process: all its threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3
