"""Checkpoints, bundles and TensorRT engines: refused clearly, nothing unpickled, nothing escaping."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from . import make
from .harness import REPO, Case, Context, Crash, Result, Skip, api_error, worked


def frame_image(ctx: Context) -> Path:
    return make.image(ctx.path("frame.png"), make.frames(1, (30, 40))[0])


def no_code_ran(sentinel: Path, result: Result) -> Result:
    if sentinel.exists():
        raise Crash(f"CODE FROM THE FILE RAN: {sentinel.name} was created while reading it")
    return Result(result.verdict, result.message + " (planted code did not run)")


def depth_folder(ctx: Context) -> Path:
    """A two-image folder dataset for tr2m-eval (rgb/, depth/ in millimetres)."""
    root = ctx.root / "dataset"
    for i, rgb in enumerate(make.frames(2, (56, 70))):
        make.image(ctx.path(f"dataset/rgb/s{i}.png"), rgb)
        make.image(ctx.path(f"dataset/depth/s{i}.png"), np.full((56, 70), 2000 + 100 * i, np.uint16))
    return root


def eval_args(ctx: Context) -> list:
    return ["--dataset", "folder", "--root", depth_folder(ctx), "--depth-scale", 1000, "--protocol", "nyu",
            "--default-caption", "a room"]


TRAIN = ["--preset", "tiny", "--random-init", "--synthetic", 2, "--epochs", 1, "--max-steps", 1, "--batch-size", 1]


# ------------------------------------------------------------------------------ checkpoints
def _load_head(edit, pattern: str):
    def case(ctx: Context) -> Result:
        import tr2m

        path = make.checkpoint(ctx.path("head.pth"), edit)
        return api_error(lambda: tr2m.load_head(make.tiny_head(), path), (tr2m.CheckpointError,), pattern)
    return case


def _wrong_shape(state):
    import torch

    state["align_mlp.a_fc.weight"] = torch.zeros(3, 3)


def _missing_key(state):
    del state["layer1_rn.weight"]


def _extra_key(state):
    import torch

    state["contrast.queue"] = torch.zeros(8)


def _pickle_api(torch_zip: bool):
    def case(ctx: Context) -> Result:
        import tr2m

        sentinel = ctx.root / "PLANTED_CODE_RAN"
        path = make.evil_pickle(ctx.path("evil.pth"), sentinel, torch_zip=torch_zip)
        return no_code_ran(sentinel, api_error(lambda: tr2m.read_checkpoint(path), (tr2m.CheckpointError,),
                                               r"refuse to unpickle"))
    return case


def pickle_export(ctx: Context) -> Result:
    sentinel = ctx.root / "PLANTED_CODE_RAN"
    path = make.evil_pickle(ctx.path("evil.pth"), sentinel, torch_zip=True)
    seen = ctx.export("onnx", "--ckpt", path, "--preset", "tiny", "--random-init", "--out", ctx.root / "bundle")
    result = no_code_ran(sentinel, seen.error(r"refuse to unpickle"))
    if (ctx.root / "bundle").exists():
        raise Crash("a bundle was written from a refused checkpoint")
    return result


def wrong_shape_export(ctx: Context) -> Result:
    path = make.checkpoint(ctx.path("head.pth"), _wrong_shape)
    result = ctx.export("onnx", "--ckpt", path, "--preset", "tiny", "--random-init", "--out",
                        ctx.root / "bundle").error(r"wrong shape.*align_mlp")
    if (ctx.root / "bundle").exists():
        raise Crash("a bundle was written from a refused checkpoint")
    return result


def pickle_eval(ctx: Context) -> Result:
    sentinel = ctx.root / "PLANTED_CODE_RAN"
    path = make.evil_pickle(ctx.path("evil.pth"), sentinel, torch_zip=False)
    seen = ctx.evaluate(*eval_args(ctx), "--preset", "tiny", "--random-init", "--checkpoint", path)
    return no_code_ran(sentinel, seen.error(r"refuse to unpickle"))


def pickle_train(ctx: Context) -> Result:
    sentinel = ctx.root / "PLANTED_CODE_RAN"
    path = make.evil_pickle(ctx.path("evil.pth"), sentinel, torch_zip=True)
    seen = ctx.train(*TRAIN, "--checkpoint", path, "--out", ctx.root / "run")
    return no_code_ran(sentinel, seen.error(r"refuse to unpickle"))


def missing_key_train(ctx: Context) -> Result:
    path = make.checkpoint(ctx.path("head.pth"), _missing_key)
    return ctx.train(*TRAIN, "--checkpoint", path, "--out", ctx.root / "run").error(r"missing: layer1_rn")


def truncated_checkpoint(ctx: Context) -> Result:
    import tr2m

    full = make.checkpoint(ctx.path("full.pth"), lambda s: None)
    path = make.cut(full, ctx.path("cut.pth"), 0.5)
    return api_error(lambda: tr2m.read_checkpoint(path), (tr2m.CheckpointError,), r"corrupt|truncated")


def garbage_safetensors(ctx: Context) -> Result:
    import tr2m

    path = ctx.path("head.safetensors")
    path.write_bytes(b"\xff" * 8 + b"{not a header")
    return api_error(lambda: tr2m.read_checkpoint(path), (tr2m.CheckpointError,), r"safetensors")


def non_tensor_entries(ctx: Context) -> Result:
    import torch

    import tr2m

    path = ctx.path("head.pth")
    torch.save({"state_dict": {"align_mlp.a_fc.weight": 3, "note": "hello"}}, path)
    return api_error(lambda: tr2m.read_checkpoint(path), (tr2m.CheckpointError,), r"not tensors")


# ------------------------------------------------------------------------------ bundles
def _bundle(mutate, pattern: str):
    """A copy of the bundle, changed by ``mutate(bundle, ctx)``, given to tr2m-run."""
    def case(ctx: Context) -> Result:
        bundle = ctx.copy_bundle()
        mutate(bundle, ctx)
        return ctx.run(frame_image(ctx), bundle=bundle, cache=ctx.root / "cache").error(pattern)
    return case


def _outside_entry(bundle: Path, ctx: Context) -> None:
    outside = ctx.path("outside.onnx")
    outside.write_bytes((bundle / "image.onnx").read_bytes())
    make.edit_manifest(bundle, lambda m: m["files"].__setitem__("../outside.onnx", "0" * 64))


def _absolute_graph(bundle: Path, ctx: Context) -> None:
    def edit(m):
        m["graphs"]["image"]["file"] = "/etc/hostname"
        m["files"]["/etc/hostname"] = "0" * 64
    make.edit_manifest(bundle, edit)


def _symlinked_graph(bundle: Path, ctx: Context) -> None:
    outside = ctx.path("elsewhere/image.onnx")
    outside.write_bytes((bundle / "image.onnx").read_bytes())  # same bytes: the checksum still matches
    (bundle / "image.onnx").unlink()
    (bundle / "image.onnx").symlink_to(outside)


def _unlisted_graph(bundle: Path, ctx: Context) -> None:
    (bundle / "unlisted.onnx").write_bytes((bundle / "image.onnx").read_bytes())
    make.edit_manifest(bundle, lambda m: m["graphs"]["image"].__setitem__("file", "unlisted.onnx"))


def _external_data(bundle: Path, ctx: Context) -> None:
    np.arange(4, dtype=np.float32).tofile(ctx.path("weights.bin"))
    make.graph_with_external_data(bundle / "image.onnx", "../weights.bin")
    make.edit_manifest(bundle, lambda m: None, resign=True)  # as a bundle's author could


def _foreign_graph(bundle: Path, ctx: Context) -> None:
    """A valid ONNX graph with other inputs (x -> y) in place of the image graph, checksums redone."""
    from onnx import TensorProto, helper, numpy_helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "y")]
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", io[:1], io[1:], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (bundle / "image.onnx").write_bytes(model.SerializeToString())
    make.edit_manifest(bundle, lambda m: None, resign=True)


def foreign_text_encoder(ctx: Context) -> Result:
    """Another text encoder's bundle must never be served embeddings cached for this one."""
    bundle = ctx.copy_bundle()
    ctx.run(frame_image(ctx), out=ctx.root / "first").ok()  # the shared cache: "a room" for the original encoder
    make.edit_manifest(bundle, lambda m: m["text_encoder"].update(id="open_clip:ViT-B-32@0123456789abcdef",
                                                                  name="open_clip:ViT-B-32"))
    ctx.run(frame_image(ctx), bundle=bundle).ok()
    import json

    counts = json.loads((ctx.out / "run.json").read_text())["caption_cache"]
    if counts != {"hits": 1, "misses": 1}:  # embedded up front (a miss), then the frame's lookup (a hit)
        raise Crash(f"the cached embedding of another text encoder was used: {counts}")
    return worked("the text graph ran: the cache is keyed by the encoder's identity")


