"""`tr2m-export info BUNDLE`: what a bundle holds, before it is copied to a device.

Graphs with their precision and the bytes each reads (its own file plus its share of a weight
file), the weight files and which graphs share them, TensorRT engines with their targets, and
whether every file still matches the manifest's sha256.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import onnx

from runtime.bundle import Bundle, sha256_file

from .weights import referenced_bytes


@dataclass
class GraphInfo:
    name: str
    file: str
    precision: str
    graph_bytes: int
    weights: Dict[str, int]  # external file -> bytes this graph reads from it
    damaged: bool = False  # the graph file does not parse (its checksum line says MISMATCH)


@dataclass
class BundleInfo:
    directory: Path
    manifest: dict
    graphs: List[GraphInfo] = field(default_factory=list)
    checks: Dict[str, str] = field(default_factory=dict)  # file -> ok | missing | MISMATCH

    @property
    def healthy(self) -> bool:
        return all(status == "ok" for status in self.checks.values())

    def shared_files(self) -> Dict[str, List[str]]:
        """Weight file -> the graphs that read it."""
        users: Dict[str, List[str]] = {}
        for graph in self.graphs:
            for name in graph.weights:
                users.setdefault(name, []).append(graph.name)
        return users


def inspect_bundle(directory: Path) -> BundleInfo:
    """Read a bundle without trusting it: checksums are reported, not enforced."""
    bundle = Bundle.open(directory, verify=False)
    info = BundleInfo(directory=Path(directory), manifest=bundle.manifest)
    for name, spec in sorted(bundle.manifest["graphs"].items()):
        path = bundle.resolve(spec["file"])
        weights, damaged = _graph_weights(path)
        info.graphs.append(GraphInfo(name, spec["file"], spec["precision"], _size(path), weights, damaged))
    for name, expected in sorted(bundle.manifest["files"].items()):
        path = bundle.resolve(name)
        info.checks[name] = "missing" if not path.is_file() else "ok" if sha256_file(path) == expected else "MISMATCH"
    for entry in bundle.manifest.get("engines", {}).values():
        path = bundle.resolve(entry["file"])
        info.checks[entry["file"]] = ("missing" if not path.is_file()
                                      else "ok" if sha256_file(path) == entry.get("engine_sha256") else "MISMATCH")
    return info


def _graph_weights(path: Path) -> Tuple[Dict[str, int], bool]:
    """The weight bytes a graph reads, and whether its file is damaged: a damaged file is what
    this command exists to report, so it is listed, never raised."""
    if not path.is_file():
        return {}, False
    try:
        return referenced_bytes(onnx.load(str(path), load_external_data=False)), False
    except Exception:  # protobuf's DecodeError and friends: any unparsable file is "damaged"
        return {}, True


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def format_info(info: BundleInfo) -> str:
    m = info.manifest
    pre = m["preprocessing"]
    lines = [f"bundle {info.directory}: preset {m.get('preset', '?')}, input {pre['height']}x{pre['width']}, "
             f"format {m.get('format_version')}, created {m.get('created', '?')}"
             + (", UNTRAINED (random weights)" if m.get("untrained") else ""),
             "", "graphs (bytes read when loaded: graph file + weights):"]
    for g in info.graphs:
        where = ", ".join(f"{n} {_mb(b)}" for n, b in sorted(g.weights.items())) or "inside the graph file"
        where = "unknown: the graph file cannot be read (damaged)" if g.damaged else where
        lines.append(f"  {g.name:<18} {g.precision:<5} {g.file:<24} {_mb(g.graph_bytes + sum(g.weights.values())):>10}"
                     f"   weights: {where}")
    lines += ["", "weight files (each tensor stored once, shared by the graphs listed):"]
    shared = info.shared_files()
    for name, users in sorted(shared.items()):
        lines.append(f"  {name:<24} {_mb(_size(info.directory / name)):>10}   read by {', '.join(users)}")
    if not shared:
        lines.append("  none: every graph carries its own weights (a bundle from before shared weight files; "
                     "re-export with `tr2m-export onnx` to store each weight once)")
    lines += ["", "engines:"] + (_engine_lines(m) or ["  none (build them with `tr2m-export trt`)"])
    lines += ["", _totals(info), _check_line(info)]
    return "\n".join(lines)


def _engine_lines(manifest: dict) -> List[str]:
    return [f"  {e['graph']:<18} {e['precision']:<5} {e.get('flavour', '?')} {e.get('trt_version', '?')}, target "
            f"{e.get('target', '?')}, batch {e.get('batch')}: {e['file']}"
            for _, e in sorted(manifest.get("engines", {}).items())]


def _totals(info: BundleInfo) -> str:
    files = [p for p in info.directory.rglob("*") if p.is_file()]
    per_precision: Dict[str, set] = {}
    for g in info.graphs:
        per_precision.setdefault(g.precision, set()).update([g.file, *g.weights])
    parts = ", ".join(f"{p} graphs {_mb(sum(_size(info.directory / f) for f in names))}"
                      for p, names in sorted(per_precision.items()))
    return f"total {_mb(sum(p.stat().st_size for p in files))} in {len(files)} files ({parts})"


def _check_line(info: BundleInfo) -> str:
    bad: List[Tuple[str, str]] = [(n, s) for n, s in sorted(info.checks.items()) if s != "ok"]
    if not bad:
        return f"checksums: all {len(info.checks)} files match the manifest"
    listed = ", ".join(f"{n} {s}" for n, s in bad)
    return f"checksums: {len(bad)} of {len(info.checks)} files do not match: {listed} (re-export, or rebuild engines)"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
