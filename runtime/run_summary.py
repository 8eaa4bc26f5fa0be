"""What a finished run says: run.json in the output folder, and the lines printed at the end."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

from .atomic import atomic_write_bytes
from .engine import Engine
from .errors import OutputError
from .loop import RunReport
from .run_options import RunOptions

SUMMARY_FILE = "run.json"


def summary(report: RunReport, engine: Engine, options: RunOptions, source: str) -> dict:
    """The contents of run.json (JSON types only)."""
    return {
        "source": source, "bundle": str(engine.bundle.directory), "untrained": engine.untrained,
        "backend": engine.backend_name, "backend_details": engine.describe_backend(), "precision": engine.precision,
        "batch": options.batch,
        "keyframe_every": options.keyframe_every, "keyframes": report.keyframes,
        "frames": report.frames, "seconds": round(report.seconds, 4), "fps": round(report.fps, 3),
        "interrupted": report.interrupted, "stage_ms": {k: round(v, 3) for k, v in report.stage_ms.items()},
        "caption_cache": dict(report.caption_cache),
        "range_m": list(report.range_m) if report.range_m else None,
        "outputs": {k: str(v) for k, v in report.outputs.items()},
        "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
    }


def write_summary(folder: Path, contents: dict) -> Path:
    """Write ``folder``/run.json atomically; OutputError if it cannot be written."""
    path = Path(folder) / SUMMARY_FILE
    try:
        atomic_write_bytes(path, (json.dumps(contents, indent=2) + "\n").encode())
    except OSError as e:
        raise OutputError(f"{path}: cannot write the run summary ({e.strerror or e}); check free space and "
                          "permissions") from e
    return path


def backend_label(engine: Engine) -> str:
    """The backend and what it runs on, e.g. "openvino CPU f32 LATENCY" (the precision OpenVINO chose)."""
    return " ".join([engine.backend_name, *(str(v) for v in engine.describe_backend().values())])


def summary_lines(report: RunReport, engine: Engine, options: RunOptions) -> List[str]:
    """The human summary: throughput, stage times, caption cache, keyframes, range, files."""
    cache = report.caption_cache
    lines = [f"tr2m-run: {report.frames} frames in {report.seconds:.1f} s = {report.fps:.1f} FPS end to end "
             f"({backend_label(engine)}, {engine.precision}, batch {options.batch})"
             + (" [interrupted]" if report.interrupted else "")]
    if report.stage_ms:
        lines.append("  mean ms per frame: " + " | ".join(f"{k} {v:.1f}" for k, v in report.stage_ms.items()))
    misses = cache.get("misses", 0)
    lines.append(f"  caption cache: {cache.get('hits', 0)} hits, {misses} misses "
                 f"(text graph ran for {misses} caption{'s' if misses != 1 else ''})")
    if report.keyframes is not None:
        lines.append(f"  keyframes: {report.keyframes} of {report.frames} frames")
    if report.range_m:
        lines.append(f"  video colour range: {report.range_m[0]:g}-{report.range_m[1]:g} m (fixed)")
    if report.skipped:
        lines.append(f"  skipped {len(report.skipped)} input{'s' if len(report.skipped) != 1 else ''} "
                     "that could not be read (listed in run.json)")
    lines += [f"  wrote {path}" for path in report.outputs.values()]
    return lines