def text_dim_mismatch(ctx: Context) -> Result:
    bundle = ctx.copy_bundle()
    make.edit_manifest(bundle, lambda m: m["text_encoder"].update(dim=768))
    return ctx.run(frame_image(ctx), bundle=bundle, cache=ctx.root / "cache").error(r"768.*32|32.*768")


def executable_in_bundle(ctx: Context) -> Result:
    """A bundle whose tokenizer entry points at a Python file: it is read as data, never run."""
    bundle = ctx.copy_bundle()
    sentinel = ctx.root / "PLANTED_CODE_RAN"
    (bundle / "tokenizer.py").write_text(f"open({str(sentinel)!r}, 'w')\n")
    (bundle / "__init__.py").write_text(f"open({str(sentinel)!r}, 'w')\n")
    make.edit_manifest(bundle, lambda m: m.update(tokenizer="tokenizer.py"), resign=True)
    seen = ctx.run(frame_image(ctx), bundle=bundle, cache=ctx.root / "cache")
    return no_code_ran(sentinel, seen.error(r"tokenizer"))


# What the runtime must never do with a file it reads (no torch, no code from the bundle executed).
FORBIDDEN = {
    r"\bpickle\b": "pickle", r"allow_pickle\s*=\s*True": "allow_pickle=True", r"\beval\(": "eval()",
    r"\bexec\(": "exec()", r"register_custom_ops_library": "ORT custom-op libraries",
    r"engine_host_code_allowed": "TensorRT host code in engines", r"\bsubprocess\b": "subprocess",
    r"__import__|import_module\((?!name\))": "dynamic imports", r"\bimport torch\b": "torch",
}


