"""CPU paths against the hardware's limit: PyTorch's best CPU modes, ONNX Runtime, OpenVINO.

    python -m bench.cpu_limit --bundle bundles/paper --rounds 3 --out bench/RESULTS.md

The bundle needs the IR (`tr2m-export openvino --int8 ...`) and the CPU INT8 graph (`tr2m-export
cpu-int8`); rows whose artifact is missing are reported as not run, with the reason.

Rows are measured in three worker processes (PyTorch, ONNX Runtime, OpenVINO), so no process holds
more than a few copies of the paper model; inside each, the rows are called in turn, round after
round, on the same frame, and each row's median is taken. Errors are the median relative depth
error against PyTorch eager FP32 on that frame. The hardware limit is counted two ways: the
instruction throughput of the cores (FMA units x SIMD width x clock) and a measured GEMM (numpy
SGEMM for FP32; ONNX Runtime MatMulInteger for INT8), and each row's GFLOP/s (FLOPs of one frame,
counted by torch.utils.flop_counter, over its latency) is reported as a fraction of both.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

FRAME = Path(os.environ.get("TR2M_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / \
    "metric3d_nyu" / "rgb" / "rgb_00000.jpg"
CAPTION = "an office"
SECTION = "## CPU paths at the hardware limit (tr2m-bench cpu_limit)"
KEYFRAME_EVERY = 8
GOALS = {"fp_vs_torch": 0.4, "fp_error": 1e-2, "int8_vs_torch": 0.25, "int8_error": 3e-2, "ov_vs_ort": 0.8,
         "keyframe_speedup": 4.0}


# ------------------------------------------------------------------------------ the hardware limit
def cpu_flags() -> Dict[str, object]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    return {"model": model.group(1).strip() if model else "?", "cores": os.cpu_count() or 1,
            "mhz": max(mhz) if mhz else 0.0, "flags": flags}


def theoretical_peaks(info: Dict[str, object]) -> Dict[str, float]:
    """GFLOP/s (FP32) and GOP/s (INT8) from instruction throughput: 2 FMA pipes per core (AMD Zen,
    Intel since Haswell) x SIMD lanes x 2 ops per FMA x clock. INT8 without VNNI goes through
    vpmaddubsw + vpmaddwd (u8 x s8 products summed in pairs): twice the FP32 lane count per
    multiply instruction, so 2x FP32; AVX512-VNNI/AVX-VNNI fuse it (4x); bf16 needs avx512_bf16/AMX."""
    flags = info["flags"]
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fp32 = 2 * lanes * 2 * info["mhz"] / 1e3 * info["cores"]
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    return {"fp32": fp32, "int8": fp32 * (4 if vnni else 2), "bf16": fp32 * 2 if "avx512_bf16" in flags else 0.0,
            "lanes": lanes, "vnni": vnni}


def measured_peaks(size: int = 2048, rounds: int = 5) -> Dict[str, float]:
    """Best-of-rounds GEMM rates: numpy SGEMM (FP32) and ONNX Runtime MatMulInteger (u8 x s8)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size), np.float32), rng.standard_normal((size, size), np.float32)
    best = min(_seconds(lambda: a @ b) for _ in range(rounds))
    fp32 = 2 * size ** 3 / best / 1e9
    return {"fp32": fp32, "int8": _int8_gemm(size, rounds)}


def _seconds(fn: Callable) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _int8_gemm(size: int, rounds: int) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
                                               helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 255, (size, size), dtype=np.uint8),
             "b": rng.integers(-127, 127, (size, size), dtype=np.int8)}
    session.run(None, feeds)
    best = min(_seconds(lambda: session.run(None, feeds)) for _ in range(rounds))
    del onnx
    return 2 * size ** 3 / best / 1e9


# ------------------------------------------------------------------------------ worker groups
def set_attention(model, kind: str) -> None:
    """Switch every transformers sub-model to attention `kind` ("eager" as exported, or "sdpa":
    PyTorch's fused scaled_dot_product_attention); transformers reads it at each forward."""
    for module in model.modules():
        config = getattr(module, "config", None)
        for cfg in (config, getattr(config, "backbone_config", None)):
            if cfg is not None and hasattr(cfg, "_attn_implementation"):
                cfg._attn_implementation = kind


