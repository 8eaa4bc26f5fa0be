"""One measurement in a fresh process, so peak RSS belongs to that backend alone.

    python -m bench.worker TASK.json     # writes the result JSON named in the task

Tasks (TASKS): "backend" (bench.backend_row), "paired" (bench.paired), "video" (bench.video) and
"quantize" (bench.quant); they measure with bench.measure. This module only dispatches: nothing
imports it. Progress goes to stderr, one line per step.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Dict

from .measure import peak_rss_mb


# task -> "module:function", imported when it runs, so a worker loads only its own task's code
TASKS = {
    "backend": "bench.backend_row:run_backend",
    "paired": "bench.paired:run_paired",
    "video": "bench.video:run_video",
    "quantize": "bench.quant:run_quantize",
}


def task_function(kind: str) -> Callable[[Dict], Dict]:
    if kind not in TASKS:
        raise KeyError(f"unknown benchmark task {kind!r}; valid: {', '.join(TASKS)}")
    module, _, name = TASKS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    task = json.loads(Path(argv[0]).read_text())
    if task.get("threads"):
        os.environ["TR2M_THREADS"] = str(task["threads"])
    try:
        result = task_function(task["task"])(task)
    except Exception as e:  # noqa: BLE001 - reported as a failed row, the benchmark goes on
        traceback.print_exc()
        result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    result.setdefault("peak_rss_mb", peak_rss_mb())
    Path(task["result_file"]).write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