def runtime_source_audit(ctx: Context) -> Result:
    hits = []
    for path in sorted((REPO / "runtime").rglob("*.py")):
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        code = re.sub(r'"""[\s\S]*?"""', "", code)  # docstrings may talk about these things
        hits += [f"{path.name}: {what}" for pattern, what in FORBIDDEN.items() if re.search(pattern, code)]
    if hits:
        raise Crash("the runtime source uses " + "; ".join(hits))
    return worked("runtime/: no pickle, eval/exec, subprocess, custom-op or plugin loading, torch")


def tampered_trt(ctx: Context) -> Result:
    bundle = ctx.copy_bundle()
    make.flip_byte(bundle / "image.onnx")
    return ctx.export("trt", "--bundle", bundle, "--flavour", "rtx", "--target", "sm86").error(r"checksum")


def tampered_eval(ctx: Context) -> Result:
    bundle = ctx.copy_bundle()
    make.flip_byte(bundle / "text.onnx")
    return ctx.evaluate(*eval_args(ctx), "--bundle", bundle).error(r"checksum")


def engine_open_missing(ctx: Context) -> Result:
    from runtime import Engine
    from runtime.errors import BundleError

    return api_error(lambda: Engine.open(ctx.root / "nope"), (BundleError,), r"not found")


# ------------------------------------------------------------------------------ engines
def _engine_bundle(ctx: Context) -> Path:
    if ctx.engine_bundle is None or not make.rtx_available():
        raise Skip("TensorRT for RTX is not installed: no engine to tamper with")
    return ctx.copy_bundle(ctx.engine_bundle(), "engine_bundle")


def _select(bundle: Path, gpu: str, *, verify: bool = True):
    import tensorrt_rtx

    from runtime.bundle import Bundle
    from runtime.trt_sidecar import load_engine_bytes, select_engine

    # What the TensorRT backend does: choose by sidecar, then read the bytes it deserializes (checked).
    versions = {"rtx": tensorrt_rtx.__version__}
    choice = select_engine(Bundle.open(bundle, verify=verify), "image", versions=versions, gpu_cc=gpu)
    load_engine_bytes(choice.sidecar, gpu_cc=gpu, trt_version=tensorrt_rtx.__version__, flavour=choice.flavour)
    return choice.engine