def _frame():
    from runtime.sources import read_image

    return read_image(FRAME)


def torch_rows(bundle: Path, rounds: int, out: Path, compile_model: bool) -> Dict:
    """PyTorch eager FP32 (the reference), SDPA attention, SDPA + bf16 autocast, torch.compile."""
    import contextlib

    import torch

    from bench.backends import BACKENDS
    from bench.runners import TorchRunner

    runner = TorchRunner(BACKENDS["pytorch-fp32"], bundle)
    runner.load()
    frame = _frame()
    flops = runner.count_flops(frame, CAPTION)
    model = runner.model

    def attention(kind: str):
        set_attention(model, kind)

    def row(kind: str, autocast: bool):
        def run():
            attention(kind)
            context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with context:
                return runner.predict([frame], CAPTION)[0][0]
        return run

    rows = {"pytorch eager fp32": row("eager", False), "pytorch sdpa fp32": row("sdpa", False),
            "pytorch sdpa bf16-autocast": row("sdpa", True)}
    notes = {}
    if compile_model:
        try:
            attention("sdpa")
            runner.model = torch.compile(model)
            started = time.perf_counter()
            runner.predict([frame], CAPTION)
            notes["pytorch compile fp32"] = f"compiled in {time.perf_counter() - started:.0f} s (inductor, sdpa)"
            compiled = runner.model
            runner.model = model
            rows["pytorch compile fp32"] = lambda: _swap(runner, compiled, frame)
        except Exception as e:  # torch.compile fails in many ways; the row then says why
            runner.model = model
            notes["pytorch compile fp32"] = f"not run: torch.compile failed ({type(e).__name__}: {str(e)[:120]})"
    result = interleave(rows, rounds, out)
    result["_flops"] = flops
    result["_notes"] = notes
    result["_versions"] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    return result


def _swap(runner, compiled, frame):
    plain, runner.model = runner.model, compiled
    try:
        return runner.predict([frame], CAPTION)[0][0]
    finally:
        runner.model = plain


def ort_rows(bundle: Path, rounds: int, out: Path) -> Dict:
    import onnxruntime

    from runtime import Engine

    rows, notes = {}, {}
    for name, precision in (("ort-cpu fp32", "fp32"), ("ort-cpu int8 (dynamic MatMul)", "int8")):
        try:
            engine = Engine.open(bundle, backend="ort-cpu", precision=precision, verify=False)
            rows[name] = _engine_row(engine)
        except Exception as e:
            notes[name] = f"not run: {e}"
    result = interleave(rows, rounds, out)
    result["_notes"], result["_versions"] = notes, {"onnxruntime": onnxruntime.__version__}
    return result


def openvino_rows(bundle: Path, rounds: int, out: Path) -> Dict:
    import openvino

    from runtime import Engine
    from runtime.backends.openvino import OpenVINOOptions
    from runtime.keyframe import KeyframePredictor

    rows, notes, precisions = {}, {}, {}
    cache = str(out.parent / "ov-cache")
    plans = (("openvino f32", "fp32", "f32"), ("openvino default", "fp32", "default"),
             ("openvino int8 (NNCF)", "int8", "default"))
    for name, precision, arithmetic in plans:
        try:
            options = OpenVINOOptions(inference_precision=arithmetic, cache_dir=cache)
            engine = Engine.open(bundle, backend="openvino", precision=precision, verify=False, backend_options=options)
            precisions[name] = engine.describe_backend()["inference_precision"]
            rows[name] = _engine_row(engine)
        except Exception as e:
            notes[name] = f"not run: {e}"
    try:
        engine = Engine.open(bundle, backend="openvino", verify=False,
                             backend_options=OpenVINOOptions(cache_dir=cache))
        keyframes = KeyframePredictor(engine, every=KEYFRAME_EVERY)
        frame = _frame()
        engine.predict(frame, CAPTION)
        rows[f"openvino default keyframe K={KEYFRAME_EVERY}"] = lambda: _keyframe_average(keyframes, frame)
    except Exception as e:
        notes[f"openvino default keyframe K={KEYFRAME_EVERY}"] = f"not run: {e}"
    result = interleave(rows, rounds, out)
    result["_notes"], result["_precisions"] = notes, precisions
    result["_versions"] = {"openvino": openvino.__version__}
    return result


