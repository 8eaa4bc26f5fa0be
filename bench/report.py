"""The benchmark's outputs: the targets check, a console table and the RESULTS.md section.

RESULTS.md keeps hand-written notes: the run replaces only the text between the two markers
below (the whole file is written when it has none).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .backends import BENCH_MADE, REFERENCE
from .metrics import STATIC_THRESHOLD, latency, ratio

BEGIN = "<!-- tr2m-bench: begin (generated; edit outside the markers) -->"
END = "<!-- tr2m-bench: end -->"
STAGES = ("preprocess", "text", "image", "postprocess")


def _med(values) -> float:
    return latency(values or [])["median"]


def frame_ms(result: Dict) -> float:
    """Median wall time of one batch-1 predict call (preprocess + cache hit + graph + postprocess)."""
    return _med(result.get("frame_ms")) if result.get("status") == "ok" else float("nan")


def image_ms(result: Dict) -> float:
    return _med(result.get("stages_ms", {}).get("image")) if result.get("status") == "ok" else float("nan")


def fps(result: Dict, batched: bool = False) -> float:
    if result.get("status") != "ok":
        return float("nan")
    if batched:
        return result["batch"] * 1e3 / _med(result.get("batch_ms")) if result.get("batch_ms") else float("nan")
    return 1e3 / frame_ms(result)


def gflops_rate(result: Dict, flops: Optional[float]) -> float:
    """Achieved GFLOP/s of the image graph: FLOPs per frame (counted on PyTorch) / image stage time."""
    if not flops:
        return float("nan")
    return flops / 1e9 / (image_ms(result) / 1e3)


def paired_ratio(summary: Dict, name: str, kind: str = "wall") -> float:
    """Median per-round ratio row / reference from the interleaved measurement (NaN if absent)."""
    paired = summary.get("paired") or {}
    if paired.get("status") != "ok":
        return float("nan")
    return paired.get("rows", {}).get(name, {}).get(f"ratio_{kind}", float("nan"))


def latency_ratio(summary: Dict, name: str) -> Tuple[float, str]:
    """The ratio the targets judge: interleaved when measured, else the rows' own medians."""
    value = paired_ratio(summary, name)
    if not math.isnan(value):
        return value, f"{value:.2f}x (interleaved; CPU time {paired_ratio(summary, name, 'cpu'):.2f}x; " \
                      f"separate runs {ratio(frame_ms(summary['backends'].get(name, {})), _ref_ms(summary)):.2f}x)"
    value = ratio(frame_ms(summary["backends"].get(name, {})), _ref_ms(summary))
    return value, "-" if math.isnan(value) else f"{value:.2f}x (separate runs)"


def _ref_ms(summary: Dict) -> float:
    return frame_ms(summary["backends"].get(REFERENCE, {}))


def _flops(summary: Dict) -> Optional[float]:
    return summary["backends"].get(REFERENCE, {}).get("flops", {}).get("total")


