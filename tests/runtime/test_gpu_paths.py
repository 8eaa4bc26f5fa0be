"""The GPU paths' logic, run for real on a CPU-only machine: engines built ahead of time with
TensorRT for RTX (sm86), their sidecars, the real cuda-python (which cannot start CUDA here) and
the real CPU onnxruntime. What only a GPU can show is in scripts/gpu_check.py and `pytest -m gpu`."""
from __future__ import annotations

import configparser
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from runtime import Engine
from runtime.backends import BACKENDS, backend_candidates, pick_backend
from runtime.backends.base import BackendUnavailable
from runtime.backends.batching import DEFAULT_MAX_BATCH, BatchLimits, chunk_bounds, run_in_chunks
from runtime.backends.cuda import cuda_problem, native_handle
from runtime.backends.ort import OrtCpu, OrtCuda, OrtTensorRT, profile_options, trt_cache_dir
from runtime.backends.tensorrt import _NUMPY_DTYPES, TensorRTBackend, installed_tensorrt, numpy_dtype
from runtime.bundle import Bundle
from runtime.engine import _graph_for
from runtime.errors import BundleError, Tr2mRuntimeWarning
from runtime.tokenizer import ClipTokenizer
from runtime.trt_sidecar import EngineError, load_engine_bytes, read_sidecar, select_engine, write_sidecar

TARGET = "sm86"
CAPTIONS = ["an office", "a street at night", "a kitchen", "a forest path", "a parking garage", "a bedroom",
            "a classroom", "a beach", "a tunnel", "a library", "a staircase"]


@pytest.fixture(scope="module")
def rtx():
    return pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX builds engines without a GPU; install tr2m[rtx]")


@pytest.fixture(scope="module")
def trt_bundle(tiny_bundle, tmp_path_factory, rtx):
    """The tiny bundle with sm86 RTX engines for image (fp32), image_fp16 and text, batch 1..4 (the
    default build: no engines for the keyframe halves)."""
    from export.trt import BatchRange, build_bundle_engines

    out = tmp_path_factory.mktemp("gpu_paths") / "bundle"
    shutil.copytree(tiny_bundle.bundle, out)
    quiet = lambda message: None  # noqa: E731
    build_bundle_engines(out, graphs=("image", "text"), precision="fp32", flavour="rtx", target=TARGET,
                         batch=BatchRange(1, 2, 4), echo=quiet)
    build_bundle_engines(out, graphs=("image",), precision="fp16", flavour="rtx", target=TARGET,
                         batch=BatchRange(1, 2, 4), echo=quiet)
    return out


def _engines(bundle_dir):
    return {(e["graph"], e["precision"]): e for e in Bundle.open(bundle_dir).manifest["engines"].values()}


# ----------------------------------------------------------------- item 2: graph AND precision
def test_each_precision_selects_its_own_engine(trt_bundle, rtx):
    bundle, here = Bundle.open(trt_bundle), {"rtx": rtx.__version__}
    engines = _engines(trt_bundle)
    for graph, key in (("image", ("image", "fp32")), ("image_fp16", ("image_fp16", "fp16")), ("text", ("text", "fp32"))):
        choice = select_engine(bundle, graph, versions=here, gpu_cc=TARGET)
        assert choice.engine == trt_bundle / engines[key]["file"] and choice.flavour == "rtx"
        assert (choice.meta.graph, choice.meta.precision) == key


def _weak_fp16_record(bundle_dir, rtx_meta):
    """The record TensorRT 10 writes for an FP16 engine built from the FP32 graph with the weak FP16
    flag (export.trt.choose_graph -> graph "image", precision "fp16"); its bytes are an RTX engine,
    which is all selection (sidecar-level) looks at."""
    from dataclasses import replace

    from export.trt import EngineResult, record_engines

    folder = bundle_dir / "engines"
    key = rtx_meta.key.replace("image_fp16.", "image.").replace("rtx-", "tensorrt10-")
    shutil.copy(folder / rtx_meta.engine, folder / f"{key}.engine")
    meta = replace(rtx_meta, graph="image", engine=f"{key}.engine", flavour="tensorrt10", trt_version="10.3.0",
                   target="sm87", key=key, typing="weak")
    sidecar = write_sidecar(folder / f"{key}.json", meta)
    record_engines(bundle_dir, [EngineResult(folder / meta.engine, sidecar, folder / f"{key}.log", meta)])


