"""Engines for a bundle: pick the graph that carries each precision, build, record in the manifest.

A precision is taken from the graph (strongly typed TensorRT): FP16 builds ``<graph>_fp16``
(written by ``tr2m-export onnx --half``), INT8 builds ``<graph>_int8`` (written by calib/). On
TensorRT 10 an FP16 engine can also come from the FP32 graph with the weak FP16 flag. The text
graph always stays at its exported precision: it runs once per new caption (the runtime caches
embeddings), so speed does not matter there and FP32 keeps the embeddings exact.

Engines live in ``<bundle>/engines/KEY.{engine,json,log}``; ``manifest["engines"][KEY]`` lists
them and the sidecars are checksummed with the other files (``extra_files``), so the sidecar, which
holds the engine's own sha256, cannot be swapped unnoticed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from runtime.bundle import Bundle, write_manifest
from runtime.trt_sidecar import ENGINES_DIR

from .build import BatchRange, EngineResult, build_engine
from .errors import EngineBuildError
from .flavours import Flavour, resolve_flavour, resolve_target

KEEP_PRECISION_GRAPHS = ("text",)


@dataclass(frozen=True)
class GraphChoice:
    """Which bundle graph builds the engine for (base graph, requested precision)."""

    graph: str
    precision: str
    note: str = ""


def choose_graph(bundle: Bundle, base: str, precision: str, flavour: Flavour) -> GraphChoice:
    """base graph ("image", "text", ...) + precision -> the graph to build and its precision."""
    if not bundle.has_graph(base):
        raise EngineBuildError(f"bundle has no {base!r} graph (it has: {', '.join(sorted(bundle.manifest['graphs']))})")
    variant = f"{base}_{precision}"
    if precision == "fp32" or base in KEEP_PRECISION_GRAPHS and not bundle.has_graph(variant):
        own = bundle.graph(base).precision
        note = "" if own == precision else f"{base} stays {own} (built once per caption, cached)"
        return GraphChoice(base, own, note)
    if bundle.has_graph(variant):
        return GraphChoice(variant, precision)
    if precision == "fp16" and flavour.weak_typing:
        return GraphChoice(base, "fp16", f"no {variant} graph: {flavour.label} builds FP16 from {base} (weak typing)")
    how = ("export it with `tr2m-export onnx --half`" if precision == "fp16"
           else "calibrate first: `tr2m-export trt --int8 --calib FRAMES`")
    raise EngineBuildError(f"bundle has no {variant} graph, and {flavour.label} takes {precision.upper()} "
                           f"from the graph: {how}")


def build_bundle_engines(
    bundle_dir: str | Path, *, graphs: Sequence[str] = ("image", "text"), precision: str = "fp32",
    flavour: str = "auto", target: Optional[str] = None, batch: BatchRange = BatchRange(),
    workspace: Optional[int] = None, timing_cache: Optional[str | Path] = None,
    echo: Callable[[str], None] = print,
) -> List[EngineResult]:
    """Build one engine per base graph into <bundle>/engines and record them in the manifest.

    timing_cache: None = <bundle>/engines/timing.<flavour>-<version>.cache (flavours that have one).
    """
    bundle_dir = Path(bundle_dir)
    bundle = Bundle.open(bundle_dir)  # verify checksums before spending minutes on a build
    flav, trt = resolve_flavour(flavour)
    target = resolve_target(flav, trt, target)  # fail before the first build message
    engines_dir = bundle_dir / ENGINES_DIR
    cache = Path(timing_cache) if timing_cache else (
        engines_dir / f"timing.{flav.name}-{trt.__version__}.cache" if flav.timing_cache else None)
    results = []
    for base in graphs:
        choice = choose_graph(bundle, base, precision, flav)
        if choice.note:
            echo(f"note: {choice.note}")
        echo(f"building {choice.graph} ({choice.precision}) with {flav.label} {trt.__version__} ...")
        result = build_engine(
            bundle.graph_path(choice.graph), flavour=flav.name, precision=choice.precision, batch=batch,
            workspace=workspace, timing_cache=cache, target=target, out_dir=engines_dir, graph=choice.graph,
        )
        echo(f"  {result.engine_path.name}: {result.meta.build_seconds:.1f} s, "
             f"compute layers {_counts(result.meta.layer_precisions)}")
        results.append(result)
    record_engines(bundle_dir, results)
    return results


def _counts(counts: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "n/a"


def record_engines(bundle_dir: str | Path, results: Sequence[EngineResult]) -> None:
    """Add engines to manifest["engines"] (keyed like their files) and re-write the manifest."""
    bundle_dir = Path(bundle_dir)
    manifest = dict(Bundle.open(bundle_dir, verify=False).manifest)
    engines = dict(manifest.get("engines", {}))
    extra = list(manifest.get("extra_files", []))
    for result in results:
        entry = _entry(bundle_dir, result)
        engines[result.key] = entry
        if entry["sidecar"] not in extra:
            extra.append(entry["sidecar"])
    # Forget engines whose files were deleted since, so the manifest never lists a missing file.
    for key in [k for k, e in engines.items() if not (bundle_dir / e["sidecar"]).is_file()]:
        extra = [f for f in extra if f != engines.pop(key)["sidecar"]]
    manifest["engines"], manifest["extra_files"] = engines, extra
    write_manifest(bundle_dir, manifest)


def _entry(bundle_dir: Path, result: EngineResult) -> Dict[str, object]:
    meta = result.meta
    rel = lambda p: p.resolve().relative_to(bundle_dir.resolve()).as_posix()  # noqa: E731
    return {
        "graph": meta.graph, "file": rel(result.engine_path), "sidecar": rel(result.sidecar_path),
        "precision": meta.precision, "flavour": meta.flavour, "trt_version": meta.trt_version,
        "target": meta.target, "batch": list(meta.batch), "engine_sha256": meta.engine_sha256,
    }