def _engine_row(engine) -> Callable:
    frame = _frame()
    engine.predict(frame, CAPTION)  # warm-up: compile, caption embedded once
    return lambda: engine.predict(frame, CAPTION)


def _keyframe_average(keyframes, frame) -> np.ndarray:
    """K frames (one keyframe, K-1 relative-only): the returned depth is the keyframe's; the time
    interleave() measures is divided by K there (see KEYFRAME_EVERY)."""
    keyframes.reset()
    depth = keyframes.predict(frame, CAPTION)
    for _ in range(KEYFRAME_EVERY - 1):
        keyframes.predict(frame, CAPTION)
    return depth


def interleave(rows: Dict[str, Callable], rounds: int, out: Path) -> Dict:
    """Call each row in turn, `rounds` times; ms per frame and the depth of the first call."""
    result: Dict[str, Dict] = {name: {"ms": []} for name in rows}
    for r in range(rounds + 1):  # round 0 warms up (first-call allocations, oneDNN primitives)
        for name, fn in rows.items():
            started = time.perf_counter()
            depth = fn()
            ms = (time.perf_counter() - started) * 1e3
            if "keyframe" in name:
                ms /= KEYFRAME_EVERY
            if r == 0:
                path = out.parent / f"{re.sub(r'[^a-z0-9]+', '_', name)}.npy"
                np.save(path, np.asarray(depth, np.float32))
                result[name]["depth"] = str(path)
            else:
                result[name]["ms"].append(ms)
            print(f"    round {r} {name}: {ms:.0f} ms", file=sys.stderr, flush=True)
    return result


GROUPS = {"torch": torch_rows, "ort": ort_rows, "openvino": openvino_rows}