def test_a_weak_fp16_engine_serves_fp16_and_never_fp32(trt_bundle, tmp_path, rtx):
    """TensorRT 10 on Jetson: the FP16 engine is recorded under graph `image`. --precision fp16 must
    reach it (even with no image_fp16.onnx), --precision fp32 must not run it."""
    from export.trt.bundle_engines import choose_graph
    from export.trt.flavours import FLAVOURS

    bundle_dir = tmp_path / "jetson"
    shutil.copytree(trt_bundle, bundle_dir)
    fp16_meta = read_sidecar(trt_bundle / _engines(trt_bundle)[("image_fp16", "fp16")]["sidecar"])
    _weak_fp16_record(bundle_dir, fp16_meta)
    bundle = Bundle.open(bundle_dir)
    assert choose_graph(bundle, "image", "fp16", FLAVOURS["tensorrt10"]).graph == "image_fp16"
    jetson = {"tensorrt10": "10.3.0"}
    choice = select_engine(bundle, "image_fp16", versions=jetson, gpu_cc="sm87")
    assert (choice.meta.graph, choice.meta.precision, choice.flavour) == ("image", "fp16", "tensorrt10")
    with pytest.raises(EngineError, match=r"none of the 1 image fp32 engines fits .*rtx-"):  # not the weak FP16 one
        select_engine(bundle, "image", versions=jetson, gpu_cc="sm87")
    # Without image_fp16.onnx the FP16 route stays open for TensorRT, and closed (clearly) for ORT.
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    del manifest["graphs"]["image_fp16"]
    stripped = Bundle(bundle_dir, manifest)
    assert _graph_for(stripped, "fp16", TensorRTBackend) == "image_fp16"
    with pytest.raises(BundleError, match="no fp16 image graph.*--half"):
        _graph_for(stripped, "fp16", OrtCpu)
    assert choose_graph(stripped, "image", "fp16", FLAVOURS["tensorrt10"]).graph == "image"


# ----------------------------------------------------------------- item 1: auto trusts what runs
def test_engines_for_another_gpu_flavour_or_graph_are_refused_with_the_reason(trt_bundle, rtx):
    bundle = Bundle.open(trt_bundle)
    with pytest.raises(EngineError, match=r"built for sm86 with TensorRT for RTX .*this GPU is sm90"):
        select_engine(bundle, "image", versions={"rtx": rtx.__version__}, gpu_cc="sm90")
    with pytest.raises(EngineError, match=r"TensorRT for RTX is not installed here \(TensorRT 10\.3\.0\)"):
        select_engine(bundle, "image", versions={"tensorrt10": "10.3.0"}, gpu_cc="sm90")
    for half in ("relative", "scale_shift"):  # keyframe mode's graphs: the default build has none
        with pytest.raises(EngineError, match=f"no fp32 TensorRT engine for the {half} graph"):
            select_engine(bundle, half, versions={"rtx": rtx.__version__}, gpu_cc=TARGET)


def test_rtx_engines_stay_usable_when_tensorrt_is_installed_too(trt_bundle, rtx):
    bundle = Bundle.open(trt_bundle)
    both = {"tensorrt10": "10.3.0", "rtx": rtx.__version__}  # tensorrt comes first, as it is imported first
    assert select_engine(bundle, "image", versions=both, gpu_cc=TARGET).flavour == "rtx"
    assert installed_tensorrt()["rtx"] is rtx


