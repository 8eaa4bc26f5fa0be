#!/usr/bin/env python
"""Check every GPU path of tr2m on this machine, in one command, then run `pytest -m gpu`.

Needs a CUDA GPU with TensorRT (10/11, or TensorRT for RTX), cuda-python and onnxruntime-gpu
installed next to tr2m[torch,test] (for the tiny bundle). Nothing here runs on a CPU-only machine:
the CPU-testable logic of the same paths is in tests/runtime/test_gpu_paths.py.

    python scripts/gpu_check.py                  # ~5-10 min; exits 1 if any check failed
    python scripts/gpu_check.py --work /tmp/gpu  # keep the bundles and engines there

Prints: the GPU, its compute capability, driver / CUDA / TensorRT / ONNX Runtime versions and
providers; FP32/FP16/INT8 engines built for a tiny bundle; every GPU backend and precision against
ort-cpu on real frames (median relative depth error vs the tolerances below); batches 1, 3, the
profile maximum and maximum + 1; ten new captions through the text engine; the engine each
precision selects; the providers each ONNX Runtime session really got; `auto` on a bundle whose
engines are foreign; device memory before open and after close; then `pytest -m gpu`.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Median relative depth error vs ort-cpu on the same frames. FP32: TensorRT and cuDNN may use TF32
# for FP32 convolutions and matrix products (10-bit mantissa). FP16: the export's own FP16 parity
# bound. INT8: the same Q/DQ graph on both sides, so only kernel rounding differs (a sanity bound for
# an untrained tiny model calibrated on 8 frames).
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-3, "int8": 2e-2}
# ort-cpu reference graph per precision: FP16 is held against FP32 (the truth the export checks),
# INT8 against the CPU run of the same Q/DQ graph.
REFERENCE_PRECISION = {"fp32": "fp32", "fp16": "fp32", "int8": "int8"}
GPU_BACKENDS = {"tensorrt": ("fp32", "fp16", "int8"), "ort-trt": ("fp32", "fp16"), "ort-cuda": ("fp32", "fp16")}
NEW_CAPTIONS = ["a hospital corridor", "a snowy road", "a rooftop garden", "a server room", "a barn",
                "a subway platform", "a museum hall", "a boat deck", "a workshop", "a car park at dusk"]


class Checks:
    """Prints each step and keeps the verdicts."""

    def __init__(self):
        self.failed = []

    def step(self, title: str) -> None:
        click.echo(f"\n== {title}")

    def info(self, text: str) -> None:
        click.echo(f"   {text}")

    def verdict(self, ok: bool, text: str) -> bool:
        click.echo(f"   [{'PASS' if ok else 'FAIL'}] {text}")
        if not ok:
            self.failed.append(text)
        return ok

    def guard(self, title: str, fn, *args):
        """Run one step; an exception fails it (with its one-line reason) and the next step runs."""
        self.step(title)
        try:
            return fn(self, *args)
        except Exception as e:  # noqa: BLE001 - report and go on: one broken path must not hide the others
            self.verdict(False, f"{title}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=3)
            return None


# ----------------------------------------------------------------------------------- machine
def machine(checks: Checks) -> None:
    from runtime.backends.cuda import cuda_problem, import_cudart
    from runtime.backends.tensorrt import installed_tensorrt
    from runtime.trt_sidecar import current_gpu_cc

    cudart = import_cudart()
    problem = cuda_problem()
    if cudart is not None and problem is None:
        props = cudart.cudaGetDeviceProperties(0)[1]
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
        checks.info(f"GPU 0: {name.strip(chr(0))}, compute capability {props.major}.{props.minor} "
                    f"({current_gpu_cc()}), {props.totalGlobalMem / 2**30:.1f} GiB")
        driver, runtime = cudart.cudaDriverGetVersion()[1], cudart.cudaRuntimeGetVersion()[1]
        checks.info(f"driver supports CUDA {driver // 1000}.{driver % 1000 // 10}; cuda-python runtime CUDA "
                    f"{runtime // 1000}.{runtime % 1000 // 10}")
    from importlib.metadata import PackageNotFoundError, version

    for package in ("cuda-python", "cuda-bindings", "tensorrt", "tensorrt-rtx", "onnxruntime-gpu", "onnxruntime"):
        try:
            checks.info(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    checks.info(f"TensorRT flavours importable: "
                f"{', '.join(f'{k} {m.__version__}' for k, m in installed_tensorrt().items()) or 'none'}")
    import onnxruntime as ort

    checks.info(f"ONNX Runtime providers available: {', '.join(ort.get_available_providers())}")
    checks.verdict(problem is None, f"CUDA starts ({problem or 'ok'})")
    checks.verdict(bool(installed_tensorrt()), "a TensorRT flavour is installed")


# ----------------------------------------------------------------------------------- bundles
def make_bundle(checks: Checks, work: Path) -> Path:
    """The tiny random bundle (every graph + FP16) and its Q/DQ INT8 graph, as the tests make it."""
    import torch  # noqa: F401 - the export needs the PyTorch side

    from calib import CalibrationConfig, build_calibration_set, quantize_bundle
    from export.bundle import ExportOptions, export_bundle
    from tests.conftest import SHARED_DATA, real_frame_paths

    out = work / "tiny"
    if not (out / "manifest.json").is_file():
        export_bundle(ExportOptions(out=out, preset="tiny", random_init=True, half=True,
                                    parity_frames=real_frame_paths(SHARED_DATA)), log=lambda m: None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a deliberately small calibration set
            calib = build_calibration_set(out, [SHARED_DATA / "videos" / "sam2_bedroom.mp4"], captions=["a bedroom"],
                                          config=CalibrationConfig(size=8, every=20))
        quantize_bundle(out, calib)
    checks.verdict(True, f"tiny bundle with image, image_fp16, image_int8, halves, text: {out}")
    return out


def build_engines(checks: Checks, bundle: Path) -> None:
    from export.trt import build_bundle_engines

    for graphs, precision in ((("image", "text"), "fp32"), (("image",), "fp16"), (("image",), "int8")):
        results = build_bundle_engines(bundle, graphs=graphs, precision=precision, echo=checks.info)
        for r in results:
            checks.verdict(True, f"{r.key}: {r.meta.build_seconds:.1f} s, typing {r.meta.typing}, "
                                 f"compute layers {r.meta.layer_precisions}")


def weak_fp16(checks: Checks, bundle: Path, work: Path) -> None:
    """TensorRT 10 only: an FP16 engine from the FP32 graph (the Jetson route), reached by --precision fp16."""
    from export.trt import build_bundle_engines
    from export.trt.flavours import resolve_flavour
    from runtime import Engine

    flavour, _ = resolve_flavour("auto")
    if not flavour.weak_typing:
        checks.info(f"{flavour.label} is strongly typed: no FP16-from-FP32 route to check")
        return
    jetson = _copy_without_engines(bundle, work / "weak-fp16", drop_graph="image_fp16")
    build_bundle_engines(jetson, graphs=("image", "text"), precision="fp16", echo=checks.info)
    engine = Engine.open(jetson, backend="tensorrt", precision="fp16", cache_dir=jetson / "cache")
    checks.verdict(True, f"--precision fp16 without image_fp16.onnx runs {_engine_key(engine.image)}")
    engine.close()
    try:
        Engine.open(jetson, backend="tensorrt", precision="fp32", cache_dir=jetson / "cache")
        checks.verdict(False, "--precision fp32 must not run the FP16 engine")
    except Exception as e:  # noqa: BLE001
        checks.verdict("no fp32 TensorRT engine" in str(e) or "none of the" in str(e), f"--precision fp32 refused: {e}")


def _copy_without_engines(bundle: Path, out: Path, drop_graph: str = "") -> Path:
    """A copy of the bundle with no engines (and without one graph, if asked)."""
    import json

    from runtime.bundle import write_manifest

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(bundle, out, ignore=shutil.ignore_patterns("engines", "cache"))
    manifest = json.loads((out / "manifest.json").read_text())
    sidecars = {e["sidecar"] for e in manifest.pop("engines", {}).values()}
    manifest["extra_files"] = [f for f in manifest.get("extra_files", []) if f not in sidecars]
    if drop_graph:
        (out / manifest["graphs"].pop(drop_graph)["file"]).unlink()
    write_manifest(out, manifest)
    return out


def _engine_key(backend) -> str:
    return getattr(backend, "meta", None).key if getattr(backend, "meta", None) else type(backend).__name__


# ----------------------------------------------------------------------------------- selection
def selection(checks: Checks, bundle: Path) -> None:
    from runtime.backends.tensorrt import _versions, installed_tensorrt
    from runtime.bundle import Bundle
    from runtime.trt_sidecar import select_engine

    opened = Bundle.open(bundle)
    versions = _versions(installed_tensorrt())
    for graph, precision in (("image", "fp32"), ("image_fp16", "fp16"), ("image_int8", "int8"), ("text", "fp32")):
        choice = select_engine(opened, graph, versions=versions)
        checks.verdict(choice.meta.precision == precision, f"{graph} -> {choice.engine.name} ({choice.meta.precision})")


# ----------------------------------------------------------------------------------- parity
def parity(checks: Checks, bundle: Path, frames) -> None:
    from runtime import Engine

    caption = "a bedroom"
    reference = {}
    for precision in set(REFERENCE_PRECISION.values()):
        cpu = Engine.open(bundle, backend="ort-cpu", precision=precision, cache_dir=bundle / "cache")
        reference[precision] = [cpu.predict(f, caption=caption) for f in frames]
    for backend, precisions in GPU_BACKENDS.items():
        for precision in precisions:
            try:
                engine = Engine.open(bundle, backend=backend, precision=precision, cache_dir=bundle / "cache")
            except Exception as e:  # noqa: BLE001
                checks.verdict(False, f"{backend} {precision}: cannot open: {e}")
                continue
            ref = reference[REFERENCE_PRECISION[precision]]
            errors = [float(np.median(np.abs(engine.predict(f, caption=caption) - r) / np.abs(r)))
                      for f, r in zip(frames, ref)]
            session = getattr(engine.image, "session", None)
            got = f", session providers {session.get_providers()}" if session is not None else ""
            worst = max(errors)
            checks.verdict(worst <= TOLERANCE[precision],
                           f"{backend} {precision}: median rel. error {worst:.2e} (tolerance {TOLERANCE[precision]:.0e}, "
                           f"vs ort-cpu {REFERENCE_PRECISION[precision]}){got}")
            engine.close()


# ----------------------------------------------------------------------------------- batches
def batches(checks: Checks, bundle: Path, frames) -> None:
    from runtime import Engine
    from runtime.backends.cuda import import_cudart

    cudart = import_cudart()
    free_before = cudart.cudaMemGetInfo()[1]
    # Separate, empty caption caches: each engine must run its own text graph.
    cpu = Engine.open(bundle, backend="ort-cpu", cache_dir=tempfile.mkdtemp(prefix="cpu-", dir=bundle.parent))
    gpu = Engine.open(bundle, backend="tensorrt", cache_dir=tempfile.mkdtemp(prefix="gpu-", dir=bundle.parent))
    limit = gpu.image.limits.max
    checks.info(f"image engine profile batch {gpu.image.limits.min}..{limit} (read from the engine)")
    for size in (1, 3, limit, limit + 1):
        batch = [frames[i % len(frames)] for i in range(size)]
        got = gpu.predict_batch(batch, ["a bedroom"] * size)
        want = cpu.predict_batch(batch, ["a bedroom"] * size)
        worst = max(float(np.median(np.abs(g - w) / np.abs(w))) for g, w in zip(got, want))
        chunks = -(-size // limit)
        checks.verdict(len(got) == size and worst <= TOLERANCE["fp32"],
                       f"batch {size}: {chunks} chunk(s), median rel. error {worst:.2e}")
    gpu_emb, cpu_emb = gpu.embed(NEW_CAPTIONS), cpu.embed(NEW_CAPTIONS)
    rel = float(np.max(np.abs(gpu_emb - cpu_emb)) / np.max(np.abs(cpu_emb)))
    checks.verdict(gpu_emb.shape == cpu_emb.shape and rel <= 1e-3,
                   f"{len(NEW_CAPTIONS)} new captions through the text engine (profile max "
                   f"{gpu.text._graph.limits.max}): max abs. error / max |emb| {rel:.1e}")
    gpu.close()
    del gpu
    free_after = cudart.cudaMemGetInfo()[1]
    # Sanity bound: TensorRT and CUDA keep a little global state (handles, kernel caches) after close.
    checks.verdict(free_after >= free_before - (256 << 20),
                   f"device memory free before open {free_before >> 20} MiB, after close {free_after >> 20} MiB")


# ----------------------------------------------------------------------------------- ORT TensorRT cache
def ort_trt_cache(checks: Checks, bundle: Path, frames, work: Path) -> None:
    """A bundle without engines/: the provider's cache folder is created, and growing batches inside
    the profile reuse the one engine built (no rebuild)."""
    import onnxruntime as ort

    from runtime import Engine

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        checks.info("onnxruntime-gpu has no TensorRT provider here: nothing to check")
        return
    fresh = _copy_without_engines(bundle, work / "ort-trt")
    engine = Engine.open(fresh, backend="ort-trt", cache_dir=fresh / "cache")
    cache = fresh / "engines" / "ort-trt-cache"
    counts = []
    for size in (1, 3, 8):
        engine.predict_batch([frames[i % len(frames)] for i in range(size)], ["a bedroom"] * size)
        counts.append(len(list(cache.iterdir())))  # a rebuild would add an engine (and profile) file
    checks.verdict(cache.is_dir() and counts[0] >= 1 and len(set(counts)) == 1,
                   f"{cache} created; files in it after batches 1, 3, 8: {counts}")


# ----------------------------------------------------------------------------------- fallback
def fallback(checks: Checks, bundle: Path, work: Path) -> None:
    """auto on a bundle whose engines target another GPU, and keyframe mode without engines for its halves."""
    from runtime import Engine
    from runtime.errors import Tr2mRuntimeWarning
    from runtime.keyframe import KeyframePredictor

    foreign = _copy_without_engines(bundle, work / "foreign")
    _foreign_engines(checks, foreign)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = Engine.open(foreign, backend="auto", cache_dir=foreign / "cache")
    lines = [str(w.message) for w in caught if issubclass(w.category, Tr2mRuntimeWarning)]
    for line in lines:
        checks.info(f"warning: {line}")
    checks.verdict(engine.backend_name != "tensorrt" and any(line.startswith("not using tensorrt") for line in lines),
                   f"auto with foreign engines runs {engine.backend_name}")
    engine.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keyframes = KeyframePredictor(bundle, backend="auto", cache_dir=bundle / "cache")
    lines = [str(w.message) for w in caught if issubclass(w.category, Tr2mRuntimeWarning)]
    checks.verdict(keyframes.backend_name != "tensorrt",
                   f"keyframe mode without relative/scale_shift engines runs {keyframes.backend_name} "
                   f"({lines[0] if lines else 'no warning'})")


def _foreign_engines(checks: Checks, bundle: Path) -> None:
    """RTX engines for an SM that is not this GPU (ahead of time), else TensorRT engines relabelled."""
    from export.trt import build_bundle_engines
    from runtime.trt_sidecar import current_gpu_cc

    here = current_gpu_cc()
    try:
        import tensorrt_rtx  # noqa: F401

        target = "sm89" if here != "sm89" else "sm86"
        build_bundle_engines(bundle, graphs=("image", "text"), flavour="rtx", target=target, echo=checks.info)
        checks.info(f"foreign engines: TensorRT for RTX, {target} (this GPU: {here})")
    except ImportError:
        build_bundle_engines(bundle, graphs=("image", "text"), echo=checks.info)
        _relabel(bundle, "sm89" if here != "sm89" else "sm86")
        checks.info("foreign engines: this TensorRT's engines with their sidecars marked for another GPU")


def _relabel(bundle: Path, target: str) -> None:
    from dataclasses import replace

    from export.trt import EngineResult, record_engines
    from runtime.bundle import Bundle
    from runtime.trt_sidecar import read_sidecar, write_sidecar

    results = []
    for entry in Bundle.open(bundle).manifest["engines"].values():
        sidecar = bundle / entry["sidecar"]
        meta = replace(read_sidecar(sidecar), target=target)
        write_sidecar(sidecar, meta)
        results.append(EngineResult(bundle / entry["file"], sidecar, sidecar.with_suffix(".log"), meta))
    record_engines(bundle, results)


# ----------------------------------------------------------------------------------- main
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the bundles and engines (default: a temporary folder, removed at the end).")
@click.option("--no-pytest", is_flag=True, help="Skip the final `pytest -m gpu`.")
def main(work, no_pytest) -> None:
    """Check the TensorRT and ONNX Runtime GPU paths on this machine; exit 1 if any check fails."""
    from tests.conftest import SHARED_DATA

    import cv2

    if not SHARED_DATA.is_dir():
        raise click.UsageError(f"real frames not found at {SHARED_DATA}: set TR2M_SHARED_DATA to the shared data folder")
    checks = Checks()
    temporary = work is None
    work = Path(tempfile.mkdtemp(prefix="tr2m-gpu-check-")) if temporary else work
    work.mkdir(parents=True, exist_ok=True)
    frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
              for p in (SHARED_DATA / "metric3d_nyu/rgb/rgb_00000.jpg", SHARED_DATA / "metric3d_kitti/rgb/0000000005.png")]
    try:
        checks.guard("machine", machine)
        bundle = checks.guard("tiny bundle", make_bundle, work)
        if bundle is not None:
            checks.guard("engines (FP32, FP16, INT8) for this GPU", build_engines, bundle)
            checks.guard("FP16 from the FP32 graph (TensorRT 10 weak typing, Jetson)", weak_fp16, bundle, work)
            checks.guard("engine each precision selects", selection, bundle)
            checks.guard("every GPU backend and precision vs ort-cpu on real frames", parity, bundle, frames)
            checks.guard("batches 1, 3, max, max+1 and ten new captions; memory after close", batches, bundle, frames)
            checks.guard("ort-trt: cache folder made, no rebuild as the batch grows", ort_trt_cache, bundle, frames,
                         work)
            checks.guard("auto with foreign engines; keyframe mode without engines for its halves", fallback,
                         bundle, work)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    if not no_pytest:
        checks.step("pytest -m gpu")
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"], cwd=REPO)
        checks.verdict(code == 0, f"pytest -m gpu exited {code}")
    click.echo(f"\n{'ALL CHECKS PASSED' if not checks.failed else f'{len(checks.failed)} CHECK(S) FAILED'}")
    for text in checks.failed:
        click.echo(f"  FAIL {text}")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
