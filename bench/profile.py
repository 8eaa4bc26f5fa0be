"""Where the time goes: ONNX Runtime per-op-type profile and session-option experiments.

    python -m bench.profile ops --bundle DIR [--graph image] [--runs 2]
    python -m bench.profile sweep --bundle DIR [--graph image] [--runs 3] [--variants baseline,no-spin,...]
    python -m bench.profile interleaved --bundle DIR [--rounds 3] [--variants fused-attention,no-spin,...]

`ops` runs the graph with ORT's profiler and sums kernel time per op type (and lists the slowest
nodes). `sweep` times the graph under session-option variants, each in a fresh process (so one
variant's arena and threads cannot colour the next), on a real frame at batch 1, and prints the
median per variant with the ratio to the first one. On a machine shared with other work, use
`interleaved` instead: all variants' sessions live in one process and are called in turn, so each
round sees the same load (the separate-process sweep mixes load changes into the ratios).
Variants that need a rewritten graph
(`fused-attention`: onnxruntime.transformers' optimizer fusing attention, LayerNorm and GELU) are
written to a temporary folder first.
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

import click
import numpy as np

FRAME = Path(__file__).resolve().parents[2] / "shared" / "data" / "metric3d_nyu" / "rgb" / "rgb_00000.jpg"


def _feeds(bundle_dir: Path, graph: str, frame: Path = FRAME, batch: int = 1) -> Dict[str, np.ndarray]:
    from runtime import Bundle
    from runtime.preprocess import Preprocessor
    from runtime.sources import read_image

    bundle = Bundle.open(bundle_dir, verify=False)
    image = Preprocessor.for_bundle(bundle)([read_image(frame)] * batch)
    feeds = {"image": image, "text_emb": np.random.default_rng(0).standard_normal((batch, bundle.text_dim), np.float32)}
    return {k: feeds[k] for k in bundle.graph(graph).inputs}


def _session(path: Path, variant: str, profile_dir: Optional[Path] = None):
    import onnxruntime as ort

    options = ort.SessionOptions()  # the runtime's settings (runtime/backends/ort.py) ...
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(os.environ.get("TR2M_THREADS", 0)) or (os.cpu_count() or 1)
    options.log_severity_level = 3
    # ... then the variant's change
    if variant == "no-spin":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif variant == "extended":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    elif variant == "basic":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    elif variant == "1-thread":
        options.intra_op_num_threads = 1
    elif variant == "no-arena":
        options.enable_cpu_mem_arena = False
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / "ort")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fused_attention_graph(src: Path, out_dir: Path) -> Path:
    """The graph rewritten by onnxruntime.transformers' optimizer (attention/LayerNorm/GELU fusions)."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(src), model_type="vit", num_heads=0, hidden_size=0, opt_level=1, use_gpu=False)
    counts = collections.Counter(n.op_type for n in model.model.graph.node)
    print(f"    fused graph ops: {dict(counts.most_common(12))}", file=sys.stderr)
    out = out_dir / "fused.onnx"
    large = src.stat().st_size > 1_800_000_000
    model.save_model_to_file(str(out), use_external_data_format=large)
    return out


def _runner(session, feeds: Dict[str, np.ndarray], iobinding: bool):
    """A no-argument call of `session` on `feeds`, through IO binding or plain `run`."""
    names = [o.name for o in session.get_outputs()]
    if not iobinding:
        return lambda: session.run(names, feeds)
    binding = session.io_binding()
    for key, value in feeds.items():
        binding.bind_cpu_input(key, value)
    for name in names:
        binding.bind_output(name)
    return lambda: session.run_with_iobinding(binding)


def time_variant(path: Path, feeds: Dict[str, np.ndarray], variant: str, runs: int, iobinding: bool = False) -> Dict:
    began = time.perf_counter()
    session = _session(path, variant)
    load_s = time.perf_counter() - began
    call = _runner(session, feeds, iobinding)
    call()  # warm-up
    ms, cpu_ms = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        call()
        ms.append((time.perf_counter() - t) * 1e3)
        cpu_ms.append((time.process_time() - c) * 1e3)
    return {"variant": variant, "load_s": load_s, "ms": ms, "median_ms": float(np.median(ms)),
            "median_cpu_ms": float(np.median(cpu_ms)), "loadavg": os.getloadavg()[0]}