def _engine_api(mutate, pattern: str, *, gpu: str = "sm86", verify: bool = True):
    def case(ctx: Context) -> Result:
        from runtime.errors import BundleError

        bundle = _engine_bundle(ctx)
        mutate(bundle)
        return api_error(lambda: _select(bundle, gpu, verify=verify), (BundleError,), pattern)
    return case


def _sidecar(edit, *, resign: bool):
    def mutate(bundle: Path) -> None:
        import json

        _, sidecar = make.engine_paths(bundle)
        data = json.loads(sidecar.read_text())
        edit(data)
        sidecar.write_text(json.dumps(data))
        if resign:
            make.edit_manifest(bundle, lambda m: None, resign=True)
    return mutate


def _drop_sidecar(bundle: Path) -> None:
    make.engine_paths(bundle)[1].unlink()


def _cut_engine(bundle: Path) -> None:
    engine, _ = make.engine_paths(bundle)
    make.cut(engine, engine, 0.5)


def engine_fits(ctx: Context) -> Result:
    bundle = _engine_bundle(ctx)
    path = _select(bundle, "sm86")
    return worked(f"the sm86 engine passes every check: {path.name}")


def engine_without_gpu(ctx: Context) -> Result:
    from runtime.trt_sidecar import EngineError, check_engine

    _, sidecar = make.engine_paths(_engine_bundle(ctx))
    return api_error(lambda: check_engine(sidecar, None, "1.7.1.116", flavour="rtx"), (EngineError,),
                     r"needs a CUDA GPU")


def engine_backend_here(ctx: Context) -> Result:
    seen = ctx.run(frame_image(ctx), "--backend", "tensorrt", bundle=_engine_bundle(ctx))
    if seen.code == 0:
        return worked("this machine runs the sm86 engine")
    return seen.error(r"cannot run (this bundle )?here|fits this machine|needs a CUDA GPU|CUDA cannot start")


def engine_sidecar_escape(ctx: Context) -> Result:
    from runtime.errors import BundleError

    bundle = _engine_bundle(ctx)
    target = ctx.path("stolen.engine")
    target.write_bytes(b"not yours")
    _sidecar(lambda d: d.update(engine=os.path.relpath(target, bundle / "engines")), resign=True)(bundle)
    result = api_error(lambda: _select(bundle, "sm86"), (BundleError,), r"missing")
    if str(ctx.root / "stolen.engine") in result.message:
        raise Crash("the sidecar's engine path reached outside the bundle")
    return result