def test_auto_falls_back_with_one_line_when_cuda_cannot_start(trt_bundle, real_frames, tmp_path):
    pytest.importorskip("cuda.bindings", reason="needs cuda-python")
    if cuda_problem() is None:
        pytest.skip("CUDA starts here: the fallback is exercised by scripts/gpu_check.py")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = Engine.open(trt_bundle, backend="auto", cache_dir=tmp_path / "cache")
    lines = [str(w.message) for w in caught if issubclass(w.category, Tr2mRuntimeWarning)]
    assert engine.backend_name == "ort-cpu"
    assert len(lines) == 1 and lines[0].startswith("not using tensorrt: CUDA cannot start: cudaError"), lines
    assert "\n" not in lines[0] and lines[0].endswith("trying the next backend")
    assert engine.predict(real_frames[0], caption="an office").shape == real_frames[0].shape[:2]
    with pytest.raises(BundleError, match=r"backend 'tensorrt' cannot run this bundle here: CUDA cannot start"):
        Engine.open(trt_bundle, backend="tensorrt", cache_dir=tmp_path / "cache")


def test_keyframe_mode_asks_for_its_own_graphs(trt_bundle):
    """auto for keyframe mode checks relative + scale_shift (+ text); ort-cpu needs only the ONNX."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Tr2mRuntimeWarning)
        assert pick_backend("auto", Bundle.open(trt_bundle), ("relative", "scale_shift", "text")) is OrtCpu
    assert TensorRTBackend.refusal(Bundle.open(trt_bundle), ("relative",)) is not None


def test_no_backend_left_is_one_clear_error(tiny_bundle):
    manifest = json.loads((tiny_bundle.bundle / "manifest.json").read_text())
    bundle = Bundle(tiny_bundle.bundle, manifest)
    with pytest.raises(BundleError, match=r"no backend can run the image_int8 graph.*ort-cpu: the bundle has no image_int8"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Tr2mRuntimeWarning)
            list(backend_candidates("auto", bundle, ["image_int8"]))


# ----------------------------------------------------------------- item 3: cuda-python, said exactly
def test_cuda_that_cannot_start_is_explained():
    pytest.importorskip("cuda.bindings", reason="needs cuda-python")
    problem = cuda_problem()
    if problem is None:
        pytest.skip("CUDA starts here")
    assert problem.startswith("CUDA cannot start: cudaError") and "\n" not in problem
    assert "no NVIDIA driver is loaded" in problem or "driver supports CUDA" in problem


def test_streams_reach_tensorrt_as_their_address():
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="needs cuda-python")
    assert native_handle(runtime.cudaStream_t(0x7F00)) == 0x7F00  # execute_async_v3 takes an int


def test_host_buffers_get_the_engine_tensor_types(rtx):
    assert numpy_dtype(rtx, rtx.DataType.FLOAT) == np.float32 and numpy_dtype(rtx, rtx.DataType.INT64) == np.int64
    for name, dtype in _NUMPY_DTYPES.items():  # the table used where trt.nptype is missing agrees with it
        assert np.dtype(rtx.nptype(getattr(rtx.DataType, name))) == dtype, name


def test_missing_cuda_python_names_the_extra(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # import -> ImportError
    cuda_problem.cache_clear()
    try:
        assert "pip install 'tr2m[tensorrt-cu13]'" in cuda_problem() and "'tr2m[tensorrt-cu12]'" in cuda_problem()
    finally:
        cuda_problem.cache_clear()


def test_every_tensorrt_extra_pins_cuda_python_to_its_cuda_major():
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    extras = {k: [line.strip() for line in v.splitlines() if line.strip()]
              for k, v in config["options.extras_require"].items()}
    for extra, major in (("tensorrt-cu12", 12), ("tensorrt-cu13", 13), ("tensorrt", 13), ("jetson", 12), ("rtx", 13)):
        assert f"cuda-python>={major}{'.3' if major == 12 else ''},<{major + 1}" in extras[extra], extra
    assert not any("cuda" in line for line in extras["test"] + extras["cpu"])  # CI installs no CUDA package


# ----------------------------------------------------------------- item 4: batches the profile accepts
def test_the_profile_is_read_from_the_sidecar_and_batches_are_chunked(trt_bundle):
    import onnxruntime as ort

    text = _engines(trt_bundle)[("text", "fp32")]
    limits = BatchLimits.from_profile(read_sidecar(trt_bundle / text["sidecar"]).profile)
    assert limits == BatchLimits(1, 4)
    assert list(chunk_bounds(11, limits)) == [(0, 4), (4, 8), (8, 11)]
    session = ort.InferenceSession(str(trt_bundle / "text.onnx"), providers=["CPUExecutionProvider"])
    seen = []

    def run(feeds):
        seen.append(len(feeds["token_ids"]))
        return {"text_emb": session.run(["text_emb"], dict(feeds))[0]}

    ids = ClipTokenizer.from_file(trt_bundle / "tokenizer.json")(CAPTIONS)  # more new captions than the max
    whole = session.run(["text_emb"], {"token_ids": ids})[0]
    chunked = run_in_chunks(run, {"token_ids": ids}, limits)["text_emb"]
    assert seen == [4, 4, 3] and np.array_equal(chunked, whole)
    seen.clear()  # a profile whose minimum is 2: the last row is padded, and the padding dropped
    padded = run_in_chunks(run, {"token_ids": ids[:5]}, BatchLimits(2, 4))["text_emb"]
    assert seen == [4, 2] and np.array_equal(padded, whole[:5])


# ----------------------------------------------------------------- item 5: the providers a session got
def test_an_ort_session_without_its_provider_is_refused(tiny_bundle, tmp_path):
    """The CPU onnxruntime does what onnxruntime-gpu does without cuDNN or TensorRT: it drops the
    provider and runs on the CPU. The backend checks session.get_providers() and says so."""
    shutil.copytree(tiny_bundle.bundle, tmp_path / "bundle")  # ort-trt adds its cache folder
    bundle = Bundle.open(tmp_path / "bundle")
    for cls, provider in ((OrtCuda, "CUDAExecutionProvider"), (OrtTensorRT, "TensorrtExecutionProvider")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ORT's own note that the provider is not available
            with pytest.raises(BackendUnavailable, match=f"did not give the text graph the {provider} "
                                                         r"\(the session got CPUExecutionProvider\)"):
                cls.load(bundle, "text")
    assert OrtCpu.load(bundle, "text").session.get_providers() == ["CPUExecutionProvider"]


# ----------------------------------------------------------------- item 6: ORT TensorRT cache and profile
def test_ort_trt_cache_folder_is_created_and_profile_shapes_are_passed(tiny_bundle, tmp_path):
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.bundle, bundle_dir)
    assert not (bundle_dir / "engines").exists()
    bundle = Bundle.open(bundle_dir)
    (provider, options), *rest = OrtTensorRT.provider_list(bundle, "image")
    assert provider == "TensorrtExecutionProvider" and rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert Path(options["trt_engine_cache_path"]) == bundle_dir / "engines" / "ort-trt-cache"
    assert (bundle_dir / "engines" / "ort-trt-cache").is_dir()
    h, w = bundle.preprocessing.height, bundle.preprocessing.width
    assert options["trt_profile_min_shapes"] == f"image:1x3x{h}x{w},text_emb:1x{bundle.text_dim}"
    assert options["trt_profile_max_shapes"] == f"image:{DEFAULT_MAX_BATCH}x3x{h}x{w},text_emb:{DEFAULT_MAX_BATCH}x{bundle.text_dim}"
    assert profile_options({"token_ids": ("batch", 77)}, 8, 2)["trt_profile_opt_shapes"] == "token_ids:2x77"
    assert OrtTensorRT.limits == BatchLimits(1, DEFAULT_MAX_BATCH)


def test_ort_trt_cache_falls_back_to_the_user_cache_folder(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.bundle, bundle_dir)
    (bundle_dir / "engines").write_bytes(b"")  # the bundle's engines folder cannot be made
    folder = trt_cache_dir(Bundle.open(bundle_dir), "image")
    assert folder.is_dir() and str(folder).startswith(str(tmp_path / "user-cache"))
    if os.geteuid() != 0:  # root writes into read-only folders
        readonly = tmp_path / "readonly"
        shutil.copytree(tiny_bundle.bundle, readonly)
        readonly.chmod(0o555)
        try:
            assert str(trt_cache_dir(Bundle.open(readonly), "text")).startswith(str(tmp_path / "user-cache"))
        finally:
            readonly.chmod(0o755)


# ----------------------------------------------------------------- item 8: one checked read
def test_the_engine_bytes_are_checked_on_the_read_that_returns_them(trt_bundle, tmp_path, rtx):
    bundle_dir = tmp_path / "tampered"
    shutil.copytree(trt_bundle, bundle_dir)
    bundle = Bundle.open(bundle_dir)
    choice = select_engine(bundle, "image", versions={"rtx": rtx.__version__}, gpu_cc=TARGET)
    good = choice.engine.read_bytes()
    meta, data = load_engine_bytes(choice.sidecar, gpu_cc=TARGET, trt_version=rtx.__version__, flavour="rtx")
    assert data == good and meta == choice.meta
    choice.engine.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # swapped after selection
    with pytest.raises(EngineError, match="does not match its sidecar checksum"):
        load_engine_bytes(choice.sidecar, gpu_cc=TARGET, trt_version=rtx.__version__, flavour="rtx")


def test_every_backend_can_be_closed(tiny_bundle):
    backend = OrtCpu.load(Bundle.open(tiny_bundle.bundle), "text")
    backend.close()
    assert set(BACKENDS) == {"tensorrt", "ort-trt", "ort-cuda", "openvino", "ort-cpu"}


# ----------------------------------------------------------------- GPU only (scripts/gpu_check.py runs these last)
@pytest.fixture(scope="module")
def gpu_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with FP32 image + text engines for this GPU (default profile, batch 1..8)."""
    from export.trt import build_bundle_engines
    from runtime.trt_sidecar import current_gpu_cc

    if current_gpu_cc() is None or cuda_problem() is not None:
        pytest.skip(f"needs a CUDA GPU ({cuda_problem() or 'none found through the CUDA driver'})")
    if not installed_tensorrt():
        pytest.skip("needs TensorRT or TensorRT for RTX")
    out = tmp_path_factory.mktemp("gpu") / "bundle"
    shutil.copytree(tiny_bundle.bundle, out)
    build_bundle_engines(out, graphs=("image", "text"), echo=lambda m: None)
    return out