def op_profile(path: Path, feeds: Dict[str, np.ndarray], runs: int, top: int = 15) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(path, "baseline", profile_dir=Path(tmp))
        names = [o.name for o in session.get_outputs()]
        session.run(names, feeds)  # warm-up (profiled too; dropped below)
        for _ in range(runs):
            session.run(names, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    skip_until = runs_seen[0]["ts"] + runs_seen[0]["dur"] if len(runs_seen) > 1 else 0
    by_type, by_node = collections.Counter(), collections.Counter()
    count = collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < skip_until:
            continue
        op = e.get("args", {}).get("op_name", "?")
        by_type[op] += e["dur"] / 1e3 / runs
        by_node[f"{e['name'][:-12]} ({op})"] += e["dur"] / 1e3 / runs
        count[op] += 1
    total = sum(by_type.values())
    lines = [f"kernel time per run: {total:.1f} ms (sum over nodes; {runs} profiled runs)",
             f"{'op type':<28}{'ms/run':>10}{'%':>7}{'nodes':>7}"]
    for op, ms in by_type.most_common(top):
        lines.append(f"{op:<28}{ms:>10.1f}{100 * ms / total:>7.1f}{count[op] // runs:>7}")
    lines.append("slowest nodes:")
    for node, ms in by_node.most_common(8):
        lines.append(f"  {ms:8.1f} ms  {node}")
    return "\n".join(lines)


@click.group()
def main():
    """ONNX Runtime profiling and session-option experiments on a bundle graph."""


@main.command()
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--graph", default="image", show_default=True)
@click.option("--runs", default=2, show_default=True)
@click.option("--batch", default=1, show_default=True)
def ops(bundle, graph, runs, batch):
    """Kernel time per op type (ORT profiler)."""
    from runtime import Bundle

    path = Bundle.open(bundle, verify=False).graph_path(graph)
    click.echo(op_profile(path, _feeds(bundle, graph, batch=batch), runs))


VARIANTS = ("baseline", "no-spin", "extended", "basic", "1-thread", "no-arena", "iobinding", "fused-attention")


@main.command()
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--graph", default="image", show_default=True)
@click.option("--runs", default=3, show_default=True)
@click.option("--batch", default=1, show_default=True)
@click.option("--variants", default=",".join(VARIANTS), show_default=True)
@click.option("--repeat-baseline", is_flag=True, help="Run the baseline again at the end (drift check).")
def sweep(bundle, graph, runs, batch, variants, repeat_baseline):
    """Median image-graph time per session-option variant, each in a fresh process."""
    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    if repeat_baseline:
        chosen.append("baseline")
    results = []
    for variant in chosen:
        click.echo(f"  {variant} ...", err=True)
        out = subprocess.run([sys.executable, "-m", "bench.profile", "one", "--bundle", str(bundle), "--graph", graph,
                              "--runs", str(runs), "--batch", str(batch), "--variant", variant],
                             capture_output=True, text=True)
        if out.returncode != 0:
            click.echo(f"  {variant} failed: {out.stderr.strip().splitlines()[-1:]}", err=True)
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        click.echo(f"  {variant}: {results[-1]['median_ms']:.1f} ms, cpu {results[-1]['median_cpu_ms']:.1f} ms "
                   f"(session {results[-1]['load_s']:.1f} s, loadavg {results[-1]['loadavg']:.1f})", err=True)
    base = results[0]["median_ms"] if results else float("nan")
    base_cpu = results[0]["median_cpu_ms"] if results else float("nan")
    click.echo(f"{'variant':<18}{'median ms':>11}{'x first':>9}{'cpu ms':>10}{'x first':>9}{'load':>6}  runs (ms)")
    for r in results:
        click.echo(f"{r['variant']:<18}{r['median_ms']:>11.1f}{r['median_ms'] / base:>9.3f}"
                   f"{r['median_cpu_ms']:>10.1f}{r['median_cpu_ms'] / base_cpu:>9.3f}{r['loadavg']:>6.1f}  "
                   + " ".join(f"{m:.0f}" for m in r["ms"]))


@main.command()
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--graph", default="image", show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--variants", default="baseline,fused-attention,no-spin,1-thread,iobinding", show_default=True)
def interleaved(bundle, graph, rounds, variants):
    """Every variant's session in this one process, called in turn each round (robust to the
    machine's load); prints the median over rounds of (variant / baseline)."""
    from runtime import Bundle

    path = Bundle.open(bundle, verify=False).graph_path(graph)
    feeds = _feeds(bundle, graph)
    chosen = ["baseline"] + [v.strip() for v in variants.split(",") if v.strip() and v.strip() != "baseline"]
    with tempfile.TemporaryDirectory() as tmp:
        calls = {}
        for variant in chosen:
            click.echo(f"  session: {variant} ...", err=True)
            calls[variant] = _call(path, feeds, variant, Path(tmp), calls.get("baseline"))
            calls[variant]()  # warm-up
        wall = {v: [] for v in chosen}
        cpu = {v: [] for v in chosen}
        for r in range(rounds):
            for variant, call in calls.items():
                time.sleep(0.2)  # let the previous session's pool threads stop spinning
                t, c = time.perf_counter(), time.process_time()
                call()
                wall[variant].append((time.perf_counter() - t) * 1e3)
                cpu[variant].append((time.process_time() - c) * 1e3)
            click.echo(f"  round {r + 1}/{rounds}: " + ", ".join(f"{v} {wall[v][-1]:.0f} ms" for v in chosen), err=True)
    click.echo(f"{'variant':<18}{'median ms':>11}{'min ms':>9}{'cpu ms':>9}{'x baseline (wall)':>19}{'x baseline (cpu)':>18}")
    for v in chosen:
        click.echo(f"{v:<18}{np.median(wall[v]):>11.0f}{min(wall[v]):>9.0f}{np.median(cpu[v]):>9.0f}"
                   f"{np.median(np.divide(wall[v], wall['baseline'])):>19.3f}"
                   f"{np.median(np.divide(cpu[v], cpu['baseline'])):>18.3f}")


