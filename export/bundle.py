"""`tr2m-export onnx`: write a verified bundle folder, or nothing at all.

The bundle is assembled in a hidden temporary folder beside the destination and renamed into
place only after every graph passed its parity check; a failure or Ctrl-C removes it.
"""
from __future__ import annotations

import datetime
import gc
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
from .graphs import EXPORT_ORDER, GRAPHS, HALF_GRAPHS, example_inputs, io_shapes
from .onnx_export import OPSET, export_onnx, set_metadata, write_onnx
from .parity import CAPTIONS, ParityStat, check, compare, parity_batches, read_frames, run_ort
from .tokenizer import build_clip_tokenizer
from .weights import WeightStore, external_files, weight_file

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
    """Graph by graph, each weight written once: the torch parts a graph needs are freed once no
    later graph needs them, the torch model before any ONNX Runtime session opens, and each
    graph's weights go to disk as the exporter hands them over (see onnx_export.export_onnx)."""
    names = _graph_order(options)
    frames = read_frames(options.parity_frames)  # a bad frame fails before any model is built
    model = _build_model(options)
    config, text = model.config, _text_identity(model, options)
    log(f"expected peak memory: about {expected_peak_bytes(model, names, options.half) / 1e9:.1f} GB")
    feeds = _parity_feeds(model, frames)
    store = WeightStore(directory / weight_file("fp32"))
    graphs, references = {}, {}
    for name in names:
        log(f"exporting {name} graph ...")
        graphs[name], references[name] = _export_graph(model, name, directory, feeds, store)
        _free_parts(model, done=names[: names.index(name) + 1], remaining=names[names.index(name) + 1:])
    del model
    gc.collect()
    report = ExportReport(bundle=directory)
    for name in names:
        report.parity += _checked_parity(directory, name, name, feeds, references[name])
    if options.half:
        store16 = WeightStore(directory / weight_file("fp16"))
        for name in (n for n in HALF_GRAPHS if n in names):
            log(f"converting the {name} graph to FP16 ...")
            graphs[f"{name}_fp16"] = _export_fp16(directory, name, graphs[name], config, store16)
            report.parity += _checked_parity(directory, f"{name}_fp16", name, feeds, references[name])
    build_clip_tokenizer(directory / TOKENIZER_FILE)
    _check_tokenizer(directory / TOKENIZER_FILE)
    extra = sorted({f for g in graphs.values() for f in external_files(directory / g["file"])})
    write_manifest(directory, _manifest(config, text, options, graphs, report.parity, extra))
    report.files = {p.name: p.stat().st_size for p in sorted(directory.iterdir())}
    return report


def _graph_order(options: ExportOptions) -> Tuple[str, ...]:
    unknown = [name for name in options.graphs if name not in GRAPHS]
    if unknown:
        raise ExportError(f"unknown graph {unknown[0]!r}; choose from: {', '.join(GRAPHS)}")
    if options.half and "image" not in options.graphs:
        raise ExportError("--half converts the image graph: include 'image' in the graphs")
    return tuple(name for name in EXPORT_ORDER if name in options.graphs)