@pytest.mark.gpu
def test_native_tensorrt_chunks_batches_past_the_profile(gpu_bundle, real_frames, tmp_path):
    """Tolerance: median relative depth error 1e-3 vs ort-cpu (TF32 in FP32 engines)."""
    cpu = Engine.open(gpu_bundle, backend="ort-cpu", cache_dir=tmp_path / "cpu")
    gpu = Engine.open(gpu_bundle, backend="tensorrt", cache_dir=tmp_path / "gpu")
    assert gpu.image.limits == BatchLimits(1, DEFAULT_MAX_BATCH)
    frames = [real_frames[i % len(real_frames)] for i in range(DEFAULT_MAX_BATCH + 1)]
    for got, want in zip(gpu.predict_batch(frames, ["an office"] * len(frames)),
                         cpu.predict_batch(frames, ["an office"] * len(frames))):
        assert np.median(np.abs(got - want) / want) <= 1e-3
    captions = CAPTIONS[: DEFAULT_MAX_BATCH + 2]  # more new captions than the text engine's profile
    np.testing.assert_allclose(gpu.embed(captions), cpu.embed(captions), rtol=1e-3, atol=1e-4)
    gpu.close()
    gpu.close()  # idempotent


@pytest.mark.gpu
def test_ort_gpu_sessions_really_get_their_providers(gpu_bundle, tmp_path):
    import onnxruntime as ort

    for backend, provider in (("ort-cuda", "CUDAExecutionProvider"), ("ort-trt", "TensorrtExecutionProvider")):
        if provider not in ort.get_available_providers():
            continue
        try:
            engine = Engine.open(gpu_bundle, backend=backend, cache_dir=tmp_path / backend)
        except BackendUnavailable as e:  # listed but not loadable: the refusal must name the provider
            assert provider in str(e)
            continue
        assert engine.image.session.get_providers()[0] == provider
