"""The CPU INT8 row when no calibrated graph exists: ONNX Runtime dynamic quantization.

The quantization is `export.cpu_int8` (the bundle's own image_int8_cpu graph, `tr2m-export
cpu-int8`); the bench makes it here too so that both weight-scale choices get a row on any bundle.

The result is a small derived bundle in the bench's work folder, holding image_int8 plus the text
graph and tokenizer (hard links where possible), with its own manifest, so that
`Engine.open(..., precision="int8")` runs it exactly like any bundle.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Dict


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def dynamic_int8_bundle(bundle_dir: Path, out_dir: Path, *, per_channel: bool = False) -> Path:
    """Write a derived bundle at out_dir whose image_int8 graph is the dynamic-INT8 image graph."""
    from export.cpu_int8 import quantize_dynamic_graph
    from export.weights import external_files
    from runtime.bundle import Bundle, write_manifest

    bundle = Bundle.open(bundle_dir, verify=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "image_int8.onnx"
    info = quantize_dynamic_graph(bundle.graph_path("image"), target, per_channel=per_channel)
    manifest = dict(bundle.manifest)
    image = dict(manifest["graphs"]["image"], file=target.name, precision="int8", quantization=info)
    graphs = {"image_int8": image}
    names = [target.name] + [p.name for p in out_dir.glob(target.name + ".*")]
    if bundle.has_graph("text"):
        text = bundle.manifest["graphs"]["text"]
        _link_or_copy(bundle.graph_path("text"), out_dir / text["file"])
        for extra in external_files(bundle.graph_path("text")):  # its weights (a file shared by all FP32 graphs)
            _link_or_copy(bundle.resolve(extra), out_dir / extra)
            names.append(extra)
        graphs["text"] = text
    if bundle.tokenizer_path is not None:
        _link_or_copy(bundle.tokenizer_path, out_dir / bundle.tokenizer_path.name)
    manifest.update(graphs=graphs, extra_files=names[1:], derived_from=str(bundle_dir))
    manifest.pop("engines", None)
    write_manifest(out_dir, manifest)
    return out_dir


def run_quantize(task: Dict) -> Dict:
    """Worker task: make the derived bundle; returns its path and the seconds it took."""
    began = time.perf_counter()
    out = dynamic_int8_bundle(Path(task["bundle"]), Path(task["out_dir"]), per_channel=task.get("per_channel", False))
    size = sum(p.stat().st_size for p in out.glob("image_int8.onnx*"))
    return {"status": "ok", "bundle": str(out), "seconds": time.perf_counter() - began, "graph_mb": size / 1e6}
