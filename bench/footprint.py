"""`python -m bench.footprint`: bytes on disk and peak memory of a bundle, before and after
shared weight files; writes the "Footprint" section of bench/RESULTS.md.

    python -m bench.footprint --bundle bundles/paper --frames 4 --rounds 2 \\
        --export-log export_time.log      # `/usr/bin/time -v tr2m-export onnx ...` of that bundle

"Before" is the same bundle in the layout earlier exports wrote (every graph carrying its own
weights; `inline_copy`), run the way tr2m-run ran it then (keyframe mode also loaded the fused
graph, the text graph stayed loaded next to the image graph, ONNX Runtime's memory pattern was
on); "after" is the bundle as exported now (one weight file per precision) run as tr2m-run runs
it now (keyframe mode opens the halves only; captions embedded up front, then the text graph is
released; no memory pattern on the CPU). Every run is a fresh process: peak RSS is its own VmHWM
(`bench.measure.peak_rss_mb`); latency is the median per-frame time, before and after called in
turn (ABAB) over `rounds`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import click
import numpy as np

BEGIN = "<!-- tr2m-footprint: begin (generated) -->"
END = "<!-- tr2m-footprint: end -->"
MODES = ("open", "frame", "keyframe", "halves")  # halves: both halves on every frame (K=1), "after" only
GB = 1e9
CAPTION = "an office"


# --- bytes on disk ---------------------------------------------------------------------------
def inline_copy(bundle_dir: Path, out: Path) -> Path:
    """`bundle_dir` rewritten in the layout of exports before shared weight files: each FP32/FP16
    graph carries its own weights; graphs that layout did not have (FP16 halves) are left out."""
    import onnx

    from runtime.bundle import Bundle, write_manifest

    bundle = Bundle.open(bundle_dir)
    keep = [n for n in bundle.manifest["graphs"] if n in ("image", "image_fp16", "relative", "scale_shift", "text")]
    out.mkdir(parents=True)
    for name in keep:
        onnx.save_model(onnx.load(str(bundle.graph_path(name))), str(out / bundle.graph(name).file))
    shutil.copy(bundle.tokenizer_path, out / bundle.tokenizer_path.name)
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "format", "format_version", "engines")}
    manifest["graphs"] = {n: bundle.manifest["graphs"][n] for n in keep}
    manifest["extra_files"] = []
    write_manifest(out, manifest)
    return out


def disk_bytes(bundle_dir: Path) -> Dict[str, float]:
    """Bundle bytes, the bytes of its FP32 graphs (files counted once), and the unique FP32 weights."""
    import onnx

    from export.weights import MIN_BYTES, external_files, graph_bytes, tensor_bytes
    from runtime.bundle import Bundle

    bundle = Bundle.open(bundle_dir, verify=False)
    fp32 = [n for n, g in bundle.manifest["graphs"].items() if g["precision"] == "fp32"]
    files = {bundle.graph(n).file for n in fp32} | {f for n in fp32 for f in external_files(bundle.graph_path(n))}
    unique: Dict[str, int] = {}
    for name in fp32:
        for tensor in onnx.load(str(bundle.graph_path(name)), load_external_data=False).graph.initializer:
            data = tensor_bytes(tensor, bundle.directory)
            if len(data) >= MIN_BYTES:
                unique[hashlib.sha256(data).hexdigest()] = len(data)
    total = sum(p.stat().st_size for p in Path(bundle_dir).rglob("*") if p.is_file())
    image = graph_bytes(bundle.graph_path("image"))  # its file + the bytes it reads from the weight file
    return {"bundle": total, "fp32_graphs": sum((bundle.directory / f).stat().st_size for f in files),
            "unique_fp32": sum(unique.values()), "image_graph": image}


# --- peak memory and latency, one fresh process per run -------------------------------------
def worker(mode: str, bundle: str, frames: List[str], every: int, before: bool) -> Dict:
    """Run in a fresh interpreter: open the bundle as tr2m-run does for `mode`, predict `frames`.
    before: as tr2m-run did before this work: keyframe mode loads the fused graph too, the caption
    is embedded at the first frame (text and image graphs held together), and ONNX Runtime keeps its
    memory pattern on the CPU."""
    from runtime import Engine
    from runtime.backends.ort import OrtCpu
    from runtime.keyframe import KeyframePredictor
    from runtime.sources import read_image

    from .measure import peak_rss_mb

    images = [read_image(f) for f in frames]
    if before:
        OrtCpu.memory_pattern = True  # earlier releases' setting; this worker process only
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        lazy = mode in ("keyframe", "halves") and not before
        engine = Engine.open(bundle, backend="ort-cpu", cache_dir=cache, lazy=lazy)
        predictor = {"keyframe": lambda: KeyframePredictor(engine, every=every),
                     "halves": lambda: KeyframePredictor(engine, every=1)}.get(mode, lambda: engine)()
        if not before:
            engine.prefetch([CAPTION])  # as tr2m-run: captions embedded up front, text graph released
        opened = time.perf_counter() - started
        ms = []
        for image in images if mode != "open" else []:
            started = time.perf_counter()
            predictor.predict(image, caption=CAPTION)
            ms.append((time.perf_counter() - started) * 1e3)
    return {"open_s": opened, "ms": ms, "peak_rss": peak_rss_mb() * 1e6}


def measure(mode: str, bundle: Path, frames: List[str], every: int, before: bool) -> Dict:
    """One worker process: its result, with its peak RSS in bytes."""
    command = [sys.executable, "-m", "bench.footprint", "worker", mode, str(bundle), "--every", str(every),
               *(["--before"] if before else []), *frames]
    done = subprocess.run(command, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise click.ClickException(f"the {mode} run on {bundle} failed (exit {done.returncode})")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


@dataclass
class Runs:
    results: Dict[str, Dict[str, List[Dict]]] = field(default_factory=dict)  # layout -> mode -> runs

    def add(self, layout: str, mode: str, result: Dict) -> None:
        self.results.setdefault(layout, {}).setdefault(mode, []).append(result)

    def peak(self, layout: str, mode: str) -> float:
        return max(r["peak_rss"] for r in self.results[layout][mode])

    def median_ms(self, layout: str, mode: str) -> float:
        return float(np.median([ms for r in self.results[layout][mode] for ms in r["ms"][1:]]))  # first: warm-up


def run_all(layouts: Dict[str, Path], frames: List[str], every: int, rounds: int, log) -> Runs:
    runs = Runs()
    for round_ in range(rounds):
        for mode in MODES:
            for layout, bundle in layouts.items():  # before and after in turn: the box's load drifts
                if mode == "halves" and layout == "before":
                    continue
                log(f"round {round_ + 1}/{rounds}: {mode} ({layout}) ...")
                runs.add(layout, mode, measure(mode, bundle, frames, every, before=layout == "before"))
    return runs


# --- the report -------------------------------------------------------------------------------
def export_stats(log_path: Optional[Path]) -> Dict[str, float]:
    """Peak RSS and wall time from a `/usr/bin/time -v` log of the export."""
    if log_path is None:
        return {}
    text = Path(log_path).read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    expected = re.search(r"expected peak memory: about ([\d.]+) GB", text)
    seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.group(1).split(":")))) if wall else None
    return {"peak_rss": int(rss.group(1)) * 1024 if rss else None, "wall_s": seconds,
            "expected": float(expected.group(1)) * GB if expected else None}


def table(disk: Dict[str, Dict[str, float]], runs: Runs, export: Dict[str, float]) -> List[List[str]]:
    b, a = disk["before"], disk["after"]
    rows = [["bundle bytes", _gb(b["bundle"]), _gb(a["bundle"]), ""],
            ["FP32 graph bytes", _gb(b["fp32_graphs"]), _gb(a["fp32_graphs"]),
             f"<= 1.1x unique: {a['fp32_graphs'] / a['unique_fp32']:.2f}x {_ok(a['fp32_graphs'] <= 1.1 * a['unique_fp32'])}"],
            ["unique FP32 weight bytes", _gb(b["unique_fp32"]), _gb(a["unique_fp32"]), ""]]
    for mode, label in (("open", "peak RSS, open (per-frame)"), ("frame", "peak RSS, per-frame run"),
                        ("keyframe", "peak RSS, keyframe run")):
        rows.append([label, _gb(runs.peak("before", mode)), _gb(runs.peak("after", mode)), ""])
    frame, key = runs.peak("after", "frame"), runs.peak("after", "keyframe")
    rows[-1][3] = f"<= per-frame + 10%: {key / frame:.2f}x {_ok(key <= 1.1 * frame)}"
    rows[-2][3] = f"<= 1.5x image graph bytes: {frame / a['image_graph']:.2f}x {_ok(frame <= 1.5 * a['image_graph'])}"
    before_ms, after_ms = runs.median_ms("before", "frame"), runs.median_ms("after", "frame")
    rows.append(["per-frame latency (median ms)", f"{before_ms:.0f}", f"{after_ms:.0f}",
                 f"within 3%: {after_ms / before_ms:.3f}x {_ok(after_ms <= 1.03 * before_ms)}"])
    rows.append(["keyframe mode between keyframes (median ms)", f"{runs.median_ms('before', 'keyframe'):.0f}",
                 f"{runs.median_ms('after', 'keyframe'):.0f}", ""])
    halves = runs.median_ms("after", "halves")
    rows.append(["per-frame by the two halves (option not taken)", "", f"{halves:.0f} ms, "
                 f"{_gb(runs.peak('after', 'halves'))}", f"{halves / after_ms:.3f}x the fused graph's latency"])
    if export.get("peak_rss"):
        rows.append(["peak RSS, export (this run's bundle)", "see note", _gb(export["peak_rss"]),
                     f"<= 6 GB {_ok(export['peak_rss'] <= 6 * GB)}; predicted {_gb(export.get('expected') or 0)}; "
                     f"{export['wall_s'] / 60:.1f} min"])
    return rows


def _gb(value: float) -> str:
    return f"{value / GB:.2f} GB" if value >= 0.1 * GB else f"{value / 1e6:.1f} MB"


def _ok(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def markdown(rows: List[List[str]], command: str, machine: str) -> str:
    lines = [BEGIN, "## Footprint (bytes on disk, peak memory: before and after shared weight files)", "",
             f"- command: `{command}`", f"- machine: {machine}", "",
             "| measure | before | after | goal |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    return "\n".join(lines + ["", END])


def write_section(path: Path, section: str) -> None:
    from runtime.atomic import atomic_write_bytes

    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_bytes(path, text.encode())


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end"


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A bundle exported with shared weight files (the 'after').")
@click.option("--frames", "n_frames", default=4, show_default=True, help="Frames per run, real NYU images taken in turn (the first is a warm-up).")
@click.option("--rounds", default=2, show_default=True, help="Before/after runs in turn per mode.")
@click.option("--every", default=8, show_default=True, help="Keyframe interval K.")
@click.option("--export-log", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="`/usr/bin/time -v` log of the export that made --bundle (its peak RSS and wall time).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(__file__).resolve().parent / "RESULTS.md", show_default="bench/RESULTS.md")
@click.pass_context
def main(ctx, bundle, n_frames, rounds, every, export_log, out):
    """Bundle bytes, unique weight bytes, and the peak RSS of export, open, per-frame and keyframe
    runs, before and after shared weight files; prints the table and writes RESULTS.md."""
    if ctx.invoked_subcommand is not None:
        return
    if bundle is None:
        raise click.UsageError("--bundle is required")
    from .run import SHARED_DATA

    found = sorted((SHARED_DATA / "metric3d_nyu" / "rgb").glob("*.jpg"))
    if not found:
        raise click.UsageError(f"real frames not found under {SHARED_DATA} (set TR2M_SHARED_DATA)")
    if n_frames < 2:
        raise click.UsageError("--frames must be at least 2 (the first is a warm-up)")
    frames = [str(p) for p in itertools.islice(itertools.cycle(found), n_frames)]  # the few there are, in turn
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    with tempfile.TemporaryDirectory(dir=bundle.parent) as tmp:
        before = inline_copy(bundle, Path(tmp) / "before")
        disk = {"before": disk_bytes(before), "after": disk_bytes(bundle)}
        runs = run_all({"before": before, "after": bundle}, frames, every, rounds, log)
    rows = table(disk, runs, export_stats(export_log))
    click.echo("\n".join("  ".join(f"{c:<28}" for c in r) for r in [["measure", "before", "after", "goal"], *rows]))
    command = "python -m bench.footprint " + " ".join(sys.argv[1:])
    write_section(out, markdown(rows, command, _machine()))


@main.command("worker", hidden=True)
@click.argument("mode", type=click.Choice(MODES))
@click.argument("bundle")
@click.argument("frames", nargs=-1)
@click.option("--every", default=8)
@click.option("--before", is_flag=True)
def worker_command(mode, bundle, frames, every, before):
    click.echo(json.dumps(worker(mode, bundle, list(frames), every, before)))


if __name__ == "__main__":
    sys.exit(main())