def expected_peak_bytes(model: TR2M, graphs: Sequence[str], half: bool) -> int:
    """What the export should peak at: the torch model, plus the largest graph's weights held
    twice (the exporter's copy and, later, ONNX Runtime's parity session), plus the FP16 copy,
    plus ~1 GB for torch and ONNX Runtime themselves (measured on the paper preset)."""
    part_bytes = {name: _module_bytes(getattr(model, name)) for name in ("relative", "image_encoder", "text_encoder", "head")}
    largest = max(sum(part_bytes[p] for p in GRAPHS[g].parts) for g in graphs)
    return sum(part_bytes.values()) + 2 * largest + (largest // 2 if half else 0) + (1 << 30)


def _module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _free_parts(model: TR2M, done: Sequence[str], remaining: Sequence[str]) -> None:
    """Drop the torch submodules that exported graphs used and no remaining graph needs."""
    needed = {part for name in remaining for part in GRAPHS[name].parts}
    for part in {part for name in done for part in GRAPHS[name].parts} - needed:
        setattr(model, part, None)
    gc.collect()


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


def _export_graph(model: TR2M, name: str, directory: Path, feeds, store: WeightStore) -> Tuple[dict, list]:
    """Export one FP32 graph into `directory` (weights into `store`); returns its manifest entry and
    PyTorch's outputs on the parity feeds (checked against ONNX Runtime once torch is freed)."""
    definition = GRAPHS[name]
    module = definition.wrap(model).eval()
    with torch.no_grad():
        references = [_as_numpy(module(*(batch[n] for n in definition.inputs))) for batch in feeds]
    path = directory / f"{name}.onnx"
    export_onnx(module, example_inputs(model, definition.inputs), definition.outputs, path,
                metadata=_metadata(model.config, name, "fp32"), store=store)
    inputs, outputs = io_shapes(model, definition)
    return {"file": path.name, "precision": "fp32", "inputs": inputs, "outputs": outputs}, references


def _as_numpy(outputs) -> List[np.ndarray]:
    return [o.numpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]


def _export_fp16(directory: Path, name: str, entry: dict, config, store: WeightStore) -> dict:
    """The FP32 graph `name` converted to FP16, its weights into the FP16 weight file. The graph
    is read without its weights; to_fp16 reads them in for the conversion only."""
    half = to_fp16(onnx.load(str(directory / entry["file"]), load_external_data=False), weights_dir=directory)
    set_metadata(half, _metadata(config, f"{name}_fp16", "fp16"))
    store.externalize(half)
    path = directory / f"{name}_fp16.onnx"
    write_onnx(half, path)
    onnx.checker.check_model(str(path), full_check=True)
    return dict(entry, file=path.name, precision="fp16")


def _checked_parity(directory: Path, graph: str, source: str, feeds, references) -> List[ParityStat]:
    """Run `graph` in ONNX Runtime on the parity feeds and hold it to its precision's tolerance
    against PyTorch's outputs of `source` (the FP16 image graph is judged on depth)."""
    definition = GRAPHS[source]
    path = directory / f"{graph}.onnx"
    stats = []
    for batch, ref in zip(feeds, references):
        got = run_ort(path, {n: batch[n].numpy() for n in definition.inputs})
        stats += compare(graph, definition.outputs, got, ref)
    precision = "fp16" if graph.endswith("_fp16") else "fp32"
    checked = ("depth",) if graph == "image_fp16" else definition.outputs
    failures = check(stats, precision, checked)
    if failures:
        raise ExportError(f"{'FP16 ' if precision == 'fp16' else ''}parity check failed: " + "; ".join(failures))
    return stats


def _parity_feeds(model: TR2M, frames) -> List[Dict[str, torch.Tensor]]:
    """Every input any graph takes, per parity batch (text embeddings made now, while the text
    tower is still in memory)."""
    return [_feeds(model, images) for images in parity_batches(frames, model)]


def _feeds(model: TR2M, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(images.shape[0])]
    with torch.no_grad():
        return {"image": images, "text_emb": model.encode_text(captions), "token_ids": tr2m.encoders.tokenize(captions)}


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


def _metadata(cfg, graph: str, precision: str) -> Dict[str, str]:
    return {
        "tr2m.format_version": str(FORMAT_VERSION), "tr2m.graph": graph, "tr2m.precision": precision,
        "tr2m.preset": cfg.name, "tr2m.input_size": f"{cfg.input_size[0]}x{cfg.input_size[1]}",
        "tr2m.mean": ",".join(map(str, cfg.mean)), "tr2m.std": ",".join(map(str, cfg.std)),
        "tr2m.resize": "bilinear,align_corners", "tr2m.config": cfg.to_json(),
    }


def _manifest(cfg, text: dict, options: ExportOptions, graphs: dict, parity: List[ParityStat],
              extra: List[str]) -> dict:
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
        "text_encoder": text,
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