# ------------------------------------------------------------------------------ the parent
def run_group(group: str, bundle: Path, rounds: int, work: Path, compile_model: bool, timeout: float) -> Dict:
    out = work / f"{group}.json"
    cmd = [sys.executable, "-m", "bench.cpu_limit", "--worker", group, "--bundle", str(bundle), "--rounds",
           str(rounds), "--work", str(work)] + (["--compile"] if compile_model else [])
    print(f"  {group} rows ...", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(cmd, timeout=timeout, cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        return {"_notes": {group: f"not run: the worker passed {timeout:.0f} s"}}
    if done.returncode != 0 or not out.is_file():
        return {"_notes": {group: f"not run: the worker failed (exit {done.returncode})"}}
    return json.loads(out.read_text())


def summarize(groups: Dict[str, Dict], peaks: Dict, info: Dict) -> Dict:
    flops = groups.get("torch", {}).get("_flops", {}).get("total")
    reference = groups.get("torch", {}).get("pytorch eager fp32", {}).get("depth")
    for data in groups.values():  # a part group names its own reference (ORT FP32 on the part)
        if reference is None and data.get("_reference"):
            reference = data[data["_reference"]].get("depth")
    flops = flops or next((g["_flops"]["total"] for g in groups.values() if g.get("_flops")), None)
    ref = np.load(reference).astype(np.float64) if reference else None
    rows, notes, precisions = {}, {}, {}
    for data in groups.values():
        notes.update(data.get("_notes", {}))
        precisions.update(data.get("_precisions", {}))
        for name, row in data.items():
            if name.startswith("_") or not row.get("ms"):
                continue
            ms = float(np.median(row["ms"]))
            error = None
            if ref is not None and row.get("depth"):
                got = np.load(row["depth"]).astype(np.float64)
                live = np.abs(ref) > 1e-3 * np.abs(ref).max()  # a random Depth Anything outputs exact 0s (ReLU)
                error = float(np.median(np.abs(got - ref)[live] / np.abs(ref)[live]))
            rate = flops / ms / 1e6 if flops else None
            int8 = "int8" in name
            rows[name] = {"ms": ms, "rounds": row["ms"], "error": error, "gflops": rate,
                          "of_measured": rate / (peaks["measured"]["int8" if int8 else "fp32"]) if rate else None,
                          "of_theoretical": rate / (peaks["theoretical"]["int8" if int8 else "fp32"]) if rate else None}
    flop_parts = groups.get("torch", {}).get("_flops") or next((g["_flops"] for g in groups.values() if g.get("_flops")), None)
    return {"rows": rows, "notes": notes, "precisions": precisions, "flops": flop_parts,
            "reference": next((g["_reference"] for g in groups.values() if g.get("_reference")), "pytorch eager fp32"),
            "peaks": peaks, "cpu": {k: v for k, v in info.items() if k != "flags"},
            "versions": {k: v for g in groups.values() for k, v in g.get("_versions", {}).items()}}


def goals(summary: Dict) -> List[List[str]]:
    rows = summary["rows"]
    torch_best = min((r["ms"] for n, r in rows.items() if n.startswith("pytorch")), default=None)
    best_of = lambda keys, pred=lambda r: True: min(  # noqa: E731
        ((n, r) for n, r in rows.items() if any(k in n for k in keys) and pred(r) and "keyframe" not in n),
        key=lambda item: item[1]["ms"], default=(None, None))
    out = []

    def add(goal: str, name, value: Optional[float], limit: float, shown: str, extra: bool = True):
        verdict = "not measured" if value is None else ("PASS" if value <= limit and extra else "FAIL")
        out.append([goal, name or "-", shown, verdict])

    fp_ok = lambda r: r["error"] is not None and r["error"] <= GOALS["fp_error"]  # noqa: E731
    name, row = best_of(("ort-cpu fp32", "openvino f32", "openvino default"), fp_ok)
    ratio = row["ms"] / torch_best if row and torch_best else None
    add("tr2m CPU path <= 0.4x fastest PyTorch, error <= 1e-2", name, ratio, GOALS["fp_vs_torch"],
        f"{ratio:.3f}x, error {row['error']:.1e}" if ratio else "-")
    name, row = best_of(("int8",))
    ratio = row["ms"] / torch_best if row and torch_best else None
    ok = row is not None and row["error"] is not None and row["error"] <= GOALS["int8_error"]
    add("INT8 path <= 0.25x fastest PyTorch, error <= 3e-2", name, ratio, GOALS["int8_vs_torch"],
        f"{ratio:.3f}x, error {row['error']:.1e}" if ratio else "-", ok)
    ov, ort = rows.get("openvino f32"), rows.get("ort-cpu fp32")
    ratio = ov["ms"] / ort["ms"] if ov and ort else None
    add("OpenVINO FP32 <= 0.8x ORT FP32", "openvino f32", ratio, GOALS["ov_vs_ort"], f"{ratio:.3f}x" if ratio else "-")
    key = rows.get(f"openvino default keyframe K={KEYFRAME_EVERY}")
    base = rows.get("openvino default")
    speed = base["ms"] / key["ms"] if key and base else None
    add(f"keyframe K={KEYFRAME_EVERY} on OpenVINO >= 4x per-frame", "openvino default keyframe",
        None if speed is None else -speed, -GOALS["keyframe_speedup"], f"{speed:.2f}x" if speed else "-")
    return out


def markdown(summary: Dict, command: str) -> str:
    peaks, cpu = summary["peaks"], summary["cpu"]
    torch_best = min((r["ms"] for n, r in summary["rows"].items() if n.startswith("pytorch")), default=None)
    flops = summary["flops"] or {}
    lines = [SECTION, "",
             f"- machine: {cpu['model']}, {cpu['cores']} cores at {cpu['mhz']:.0f} MHz, SIMD {peaks['theoretical']['lanes']}"
             f" FP32 lanes, VNNI {'yes' if peaks['theoretical']['vnni'] else 'no'}, bf16 "
             f"{'yes' if peaks['theoretical']['bf16'] else 'no'}; medians of interleaved rounds; load average "
             f"{os.getloadavg()[0]:.1f} at the end",
             f"- command: `{command}`",
             f"- versions: {', '.join(f'{k} {v}' for k, v in summary['versions'].items())}",
             f"- FLOPs per frame (torch.utils.flop_counter): {flops.get('total', 0) / 1e9:.0f} GFLOP"
             + (f" (relative {flops['relative'] / 1e9:.0f}, image encoder {flops['image_encoder'] / 1e9:.0f}, head "
                f"{flops['head'] / 1e9:.0f})" if "head" in flops else ""),
             f"- hardware limit: FP32 {peaks['theoretical']['fp32']:.0f} GFLOP/s from instruction throughput, "
             f"{peaks['measured']['fp32']:.0f} measured (numpy SGEMM 2048); INT8 {peaks['theoretical']['int8']:.0f} GOP/s"
             f" from instruction throughput, {peaks['measured']['int8']:.0f} measured (ORT MatMulInteger 2048); bf16: "
             f"{'%.0f GFLOP/s' % peaks['theoretical']['bf16'] if peaks['theoretical']['bf16'] else 'none (no avx512_bf16/AMX: bf16 is emulated)'}",
             *_clock_note(peaks, cpu),
             "", "| row | ms/frame | x fastest PyTorch | median rel err vs eager FP32 | GFLOP/s | of measured GEMM |"
             " of instruction peak | precision |", "|---|---|---|---|---|---|---|---|"]
    lines[-2] = lines[-2].replace("vs eager FP32", f"vs {summary.get('reference', 'eager FP32')}")
    for name, r in sorted(summary["rows"].items(), key=lambda item: -item[1]["ms"]):
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        lines.append(f"| {name} | {r['ms']:.0f} | {f(r['ms'] / torch_best if torch_best else None, '.3f')} | "
                     f"{f(r['error'], '.1e')} | {f(r['gflops'], '.0f')} | {f(r['of_measured'], '.0%')} | "
                     f"{f(r['of_theoretical'], '.0%')} | {summary['precisions'].get(name, '')} |")
    lines += ["", "| goal | row | value | verdict |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in goals(summary)]
    if summary["notes"]:
        lines += [""] + [f"- {name}: {note}" for name, note in summary["notes"].items()]
    return "\n".join(lines) + "\n"


def _clock_note(peaks: Dict, cpu: Dict) -> List[str]:
    """A virtual machine reports the nominal clock; a GEMM faster than the peak at that clock says
    the cores boost, and by how much at least."""
    measured, nominal = peaks["measured"]["fp32"], peaks["theoretical"]["fp32"]
    if not nominal or measured <= nominal:
        return []
    return [f"- numpy SGEMM ran at {measured:.0f} GFLOP/s, above the instruction peak at the {cpu['mhz']:.0f} MHz "
            f"this machine reports: its cores run at >= {measured / nominal * cpu['mhz'] / 1e3:.2f} GHz (boost), so "
            "the fractions of the instruction peak are upper bounds and the measured GEMM is the firmer limit"]


def write_section(path: Path, text: str) -> None:
    from runtime.atomic import atomic_write_bytes

    old = path.read_text() if path.is_file() else ""
    if SECTION in old:
        head, _, tail = old.partition(SECTION)
        rest = re.split(r"\n(?=## |<!-- )", tail, maxsplit=1)  # up to the next section or generated block
        old = head + (rest[1] if len(rest) > 1 else "")
    atomic_write_bytes(path, (old.rstrip() + "\n\n" + text).encode())


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--groups", default="torch,ort,openvino", help="worker groups to run, in order")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (minutes on 2 cores)")
    parser.add_argument("--out", type=Path, help="markdown file whose section to replace (e.g. bench/RESULTS.md)")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--worker", choices=list(GROUPS))
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="tr2m-cpu-limit-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.worker:
        group = GROUPS[args.worker]
        extra = {"compile_model": args.compile} if args.worker == "torch" else {}
        result = group(args.bundle, args.rounds, work / f"{args.worker}.json", **extra)
        (work / f"{args.worker}.json").write_text(json.dumps(result))
        return 0
    info = cpu_flags()
    peaks = {"theoretical": theoretical_peaks(info), "measured": measured_peaks()}
    print(f"  peaks: {peaks}", file=sys.stderr)
    groups = {g: run_group(g, args.bundle, args.rounds, work, args.compile, args.timeout)
              for g in args.groups.split(",")}
    summary = summarize(groups, peaks, info)
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    text = markdown(summary, "python -m bench.cpu_limit " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(text)
    if args.out:
        write_section(args.out, text)
    return 0



# ------------------------------------------------------------------------------ one part, one process
def relative_part(bundle: Path, rounds: int, work: Path, calib_frames: int = 16) -> Dict:
    """The Depth Anything part (graph `relative`, [1,3,H,W] -> rel) of a bundle, every row in one
    process (small enough). PyTorch rows run the same architecture built from the bundle's config
    with its own random weights (speed only); errors are against ONNX Runtime FP32 on the graph."""
    import onnxruntime as ort
    import openvino as ov
    import torch

    from export.cpu_int8 import quantize_dynamic_graph
    from runtime.backends.openvino import precision_name
    from runtime.bundle import Bundle
    from runtime.preprocess import Preprocessor
    from tr2m.config import TR2MConfig
    from tr2m.encoders.relative import RelativeDepth

    b = Bundle.open(bundle, verify=False)
    src = b.graph_path("relative")
    image = Preprocessor.for_bundle(b)([_frame()])
    rows: Dict[str, Callable] = {}
    config = TR2MConfig.from_dict(b.manifest["config"])
    module = RelativeDepth.from_config(config.relative, pretrained=False).eval()
    tensor = torch.from_numpy(image)

    def attention(kind: str):
        set_attention(module, kind)

    def torch_row(kind: str, bf16: bool):
        def run():
            attention(kind)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return module(tensor).float().numpy()
        return run

    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(tensor)
    flops = float(counter.get_total_flops())
    rows["pytorch eager fp32"] = torch_row("eager", False)
    rows["pytorch sdpa fp32"] = torch_row("sdpa", False)
    rows["pytorch sdpa bf16-autocast"] = torch_row("sdpa", True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    fp32 = ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    rows["ort-cpu fp32"] = lambda: fp32.run(["rel"], {"image": image})[0]
    int8_path = work / "relative_int8_cpu.onnx"
    quantize_dynamic_graph(src, int8_path)
    int8 = ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"])
    rows["ort-cpu int8 (dynamic MatMul)"] = lambda: int8.run(["rel"], {"image": image})[0]
    core = ov.Core()
    model = ov.convert_model(str(src))
    ir = work / "relative.xml"
    ov.save_model(model, str(ir), compress_to_fp16=True)
    precisions = {}
    for name, hint in (("openvino f32", "f32"), ("openvino default", None)):
        compiled = core.compile_model(str(ir), "CPU", {"INFERENCE_PRECISION_HINT": hint} if hint else {})
        precisions[name] = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        rows[name] = (lambda c: lambda: np.asarray(c({"image": image})[c.outputs[0]]))(compiled)
    quantized = _nncf_relative(core.read_model(str(ir)), b, calib_frames)
    ov.save_model(quantized, str(work / "relative_int8.xml"))
    compiled8 = core.compile_model(str(work / "relative_int8.xml"), "CPU")
    precisions["openvino int8 (NNCF)"] = "int8 + " + precision_name(compiled8.get_property("INFERENCE_PRECISION_HINT"))
    rows["openvino int8 (NNCF)"] = lambda: np.asarray(compiled8({"image": image})[compiled8.outputs[0]])
    result = interleave(rows, rounds, work / "relative.json")
    reference = np.load(result["ort-cpu fp32"]["depth"])
    result["_reference"] = "ort-cpu fp32"
    result["_flops"] = {"total": flops}
    result["_precisions"] = precisions
    result["_notes"] = {"pytorch rows": "same architecture and config as the bundle's relative graph, its own random "
                                        "weights (speed only; no error column)"}
    result["_versions"] = {"torch": torch.__version__, "onnxruntime": ort.__version__, "openvino": ov.__version__}
    for name in rows:
        if name.startswith("pytorch"):
            result[name].pop("depth", None)
    del reference
    return result


def _nncf_relative(model, bundle, frames: int):
    """NNCF INT8 (transformer model type) of the relative IR on frames of the shared videos."""
    import nncf

    from calib.data import CalibrationConfig, sample_frames
    from runtime.preprocess import Preprocessor

    videos = [FRAME.parents[2] / "videos" / name for name in ("sam2_04_coffee.mp4", "sam2_bedroom.mp4")]
    images, _ = sample_frames(videos, CalibrationConfig(size=frames, every=10), Preprocessor.for_bundle(bundle))
    dataset = nncf.Dataset([{"image": images[i:i + 1]} for i in range(len(images))])
    return nncf.quantize(model, dataset, subset_size=len(images), model_type=nncf.ModelType.TRANSFORMER)


GROUPS["relative"] = lambda bundle, rounds, out: relative_part(bundle, rounds, out.parent)


if __name__ == "__main__":
    sys.exit(main())
