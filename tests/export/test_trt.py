"""TensorRT engine builds. CI has TensorRT for RTX and no GPU: every graph kind (FP32, FP16,
Q/DQ INT8) of the tiny model is built ahead of time for sm86 over a batch profile, and the kernel
precisions of the built engines are asserted. Builds and runs that need a GPU are marked `gpu`."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from export.trt import (
    BatchRange, EngineBuildError, EngineError, OnnxParseError, PrecisionError, TargetError, TensorRTNotInstalled,
    build_bundle_engines, build_engine, check_engine, check_precision, parse_build_log, parse_inspector_json,
    read_sidecar, resolve_flavour,
)
from export.trt.build import _typing
from export.trt.flavours import FLAVOURS
from runtime.bundle import Bundle
from runtime.trt_sidecar import current_gpu_cc, load_engine_bytes, normalize_cc, select_engine

# Either flavour: CPU machines build ahead of time with TensorRT for RTX; GPU machines that have only
# TensorRT 10/11 still run the `gpu` tests below.
if not any(importlib.util.find_spec(m) for m in ("tensorrt_rtx", "tensorrt")):
    pytest.skip("needs TensorRT for RTX (tr2m[rtx]) or TensorRT (tr2m[tensorrt])", allow_module_level=True)

TARGET = "sm86"
BATCH = BatchRange(1, 2, 4)


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle, tmp_path_factory):
    """A private copy of the session's tiny bundle (engines get added to it), plus image_int8."""
    from calib import CalibrationConfig, build_calibration_set, quantize_bundle
    from tests.conftest import SHARED_DATA

    out = tmp_path_factory.mktemp("trt") / "bundle"
    shutil.copytree(tiny_bundle.bundle, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a deliberately small calibration set
        calib = build_calibration_set(out, [SHARED_DATA / "videos" / "sam2_bedroom.mp4"], captions=["a bedroom"],
                                      config=CalibrationConfig(size=8, every=20))
    quantize_bundle(out, calib)
    return out


@pytest.fixture(scope="module")
def rtx():
    return pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX builds engines without a GPU; install tr2m[rtx]")


@pytest.fixture(scope="module")
def built(bundle_dir, rtx):
    """One engine per graph kind, keyed by graph."""
    bundle = Bundle.open(bundle_dir)
    out = {}
    for graph, precision in (("image", "fp32"), ("image_fp16", "fp16"), ("image_int8", "int8"), ("text", "fp32")):
        out[graph] = build_engine(bundle.graph_path(graph), flavour="rtx", precision=precision, batch=BATCH,
                                  target=TARGET, out_dir=bundle_dir / "engines", graph=graph)
    return out


@pytest.mark.parametrize("graph", ["image", "image_fp16", "image_int8", "text"])
def test_every_graph_kind_builds_over_the_batch_profile(built, graph, rtx):
    result = built[graph]
    meta = read_sidecar(result.sidecar_path)
    assert meta == result.meta
    assert result.engine_path.stat().st_size > 0 and result.engine_path.name == f"{meta.key}.engine"
    assert meta.target == TARGET and meta.flavour == "rtx" and meta.trt_version == rtx.__version__
    assert meta.batch == (1, 2, 4) and meta.typing == "strong"
    for name, shapes in meta.profile.items():  # every input is dynamic in the batch, and only there
        assert [s[0] for s in (shapes["min"], shapes["opt"], shapes["max"])] == [1, 2, 4], name
    expected = {"text": {"token_ids"}}.get(graph, {"image", "text_emb"})
    assert set(meta.profile) == expected
    for part in (TARGET, f"rtx-{rtx.__version__}", meta.precision, "b1-2-4"):
        assert part in meta.key
    assert len(meta.engine_sha256) == 64 and len(meta.onnx_sha256) == 64


def test_fp16_engine_runs_mostly_half(built):
    counts = built["image_fp16"].meta.layer_precisions
    assert counts.get("fp16", 0) > 4 * counts.get("fp32", 0), counts


def test_int8_engine_has_int8_kernels(built):
    counts = built["image_int8"].meta.layer_precisions
    assert counts.get("int8", 0) > counts.get("fp32", 0), counts


def test_fp32_engine_is_fp32_and_would_fail_an_fp16_check(built):
    result = built["image"]
    assert set(result.meta.layer_precisions) == {"fp32"}
    report = parse_build_log(result.log_path.read_text().split("\n[VERBOSE] "))
    with pytest.raises(PrecisionError, match="FP16 was asked for, but .* run in FP32"):
        check_precision(report, "fp16")
    with pytest.raises(PrecisionError, match="INT8"):
        check_precision(report, "int8")


def test_bundle_engines_are_recorded_in_the_manifest(bundle_dir, rtx):
    results = build_bundle_engines(bundle_dir, graphs=("image", "text"), precision="fp16", flavour="rtx",
                                   target="sm89", batch=BATCH, echo=lambda m: None)
    assert [r.meta.graph for r in results] == ["image_fp16", "text"]
    assert [r.meta.precision for r in results] == ["fp16", "fp32"]  # the text graph keeps its precision
    bundle = Bundle.open(bundle_dir)  # verifies every checksum, sidecars included
    for result in results:
        entry = bundle.manifest["engines"][result.key]
        assert entry["file"] == f"engines/{result.engine_path.name}" and entry["target"] == "sm89"
        assert entry["sidecar"] in bundle.manifest["files"]
    # The runtime's pick: the engine that fits this GPU and TensorRT, or a refusal saying why.
    here = {"rtx": rtx.__version__}
    assert select_engine(bundle, "image_fp16", versions=here, gpu_cc="sm89").engine == results[0].engine_path
    with pytest.raises(EngineError, match=r"none of the 1 image fp16 engines fits this machine \(sm120, .*this GPU is sm120"):
        select_engine(bundle, "image_fp16", versions=here, gpu_cc="sm120")
    with pytest.raises(EngineError, match="TensorRT for RTX is not installed here .TensorRT 10.3.0"):
        select_engine(bundle, "image_fp16", versions={"tensorrt10": "10.3.0"}, gpu_cc="sm89")
    with pytest.raises(EngineError, match="no fp32 TensorRT engine for the relative graph"):
        select_engine(bundle, "relative", versions=here, gpu_cc="sm89")


def test_strongly_typed_flavours_refuse_fp16_from_an_fp32_graph(bundle_dir, rtx):
    with pytest.raises(EngineBuildError, match="strongly typed.*--half"):
        build_engine(bundle_dir / "image.onnx", flavour="rtx", precision="fp16", target=TARGET, out_dir=bundle_dir / "x")
    with pytest.raises(EngineBuildError, match="Q/DQ"):
        build_engine(bundle_dir / "image.onnx", flavour="rtx", precision="int8", target=TARGET, out_dir=bundle_dir / "x")


def test_typing_follows_the_flavour_registry():
    assert _typing(FLAVOURS["tensorrt10"], "fp32", "fp16", "image.onnx") is False  # weak FP16 flag
    assert _typing(FLAVOURS["tensorrt11"], "fp16", "fp16", "image_fp16.onnx") is True
    with pytest.raises(EngineBuildError, match="TensorRT 11 is strongly typed"):
        _typing(FLAVOURS["tensorrt11"], "fp32", "fp16", "image.onnx")


# ------------------------------------------------------------------------- failures, clearly
def test_missing_tensorrt_names_the_pip_extra(monkeypatch, bundle_dir):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import -> ImportError
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(TensorRTNotInstalled, match=r"tr2m\[tensorrt\].*tr2m\[rtx\]"):
        resolve_flavour("auto")
    with pytest.raises(TensorRTNotInstalled, match=r"pip install 'tr2m\[rtx\]'"):
        resolve_flavour("rtx")
    from export.cli import main

    result = CliRunner().invoke(main, ["trt", "--bundle", str(bundle_dir), "--flavour", "rtx", "--target", TARGET])
    assert result.exit_code == 2
    assert "error: the tensorrt_rtx module is not installed" in result.output
    assert "pip install 'tr2m[rtx]'" in result.output and "Traceback" not in result.output


def _mixed_precision_graph(path):
    """An FP16 conversion mistake: Half * Float, which a strongly typed network rejects."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [-1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [-1, 4])
    weight = onnx.numpy_helper.from_array(np.ones(4, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"], name="bad_mul")], "g", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_parser_errors_are_surfaced(tmp_path, rtx):
    with pytest.raises(OnnxParseError, match=r"node bad_mul \(Mul\):.*same input types.*Half and Float"):
        build_engine(_mixed_precision_graph(tmp_path / "mixed.onnx"), flavour="rtx", precision="fp16", target=TARGET)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx file at all")
    with pytest.raises(OnnxParseError, match="cannot parse garbage.onnx.*Failed to parse the ONNX model"):
        build_engine(garbage, flavour="rtx", target=TARGET)
    garbage.write_bytes(b"this is not a protobuf")  # decodes as an (empty) protobuf message
    with pytest.raises(OnnxParseError, match="without outputs"):
        build_engine(garbage, flavour="rtx", target=TARGET)
    assert not list(tmp_path.glob("engines/*.engine"))


def test_dynamic_axes_besides_batch_are_refused(tmp_path, rtx):
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 3, "h", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3, "h", 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["image"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "dyn.onnx")
    with pytest.raises(EngineBuildError, match="dynamic axis besides the batch"):
        build_engine(tmp_path / "dyn.onnx", flavour="rtx", target=TARGET)


def test_targets_are_checked(rtx):
    assert _target("8.6") == "sm86"
    with pytest.raises(TargetError, match="cannot build for sm70; choose one of: .*sm86"):
        _target("sm70")
    if current_gpu_cc() is None:
        with pytest.raises(TargetError, match="pass --target"):
            _target(None)


def _target(target):
    from export.trt.flavours import resolve_target

    flavour, module = resolve_flavour("rtx")
    return resolve_target(flavour, module, target)


def test_sidecar_mismatch_is_refused_before_deserializing(built, tmp_path, rtx):
    meta = built["image_fp16"].meta
    assert check_engine(built["image_fp16"].sidecar_path, "8.6", rtx.__version__, flavour="rtx") == meta
    with pytest.raises(EngineError, match=r"built for sm86 with TensorRT for RTX .*this GPU is sm89.*--fp16"):
        check_engine(meta, "sm89", rtx.__version__, flavour="rtx")
    with pytest.raises(EngineError, match="exact version"):
        check_engine(meta, (8, 6), "1.6.0.0", flavour="rtx")
    with pytest.raises(EngineError, match=r"this runtime uses TensorRT 10\.3\.0"):
        check_engine(meta, "sm86", "10.3.0", flavour="tensorrt10")
    with pytest.raises(EngineError, match="needs a CUDA GPU"):
        check_engine(meta, None, rtx.__version__)
    # A tampered engine is refused on its checksum; nothing reaches TensorRT.
    folder = tmp_path / "engines"
    folder.mkdir()
    shutil.copy(built["image_fp16"].sidecar_path, folder)
    (folder / meta.engine).write_bytes(built["image_fp16"].engine_path.read_bytes()[:-1])
    with pytest.raises(EngineError, match="checksum"):
        load_engine_bytes(folder / built["image_fp16"].sidecar_path.name, gpu_cc="sm86", trt_version=rtx.__version__)
    got_meta, data = load_engine_bytes(built["image_fp16"].sidecar_path, gpu_cc="sm86", trt_version=rtx.__version__)
    assert got_meta == meta and len(data) == built["image_fp16"].engine_path.stat().st_size


def test_trt_sidecar_imports_neither_torch_nor_tensorrt():
    code = ("import sys, runtime.trt_sidecar as m; m.current_gpu_cc(); "
            "bad = {'torch', 'tensorrt', 'tensorrt_rtx', 'export'} & set(sys.modules); assert not bad, bad")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_sidecar_json_is_validated(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(EngineError, match="not a tr2m engine sidecar"):
        read_sidecar(bad)
    bad.write_text("{")
    with pytest.raises(EngineError, match="not valid JSON"):
        read_sidecar(bad)
    assert normalize_cc("SM_120") == "sm120" and normalize_cc("8.9") == "sm89" and normalize_cc(86) == "sm86"


def test_rtx_ignores_a_timing_cache_with_a_warning(bundle_dir, tmp_path, rtx):
    with pytest.warns(UserWarning, match="no builder timing cache"):
        build_engine(bundle_dir / "text.onnx", flavour="rtx", target=TARGET, timing_cache=tmp_path / "t.cache",
                     out_dir=tmp_path)
    assert not (tmp_path / "t.cache").exists()


# ------------------------------------------------------------------------- report formats
def test_layer_reports_of_every_shape_are_read():
    myelin_rtx = ("Layers:\nName: conv_1, LayerType: correlation, Inputs: [ { Name: x, Dimensions: [-1,3,56,70], "
                  "Datatype: Half, Format: (NHWC) }], Constants: [], Outputs: [ { Name: y, Datatype: Half }], "
                  "TacticName: t, StreamId: 0, Metadata: \nName: sh, LayerType: shape_call, Inputs: [], Constants: [], "
                  "Outputs: [], TacticName: , StreamId: 0, Metadata: ")
    myelin_trt10 = ("Name: mm_myl0_7, LayerType: gemm, Inputs: [ { Name: a, Dimensions: [1,40,1024], "
                    "Format/Datatype: Int8 }], Outputs: [ { Name: b, Dimensions: [1,40,256], Format/Datatype: Half }], "
                    "TacticName: sm80_xmma_gemm, StreamId: 0, Metadata: ")
    classic = ("Engine Layer Information:\nLayer(CaskConvolution): conv2 + relu, Tactic: 0x1, in[Float(1,3,8,8)] -> "
               "out[Float(1,8,8,8)]\nLayer(Reformat): r, Tactic: 0x0, out[Float(1,8,8,8)] -> o2[Half(1,8,8,8)]")
    report = parse_build_log([myelin_rtx, myelin_trt10, classic, "unrelated message"])
    assert [(l.kind, l.precision, l.compute) for l in report.layers] == [
        ("correlation", "fp16", True), ("shape_call", None, False), ("gemm", "int8", True),
        ("CaskConvolution", "fp32", True), ("Reformat", "fp32", False)]
    assert report.compute_counts() == {"fp16": 1, "int8": 1, "fp32": 1}
    inspector = json.dumps({"Layers": [
        {"Name": "c", "LayerType": "CaskConvolution",
         "Inputs": [{"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
        {"Name": "m", "LayerType": "MatrixMultiply", "Inputs": [{"Format/Datatype": "Row major linear FP16 format"}]},
        {"Name": "u", "LayerType": "kgen", "Inputs": [{"Format/Datatype": "Row major linear UInt8 format"}]}]})
    assert parse_inspector_json(inspector).compute_counts() == {"int8": 1, "fp16": 1}


def test_tensorrt_11_and_rtx_inspector_json_is_read():
    """TensorRT 11 split "Format/Datatype" into "DataType" + "Format"; TensorRT for RTX writes
    "Datatype". The format string must not win over the data type."""
    trt11 = json.dumps({"I/O Tensors": [{"Name": "image", "IOMode": "Input", "DataType": "Float"}], "Layers": [
        {"Name": "gemm", "LayerType": "gemm", "Inputs": [{"Name": "a", "DataType": "Half",
                                                          "Format": "Row major linear FP32 format (kLINEAR)"}]},
        {"Name": "conv", "LayerType": "CaskConvolution", "Inputs": [{"Name": "x", "DataType": "Int8"}]},
        {"Name": "mm", "LayerType": "MatrixMultiply", "Inputs": [{"Name": "y", "DataType": "Float"}]}]})
    assert parse_inspector_json(trt11).compute_counts() == {"fp16": 1, "int8": 1, "fp32": 1}
    rtx_style = json.dumps({"Layers": [{"Name": "c", "LayerType": "correlation",
                                        "Inputs": [{"Name": "x", "Datatype": "Half", "Format": "(NHWC) Channel major format"}]}]})
    assert parse_inspector_json(rtx_style).compute_counts() == {"fp16": 1}


def test_unknown_layer_precisions_fail_the_reduced_precision_checks():
    """What IEngineInspector reports for a dynamic-shape engine inspected without a context: layers
    whose formats (hence data types) are unknown. That verifies nothing, so FP16 and INT8 fail."""
    unknown = json.dumps({"Layers": [{"Name": f"l{i}", "LayerType": "gemm", "Inputs": [{"Name": "a", "Dimensions": [-1, 8]}]}
                                     for i in range(3)]})
    report = parse_inspector_json(unknown)
    assert report.compute_counts() == {"other": 3}
    for precision in ("fp16", "int8"):
        with pytest.raises(PrecisionError, match=r"3 compute layers of unknown precision.*execution context"):
            check_precision(report, precision)
    assert check_precision(report, "fp32") == {"other": 3}


# ------------------------------------------------------------------------- GPU only
def _tensorrt_on_gpu():
    if current_gpu_cc() is None:
        pytest.skip("needs a CUDA GPU (none found through the CUDA driver)")
    return pytest.importorskip("tensorrt", reason="needs TensorRT 10/11 (pip install tr2m[tensorrt])")


@pytest.mark.gpu
@pytest.mark.parametrize("graph, precision", [("image", "fp32"), ("image_fp16", "fp16"), ("image", "fp16"),
                                              ("image_int8", "int8")])
def test_tensorrt_builds_on_the_gpu_with_a_timing_cache(bundle_dir, tmp_path, graph, precision):
    trt = _tensorrt_on_gpu()
    flavour, _ = resolve_flavour("tensorrt")
    if graph == "image" and precision == "fp16" and not flavour.weak_typing:
        pytest.skip(f"{flavour.label} has no weak FP16 flag")
    cache = tmp_path / "timing.cache"
    result = build_engine(bundle_dir / f"{graph}.onnx", flavour="tensorrt", precision=precision, batch=BATCH,
                          timing_cache=cache, out_dir=tmp_path)
    assert cache.stat().st_size > 0 and result.meta.trt_version == trt.__version__
    again = build_engine(bundle_dir / f"{graph}.onnx", flavour="tensorrt", precision=precision, batch=BATCH,
                         timing_cache=cache, out_dir=tmp_path / "again")
    assert again.meta.layer_precisions == result.meta.layer_precisions


@pytest.mark.gpu
def test_fp32_engine_matches_onnx_runtime_on_the_gpu(bundle_dir, tmp_path, real_frames):
    """Tolerance: median relative depth error 1e-3 (TensorRT may use TF32 in FP32 engines)."""
    trt = _tensorrt_on_gpu()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA build of torch to hold device buffers")
    import onnxruntime as ort

    from runtime.preprocess import Preprocessor

    bundle = Bundle.open(bundle_dir)
    result = build_engine(bundle_dir / "image.onnx", flavour="tensorrt", batch=BATCH, out_dir=tmp_path)
    _, data = load_engine_bytes(result.sidecar_path, gpu_cc=current_gpu_cc(), trt_version=trt.__version__,
                                flavour=result.meta.flavour)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(data)
    context = engine.create_execution_context()
    feeds = {"image": Preprocessor.for_bundle(bundle)(real_frames[:2]),
             "text_emb": np.random.default_rng(0).standard_normal((2, bundle.text_dim)).astype(np.float32)}
    buffers = {}
    for name, value in feeds.items():
        buffers[name] = torch.from_numpy(value).cuda()
        context.set_input_shape(name, value.shape)
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)), device="cuda")
        context.set_tensor_address(name, buffers[name].data_ptr())
    assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    ref = ort.InferenceSession(str(bundle_dir / "image.onnx"), providers=["CPUExecutionProvider"]).run(["depth"], feeds)[0]
    got = buffers["depth"].cpu().numpy()
    assert np.median(np.abs(got - ref) / np.abs(ref)) <= 1e-3