def _call(path: Path, feeds, variant: str, tmp: Path, baseline=None):
    """A zero-argument callable running the graph once under `variant`."""
    if variant == "iobinding" and baseline is not None:
        session = baseline.session
    else:
        source = fused_attention_graph(path, tmp) if variant == "fused-attention" else path
        session = _session(source, "baseline" if variant in ("fused-attention", "iobinding") else variant)
    call = _runner(session, feeds, variant == "iobinding")
    call.session = session
    return call


@main.command("torch-ops")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The bundle whose PyTorch model to rebuild (random-init bundles; see bench.runners).")
@click.option("--seed", default=0, show_default=True)
@click.option("--top", default=15, show_default=True)
def torch_ops(bundle, seed, top):
    """Eager PyTorch FP32 (the reference) under torch.profiler: self CPU time per op, one forward."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from runtime import Bundle

    from .runners import _rebuild

    model = _rebuild(Bundle.open(bundle, verify=False).manifest, seed, None).eval()
    feeds = _feeds(bundle, "image")
    image, text = torch.from_numpy(feeds["image"]), torch.from_numpy(feeds["text_emb"])
    with torch.inference_mode():
        model(image, text)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(image, text)
    click.echo(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=40))


@main.command(hidden=True)
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--graph", default="image")
@click.option("--runs", default=3)
@click.option("--batch", default=1)
@click.option("--variant", default="baseline")
def one(bundle, graph, runs, batch, variant):
    from runtime import Bundle

    path = Bundle.open(bundle, verify=False).graph_path(graph)
    feeds = _feeds(bundle, graph, batch=batch)
    with tempfile.TemporaryDirectory() as tmp:
        if variant == "fused-attention":
            path = fused_attention_graph(path, Path(tmp))
        result = time_variant(path, feeds, "baseline" if variant in ("fused-attention", "iobinding") else variant, runs,
                              iobinding=variant == "iobinding")
    result["variant"] = variant
    click.echo(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