CASES = [
    Case("checkpoint: wrong shapes", "tr2m.load_head", _load_head(_wrong_shape, r"wrong shape: align_mlp")),
    Case("checkpoint: missing keys", "tr2m.load_head", _load_head(_missing_key, r"missing: layer1_rn")),
    Case("checkpoint: extra keys", "tr2m.load_head", _load_head(_extra_key, r"unexpected: contrast.queue")),
    Case("checkpoint: pickle that runs code (plain)", "tr2m.read_checkpoint", _pickle_api(torch_zip=False)),
    Case("checkpoint: pickle that runs code (torch zip)", "tr2m.read_checkpoint", _pickle_api(torch_zip=True)),
    Case("checkpoint: pickle that runs code", "tr2m-export onnx", pickle_export),
    Case("checkpoint: pickle that runs code", "tr2m-eval", pickle_eval),
    Case("checkpoint: pickle that runs code", "tr2m-train", pickle_train),
    Case("checkpoint: wrong shapes", "tr2m-export onnx", wrong_shape_export),
    Case("checkpoint: missing keys", "tr2m-train", missing_key_train),
    Case("checkpoint: truncated .pth", "tr2m.read_checkpoint", truncated_checkpoint),
    Case("checkpoint: garbage .safetensors", "tr2m.read_checkpoint", garbage_safetensors),
    Case("checkpoint: entries that are not tensors", "tr2m.read_checkpoint", non_tensor_entries),
    Case("bundle: missing graph file", "tr2m-run", _bundle(lambda b, c: (b / "image.onnx").unlink(),
                                                             r"missing image.onnx.*re-export")),
    Case("bundle: truncated graph file", "tr2m-run", _bundle(
        lambda b, c: make.cut(b / "text.onnx", b / "text.onnx", .5), r"text.onnx.*checksum")),
    Case("bundle: tampered graph file (one byte)", "tr2m-run", _bundle(lambda b, c: make.flip_byte(b / "image.onnx"),
                                                                         r"image.onnx.*checksum")),
    Case("bundle: manifest is not JSON", "tr2m-run", _bundle(lambda b, c: (b / "manifest.json").write_text("{oops"),
                                                               r"not valid JSON.*re-export")),
    Case("bundle: newer format version", "tr2m-run", _bundle(lambda b, c: make.edit_manifest(
        b, lambda m: m.update(format_version=2)), r"version 2 is not supported.*upgrade")),
    Case("bundle: foreign text encoder (cache)", "tr2m-run", foreign_text_encoder),
    Case("bundle: text encoder of another width", "tr2m-run", text_dim_mismatch),
    Case("bundle: manifest path ../ outside", "tr2m-run", _bundle(_outside_entry, r"outside the bundle")),
    Case("bundle: manifest graph at an absolute path", "tr2m-run", _bundle(_absolute_graph, r"outside the bundle")),
    Case("bundle: graph symlinked outside the bundle", "tr2m-run", _bundle(_symlinked_graph, r"outside the bundle")),
    Case("bundle: graph file not covered by the checksums", "tr2m-run", _bundle(_unlisted_graph,
                                                                                  r"unlisted.onnx.*checksum")),
    Case("bundle: ONNX external data outside the bundle", "tr2m-run", _bundle(_external_data, r"escapes.*re-export")),
    Case("bundle: image graph with other inputs than the manifest", "tr2m-run", _bundle(
        _foreign_graph, r"does not match the manifest: no input 'image'.*re-export")),
    Case("bundle: frame size in the manifest differs from the graph", "tr2m-run", _bundle(
        lambda b, c: make.edit_manifest(b, lambda m: m["preprocessing"].update(height=70)),
        r"resizes frames to 70x70 but image takes 56x70")),
    Case("bundle: manifest field missing", "tr2m-run", _bundle(
        lambda b, c: make.edit_manifest(b, lambda m: m["preprocessing"].pop("height")), r"malformed.*re-export")),
    Case("bundle: Python files planted as the tokenizer", "tr2m-run", executable_in_bundle),
    Case("runtime: never unpickles or executes bundle content", "runtime (source)", runtime_source_audit),
    Case("bundle: tampered graph file", "tr2m-export trt", tampered_trt),
    Case("bundle: unknown graph name", "tr2m-export trt", lambda ctx: ctx.export(
        "trt", "--bundle", ctx.copy_bundle(), "--graphs", "nope", "--flavour", "rtx", "--target", "sm86"
    ).error(r"no 'nope' graph \(it has: image")),
    Case("bundle: tampered text graph", "tr2m-eval", tampered_eval),
    Case("bundle: folder does not exist", "runtime.Engine.open", engine_open_missing),
    Case("engine: fits this GPU and TensorRT (control)", "runtime.trt_sidecar", engine_fits),
    Case("engine: built for another GPU (sm86 on sm89)", "runtime.trt_sidecar",
         _engine_api(lambda b: None, r"built for sm86.*this GPU is sm89.*rebuild", gpu="sm89")),
    Case("engine: built by another TensorRT version", "runtime.trt_sidecar",
         _engine_api(_sidecar(lambda d: d.update(trt_version="1.6.0.0"), resign=True),
                     r"1\.6\.0\.0.*1\.7\.1\.116.*rebuild")),
    Case("engine: sidecar missing", "runtime.trt_sidecar",
         _engine_api(_drop_sidecar, r"sidecar .* not found.*tr2m-export trt", verify=False)),
    Case("engine: sidecar missing", "runtime.Bundle.open",
         _engine_api(_drop_sidecar, r"missing engines/.*tr2m-export trt")),
    Case("engine: sidecar edited without re-signing", "runtime.Bundle.open",
         _engine_api(_sidecar(lambda d: d.update(target="sm89"), resign=False), r"checksum")),
    Case("engine: truncated engine file", "runtime.trt_sidecar",
         _engine_api(_cut_engine, r"does not match its sidecar checksum")),
    Case("engine: sidecar names a file outside engines/", "runtime.trt_sidecar", engine_sidecar_escape),
    Case("engine: no GPU on this machine", "runtime.trt_sidecar", engine_without_gpu),
    Case("engine: --backend tensorrt here", "tr2m-run", engine_backend_here),
]
