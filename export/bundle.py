"""`tr2m-export onnx`: write a verified bundle folder, or nothing at all.

The bundle is assembled in a hidden temporary folder beside the destination and renamed into
place only after every graph passed its parity check; a failure or Ctrl-C removes it.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch

import tr2m
from runtime.bundle import FORMAT_VERSION, write_manifest
from tr2m.model import TR2M

from .fp16 import to_fp16
from .graphs import GRAPHS, example_inputs, io_shapes
from .onnx_export import OPSET, export_onnx, external_files, save_onnx
from .parity import CAPTIONS, ParityStat, check, compare, parity_batches, read_frames, run_ort
from .tokenizer import build_clip_tokenizer

TOKENIZER_FILE = "tokenizer.json"


class ExportError(RuntimeError):
    """The export could not be completed (nothing was left on disk)."""


@dataclass
class ExportOptions:
    out: Path
    preset: str = "paper"
    checkpoint: Optional[Path] = None
    input_size: Optional[Tuple[int, int]] = None
    random_init: bool = False
    half: bool = False
    graphs: Tuple[str, ...] = ("image", "relative", "scale_shift", "text")
    relative_source: Optional[str] = None
    image_source: Optional[str] = None
    text_source: Optional[str] = None
    parity_frames: Sequence[Path] = ()
    seed: int = 0
    force: bool = False
    prepare_model: Optional[Callable[[TR2M], TR2M]] = None  # a hook for tests and demos


@dataclass
class ExportReport:
    bundle: Path
    parity: List[ParityStat] = field(default_factory=list)
    files: Dict[str, int] = field(default_factory=dict)


def export_bundle(options: ExportOptions, log: Callable[[str], None] = print) -> ExportReport:
    """Build the model, export each graph, check parity, write the manifest; atomic as a whole."""
    out = Path(options.out)
    if out.exists() and not options.force:
        raise ExportError(f"{out} already exists: choose another --out or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        report = _export_into(staging, options, log)
        _move_into_place(staging, out)
        report.bundle = out
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{staging.name[-8:]}")
        out.rename(old)
    staging.chmod(0o777 & ~_umask())  # mkdtemp made it private; a bundle is meant to be shared
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _export_into(directory: Path, options: ExportOptions, log) -> ExportReport:
    model = _build_model(options)
    frames = read_frames(options.parity_frames)
    batches = parity_batches(frames, model)
    report = ExportReport(bundle=directory)
    graphs = {}
    for name in options.graphs:
        log(f"exporting {name} graph ...")
        graphs[name], stats = _export_graph(model, name, directory, batches)
        report.parity += stats
    if options.half:
        log("converting the image graph to FP16 ...")
        graphs["image_fp16"], stats = _export_fp16(model, directory, batches)
        report.parity += stats
    build_clip_tokenizer(directory / TOKENIZER_FILE)
    _check_tokenizer(directory / TOKENIZER_FILE)
    extra = [f for g in graphs.values() for f in external_files(directory / g["file"])]
    write_manifest(directory, _manifest(model, options, graphs, report.parity, extra))
    report.files = {p.name: p.stat().st_size for p in sorted(directory.iterdir())}
    return report


def _build_model(options: ExportOptions) -> TR2M:
    torch.manual_seed(options.seed)
    model = tr2m.create_model(
        options.preset, pretrained=not options.random_init, checkpoint=options.checkpoint,
        input_size=options.input_size, relative_source=options.relative_source,
        image_source=options.image_source, text_source=options.text_source,
    )
    if options.random_init:
        tr2m.randomize_for_demo(model, seed=options.seed)  # an untrained demo bundle with visible structure
    return options.prepare_model(model) if options.prepare_model else model


def _export_graph(model: TR2M, name: str, directory: Path, batches) -> Tuple[dict, List[ParityStat]]:
    if name not in GRAPHS:
        raise ExportError(f"unknown graph {name!r}; choose from: {', '.join(GRAPHS)}")
    definition = GRAPHS[name]
    module = definition.wrap(model).eval()
    path = directory / f"{name}.onnx"
    export_onnx(module, example_inputs(model, definition.inputs), definition.outputs, path,
                metadata=_metadata(model, name, "fp32"))
    stats = _parity(module, definition, path, model, batches, name)
    failures = check(stats, "fp32", definition.outputs)
    if failures:
        raise ExportError("parity check failed: " + "; ".join(failures))
    inputs, outputs = io_shapes(model, definition)
    return {"file": path.name, "precision": "fp32", "inputs": inputs, "outputs": outputs}, stats


def _export_fp16(model: TR2M, directory: Path, batches) -> Tuple[dict, List[ParityStat]]:
    source = directory / "image.onnx"
    if not source.is_file():
        raise ExportError("--half converts the image graph: include 'image' in the graphs")
    half = to_fp16(onnx.load(str(source)))
    del half.metadata_props[:]
    from .onnx_export import set_metadata

    set_metadata(half, _metadata(model, "image_fp16", "fp16"))
    path = directory / "image_fp16.onnx"
    save_onnx(half, path)
    onnx.checker.check_model(str(path), full_check=True)
    definition = GRAPHS["image"]
    stats = _parity(definition.wrap(model).eval(), definition, path, model, batches, "image_fp16")
    failures = check(stats, "fp16", ("depth",))
    if failures:
        raise ExportError("FP16 parity check failed: " + "; ".join(failures))
    inputs, outputs = io_shapes(model, definition)
    return {"file": path.name, "precision": "fp16", "inputs": inputs, "outputs": outputs}, stats


def _parity(module, definition, path: Path, model: TR2M, batches, graph: str) -> List[ParityStat]:
    stats = []
    for images in batches:
        feeds = _feeds(model, definition.inputs, images)
        with torch.no_grad():
            ref = module(*feeds.values())
        ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
        got = run_ort(path, {k: v.numpy() for k, v in feeds.items()})
        stats += compare(graph, definition.outputs, got, ref)
    return stats


def _feeds(model: TR2M, names, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(images.shape[0])]
    makers = {
        "image": lambda: images,
        "text_emb": lambda: model.encode_text(captions),
        "token_ids": lambda: tr2m.encoders.tokenize(captions),
    }
    return {name: makers[name]() for name in names}


def _check_tokenizer(path: Path) -> None:
    """The runtime's tokenizer must give open_clip's ids: checked on a few awkward captions."""
    from runtime.tokenizer import ClipTokenizer

    captions = ["an office", "Tom &amp; Jerry’s café", "", "word " * 100, "a street at night, 22:00!"]
    ours = ClipTokenizer.from_file(path)(captions)
    if not np.array_equal(ours, tr2m.encoders.tokenize(captions).numpy()):
        raise ExportError("the exported tokenizer does not reproduce open_clip's token ids")


def weights_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _text_identity(model: TR2M, options: ExportOptions) -> dict:
    source = options.text_source or model.config.text.source or f"random:{model.config.name}"
    digest = weights_sha256(model.text_encoder)
    return {"name": source, "sha256": digest, "id": f"{source}@{digest[:16]}",
            "dim": model.config.text.projection_dim, "context_length": model.config.text.context_length}


def _metadata(model: TR2M, graph: str, precision: str) -> Dict[str, str]:
    cfg = model.config
    return {
        "tr2m.format_version": str(FORMAT_VERSION), "tr2m.graph": graph, "tr2m.precision": precision,
        "tr2m.preset": cfg.name, "tr2m.input_size": f"{cfg.input_size[0]}x{cfg.input_size[1]}",
        "tr2m.mean": ",".join(map(str, cfg.mean)), "tr2m.std": ",".join(map(str, cfg.std)),
        "tr2m.resize": "bilinear,align_corners", "tr2m.config": cfg.to_json(),
    }


def _manifest(model: TR2M, options: ExportOptions, graphs: dict, parity: List[ParityStat], extra: List[str]) -> dict:
    cfg = model.config
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "untrained": bool(options.random_init or options.checkpoint is None),
        "checkpoint": Path(options.checkpoint).name if options.checkpoint else None,
        "preset": cfg.name,
        # The video colour range the runtime shows (metres; null: fixed from the first frame).
        "display_range_m": list(cfg.display_range_m) if cfg.display_range_m else None,
        "config": cfg.to_dict(),
        "preprocessing": {
            "height": cfg.input_size[0], "width": cfg.input_size[1], "layout": "NCHW", "color": "RGB",
            "value_range": [0.0, 1.0], "resize": "bilinear", "align_corners": True,
            "mean": list(cfg.mean), "std": list(cfg.std), "normalized_in_graph": False,
        },
        "text_encoder": _text_identity(model, options),
        "graphs": graphs,
        "tokenizer": TOKENIZER_FILE,
        "extra_files": extra,
        "parity": [s.__dict__ for s in parity],
        "versions": _versions(),
    }


def _versions() -> Dict[str, str]:
    import onnxruntime
    import transformers

    return {"tr2m": _package_version(), "torch": torch.__version__, "onnx": onnx.__version__, "opset": str(OPSET),
            "onnxruntime": onnxruntime.__version__, "transformers": transformers.__version__}


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tr2m")
    except PackageNotFoundError:
        return "0+unknown"
