"""Latency ratios that survive a shared machine: every backend in one process, calls interleaved.

The per-row workers measure each backend alone (for peak RSS), one after the other, so a change
in the machine's load between two rows moves their ratio. Here the reference and the other rows
are loaded side by side and called in turn on the same frame (ref, a, b, ..., ref, a, b, ...),
so each round sees about the same load; the median over rounds of the per-round ratio
(row / reference) is the figure the targets use.
Memory is not measured here (the process holds every model at once).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict

import numpy as np

from .backends import BACKENDS
from .runners import Skip, make_runner
from .measure import log, read_frames, timed

SETTLE_S = 0.2  # pause before each call: the previous backend's pool threads stop spin-waiting


def run_paired(task: Dict) -> Dict:
    """task["rows"]: {row name: bundle path}; the first is the reference. Returns per-row
    wall and CPU ms per call and the ratio of medians to the reference."""
    frames = read_frames(task["frames"])
    caption, rounds = task["caption"], task["rounds"]
    runners = {}
    for name, bundle in task["rows"].items():
        runner = make_runner(BACKENDS[name], Path(bundle), cache_dir=Path(task["cache_dir"]) / name,
                             seed=task.get("seed", 0), checkpoint=task.get("checkpoint"), threads=task.get("threads"))
        log(f"paired: loading {name} ...")
        try:
            runner.load()
        except Skip as e:
            log(f"paired: {name} skipped ({e})")
            continue
        runner.predict([frames[0]], caption)  # warm-up
        runners[name] = runner
    wall: Dict[str, list] = {n: [] for n in runners}
    cpu: Dict[str, list] = {n: [] for n in runners}
    for r in range(rounds):
        frame = frames[r % len(frames)]
        log(f"paired: round {r + 1}/{rounds} ({', '.join(runners)}) ...")
        for name, runner in runners.items():
            time.sleep(SETTLE_S)
            _, w, c = timed(runner.predict, [frame], caption)
            wall[name].append(w)
            cpu[name].append(c)
    ref = next(iter(runners), None)
    rows = {}
    for name in runners:
        rows[name] = {"wall_ms": wall[name], "cpu_ms": cpu[name],
                      "ratio_wall": float(np.median(np.divide(wall[name], wall[ref]))),
                      "ratio_cpu": float(np.median(np.divide(cpu[name], cpu[ref])))}
    return {"status": "ok", "reference": ref, "rounds": rounds, "rows": rows}