# ------------------------------------------------------------------------------------ targets
def _check(value: float, op: str, limit: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "PASS" if {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op] else "MISS"


def targets(summary: Dict) -> List[Dict]:
    """[{"target", "goal", "value", "shown", "verdict"}] for each performance target."""
    rows = summary["backends"]
    out = []

    def add(name: str, op: str, limit: float, value: float, shown: str, goal: str):
        out.append({"target": name, "goal": goal, "value": value, "shown": shown, "verdict": _check(value, op, limit)})

    value, shown = latency_ratio(summary, "ort-cpu-fp32")
    add("ORT CPU FP32 latency / PyTorch eager FP32", "<=", 0.7, value, shown, "<= 0.7x")
    for name in ("ort-cpu-int8", *BENCH_MADE):
        row = rows.get(name, {})
        if row.get("status") != "ok":
            continue
        value, shown = latency_ratio(summary, name)
        add(f"{name} latency / PyTorch eager FP32", "<=", 0.4, value, shown, "<= 0.4x")
        err = row.get("agreement", {}).get("median_rel", float("nan"))
        add(f"{name} median relative depth error vs FP32", "<=", 3e-2, err, f"{err:.2e}", "<= 3e-2")
    video = summary.get("video") or {}
    if video.get("status") == "ok" and video.get("videos"):
        first = video["videos"][0]
        if "loop" in first:
            loop = first["loop"]
            add("video loop throughput / bare engine", ">=", 0.9, loop["ratio_wall"],
                f"{loop['ratio_wall']:.2f}x (vs the faster bare pass; CPU time {loop['ratio_cpu']:.2f}x; "
                f"{100 * loop.get('engine_share', float('nan')):.1f} % of the loop's wall time inside the engine)",
                ">= 0.9x")
        value = ratio(video["cache_hit_ms"]["median"], first["bare"]["ms"]["median"])
        add("caption-cache hit / one frame", "<", 0.01, value, f"{100 * value:.4f} %", "< 1 %")
        for entry in video["videos"]:
            kf = next((k for k in entry["keyframe"] if k["smoothing"] == 0), None)
            if kf is None:
                continue
            add(f"keyframe K={kf['every']} throughput / per-frame ({entry['video']})", ">=", 4.0, kf["ratio_wall"],
                f"{kf['ratio_wall']:.2f}x (interleaved; CPU time {kf['ratio_cpu']:.2f}x)", ">= 4x")
            dev = kf.get("deviation_between", kf["deviation_all"])["median_rel"]
            add(f"keyframe K={kf['every']} median deviation from per-frame, frames between keyframes "
                f"({entry['video']})", "<=", 0.03, dev,
                f"{100 * dev:.2f} % (all frames {100 * kf['deviation_all']['median_rel']:.2f} %)", "<= 3 %")
    return out


# ------------------------------------------------------------------------------------- tables
def _f(value, fmt: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _stage(result: Dict, stage: str) -> Tuple[float, float]:
    stat = latency(result.get("stages_ms", {}).get(stage, []))
    return stat["median"], stat["p90"]


BACKEND_COLUMNS = ("backend", "frame ms (med/p90)", "frame CPU ms", "preproc ms", "text miss ms",
                   "image ms (med/p90)", "postproc ms", "fps b=1", "fps b=B", "x ref (separate)",
                   "x ref (interleaved)", "load s", "peak RSS MB", "GFLOP/s", "med rel err", "delta1 agr")


def backend_rows(summary: Dict) -> List[List[str]]:
    flops = _flops(summary)
    base = frame_ms(summary["backends"].get(REFERENCE, {}))
    rows = []
    for name, r in summary["backends"].items():
        if r.get("status") != "ok":
            rows.append([name, f"{r.get('status', '?')} (see below)"] + ["-"] * (len(BACKEND_COLUMNS) - 2))
            continue
        agree = r.get("agreement", {})
        rows.append([
            name, "{} / {}".format(_f(frame_ms(r)), _f(latency(r["frame_ms"])["p90"])),
            _f(_med(r.get("frame_cpu_ms"))),
            "{} / {}".format(*(_f(v, ".2f") for v in _stage(r, "preprocess"))),
            _f(_med(r.get("text_miss_ms"))),
            "{} / {}".format(*(_f(v) for v in _stage(r, "image"))),
            "{} / {}".format(*(_f(v, ".2f") for v in _stage(r, "postprocess"))),
            _f(fps(r), ".3f"), f"{_f(fps(r, True), '.3f')} (B={r['batch']})",
            _f(ratio(frame_ms(r), base), ".2f"), _f(paired_ratio(summary, name), ".2f"),
            _f(r.get("load_s")), _f(r.get("peak_rss_mb"), ".0f"),
            _f(gflops_rate(r, flops), ".3g"),
            "(reference)" if name == summary.get("reference") else _f(agree.get("median_rel"), ".2e"),
            "(reference)" if name == summary.get("reference") else _f(agree.get("delta1"), ".4f"),
        ])
    return rows


def not_run(summary: Dict) -> List[str]:
    """'name: status: reason' for every row that did not run."""
    lines = [f"{name}: {r.get('status')}: {r.get('reason', '')}" for name, r in summary["backends"].items()
             if r.get("status") != "ok"]
    return lines + [f"{name}: {r['mismatch']}" for name, r in summary["backends"].items() if r.get("mismatch")]


def _plain(header, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _md(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def video_rows(summary: Dict) -> List[List[str]]:
    video = summary.get("video") or {}
    rows = []
    for entry in video.get("videos", []):
        bare = entry["bare"]
        rows.append([entry["video"], "per-frame (bare engine)", _f(bare["fps"], ".3f"), "1.00",
                     _f(bare["ms"]["median"]), f"{entry['frames']} (all)", "0 / 0", _f(bare["flicker"]["percent"], ".3f")])
        for kf in entry["keyframe"]:
            between = kf.get("deviation_between", kf["deviation_all"])
            rows.append([entry["video"], f"keyframe K={kf['every']} smoothing={kf['smoothing']}", _f(kf["fps"], ".3f"),
                         f"{_f(kf['ratio_wall'], '.2f')} (CPU {_f(kf['ratio_cpu'], '.2f')})",
                         _f(float(np.median(kf["ms"]))),
                         f"{kf['keyframes']}", f"{100 * kf['deviation_all']['median_rel']:.2f} / "
                         f"{100 * between['median_rel']:.2f}", _f(kf["flicker"]["percent"], ".3f")])
        if "loop" in entry:
            loop = entry["loop"]
            rows.append([entry["video"], "tr2m-run loop (decode+prefetch+engine+writer+H.264)", _f(loop["fps"], ".3f"),
                         f"{_f(loop['ratio_wall'], '.2f')} (CPU {_f(loop['ratio_cpu'], '.2f')})",
                         _f(1e3 / loop["fps"]), "-", "-", "-"])
    return rows


VIDEO_COLUMNS = ("video", "mode", "fps", "x per-frame (wall; CPU time)", "median ms/frame", "keyframes",
                 "median dev % (all / between keys)", "flicker %")


def targets_rows(summary: Dict) -> List[List[str]]:
    return [[t["target"], t["goal"], t["shown"], t["verdict"]] for t in summary["targets"]]


def paired_rows(summary: Dict) -> List[List[str]]:
    paired, flops = summary.get("paired") or {}, _flops(summary)
    return [[name, _f(_med(r["wall_ms"])), _f(min(r["wall_ms"])), _f(_med(r["cpu_ms"])), _f(r["ratio_wall"], ".3f"),
             _f(r["ratio_cpu"], ".3f"), _f(flops / 1e6 / _med(r["wall_ms"]) if flops else None, ".3g")]
            for name, r in paired.get("rows", {}).items()]


PAIRED_COLUMNS = ("backend (interleaved, one process)", "median ms", "min ms", "median CPU ms", "x ref (wall)",
                  "x ref (CPU)", "GFLOP/s")


def text_table(summary: Dict) -> str:
    parts = [f"reference for agreement: {summary.get('reference')}", _plain(BACKEND_COLUMNS, backend_rows(summary))]
    parts += ["\n".join(not_run(summary))] if not_run(summary) else []
    parts += [_plain(PAIRED_COLUMNS, paired_rows(summary))] if paired_rows(summary) else []
    if video_rows(summary):
        parts.append(_plain(VIDEO_COLUMNS, video_rows(summary)))
    elif summary.get("video"):
        parts.append(f"video: {summary['video'].get('status')} {summary['video'].get('reason', '')}")
    parts.append(_plain(("target", "goal", "measured", "verdict"), targets_rows(summary)))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------- markdown
def _machine(summary: Dict) -> str:
    m = summary["machine"]
    torch_info = summary["backends"].get(REFERENCE, {}).get("info", {})
    lines = [f"- date (UTC): {m['date']}; wall time of the run: {summary.get('wall_s', 0):.0f} s",
             f"- CPU: {m['cpu']}, {m['cores']} cores visible; memory {_f(m.get('memory_gb'))} GB; {m['os']}",
             f"- load average (1/5/15 min) at start {_loads(m['loadavg_start'])}, at end {_loads(m.get('loadavg_end'))}: "
             "other processes shared the cores, so compare ratios within this run, not absolute times",
             f"- versions: Python {m['python']}, numpy {m['numpy']}, onnxruntime {m['onnxruntime']}, "
             f"torch {torch_info.get('torch', '-')} ({torch_info.get('threads', '-')} threads, "
             f"device {torch_info.get('device', '-')})",
             f"- bundle: {summary['bundle']['path']} (preset {summary['bundle']['preset']}, input "
             f"{summary['bundle']['size'][0]}x{summary['bundle']['size'][1]}, untrained={summary['bundle']['untrained']}, "
             f"graphs {', '.join(summary['bundle']['graphs'])})",
             f"- settings: {summary['settings']}"]
    if summary.get("command"):
        lines.insert(0, f"- command: `{summary['command']}`")
    return "\n".join(lines)


def _loads(values) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "-"


def _flops_text(summary: Dict) -> str:
    flops = summary["backends"].get(REFERENCE, {}).get("flops")
    if not flops:
        return "FLOPs were not counted (the PyTorch row did not run)."
    parts = ", ".join(f"{k} {v / 1e9:.4g}" for k, v in flops.items() if k not in ("total", "text"))
    return (f"FLOPs per frame at batch 1 (torch.utils.flop_counter.FlopCounterMode on the PyTorch model; "
            f"matmul/conv/attention only, a multiply-add = 2 FLOPs): **{flops['total'] / 1e9:.4g} GFLOP** "
            f"({parts}); the text encoder, on a cache miss only: {flops['text'] / 1e9:.3g} GFLOP. "
            "GFLOP/s in the table = these FLOPs / median image-stage time (for INT8 rows an effective rate).")


DEFINITIONS = f"""Definitions. Latencies are wall times per call (median / 90th percentile over the timed calls,
after warm-up). "frame ms" is one `predict` call at batch 1: preprocess + caption-cache hit + image
graph + postprocess (resize back to the frame). "text miss" is the text encoder on a caption never
seen. "frame CPU ms" is the CPU time the process used during that call (all its threads): unlike wall
time it barely moves when other processes take the cores. fps b=1 = 1000 / median frame ms; fps b=B =
B frames / median batch call. "x ref (separate)" = median frame ms / the PyTorch eager FP32 one, each
row measured in its own process one after the other (the machine's load may differ between rows);
"x ref (interleaved)" = the median over rounds of (row / reference) with all rows loaded in one process
and called in turn on the same frame: the figure the latency targets use. Keyframe mode is likewise
called in turn with the per-frame engine on each video frame, and the video loop is timed between
two bare-engine passes (bare, loop, bare). Peak RSS is the worker process's ru_maxrss (each row runs in a fresh
process: interpreter, libraries, model and buffers). Agreement with the reference on the real frames,
at the frames' resolution: median |d - d_ref| / d_ref and the fraction of pixels with
max(d/d_ref, d_ref/d) < 1.25. Flicker: per consecutive frame pair, the median of
|d_t - d_t-1| / mean(d_t, d_t-1) over static pixels (grey change < {STATIC_THRESHOLD:g}/255 after a 5x5 blur at
half resolution), averaged over pairs, in %. Deviation of keyframe mode: median |d_kf - d_per-frame| /
d_per-frame over all pixels of all frames, and over the frames between keyframes only."""


def markdown(summary: Dict) -> str:
    ref = summary.get("reference")
    untrained = summary["bundle"]["untrained"]
    parts = [
        "## Latest run", _machine(summary),
        "### Backends" + (" (skipped rows say why)" if any(r.get("status") != "ok" for r in summary["backends"].values()) else ""),
        _md(BACKEND_COLUMNS, backend_rows(summary)),
        "\n".join(f"- {line}" for line in not_run(summary)),
        f"Agreement reference: `{ref}`." + (" The weights are random (untrained bundle): agreement numbers measure "
                                            "numerics of each backend, not depth quality." if untrained else ""),
        _flops_text(summary),
    ]
    if paired_rows(summary):
        rounds = summary["paired"]["rounds"]
        parts += [f"Interleaved latency ({rounds} rounds; every row loaded in one process and called in turn on the "
                  "same frame, so each round sees the same machine load):", _md(PAIRED_COLUMNS, paired_rows(summary))]
    if video_rows(summary):
        hit = summary["video"]["cache_hit_ms"]
        parts += ["### Video loop, keyframe mode, caption cache", _md(VIDEO_COLUMNS, video_rows(summary)),
                  f"Caption-cache hit (`Engine.embed` of a caption seen before): median {hit['median'] * 1e3:.1f} us, "
                  f"p90 {hit['p90'] * 1e3:.1f} us. Static pixels for flicker: "
                  + ", ".join(f"{e['video']} {100 * e['bare']['flicker']['static_fraction']:.0f} % of pixels "
                              f"({e['bare']['flicker']['pairs']} usable pairs)" for e in summary["video"]["videos"]) + ".",
                  "With random weights, keyframe deviation and flicker describe the untrained model (a random Depth "
                  "Anything outputs D_r = 0 over much of the frame, so depth there is 1/B), not what a trained one "
                  "would do: re-run with --ckpt on a trained bundle." if untrained else ""]
    elif summary.get("video"):
        parts += [f"Video section: {summary['video'].get('status')}: {summary['video'].get('reason', '')}"]
    parts += ["### Targets", _md(("target", "goal", "measured", "verdict"), targets_rows(summary)), DEFINITIONS]
    return "\n\n".join(p for p in parts if p)


def write_markdown(summary: Dict, path: Path) -> None:
    """Write the generated section into path, keeping whatever lies outside the markers."""
    write_section(path, BEGIN, END, markdown(summary))


def write_section(path: Path, begin: str, end: str, body: str) -> None:
    """Put ``body`` between the markers ``begin`` and ``end`` in path (appended when absent),
    keeping everything outside them."""
    block = f"{begin}\n{body}\n{end}"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    else:
        text = f"# tr2m-bench results\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    """Re-render a report from a saved summary: python -m bench.report SUMMARY.json [RESULTS.md]."""
    import json
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(main.__doc__, file=sys.stderr)
        return 2
    summary = json.loads(Path(argv[0]).read_text())
    summary["targets"] = targets(summary)
    print(text_table(summary))
    if len(argv) > 1:
        write_markdown(summary, Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
