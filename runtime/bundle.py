"""The bundle: a folder of graphs, engines and a manifest. The runtime reads nothing else.

The manifest (manifest.json) carries the contract: input size and normalization, graph files
with their input/output names and shapes, the text encoder's identity, precisions, versions,
and the sha256 of every file. `Bundle.open` refuses anything that does not check out.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from .atomic import atomic_write_bytes
from .trt_sidecar import ENGINES_DIR
from .errors import BundleError

FORMAT_NAME = "tr2m-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the bundle: its file, precision and I/O names -> shapes (-1 = dynamic)."""

    name: str
    file: str
    precision: str
    inputs: Dict[str, Tuple[Any, ...]]
    outputs: Dict[str, Tuple[Any, ...]]


@dataclass(frozen=True)
class Preprocessing:
    """How a frame becomes the image input (the manifest's "preprocessing" section): RGB pixels
    scaled to ``value_range``, resized to (height, width) as ``resize``/``align_corners`` say,
    laid out as ``layout``, then (x - mean) / std unless the graph normalizes itself
    (``normalized_in_graph``: the runtime then feeds the [0, 1] values)."""

    height: int
    width: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    resize: str = "bilinear"
    align_corners: bool = True
    normalized_in_graph: bool = False
    layout: str = "NCHW"
    color: str = "RGB"
    value_range: Tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        # What runtime.preprocess.Preprocessor does; anything else would be a silent wrong answer.
        supported = {"resize": "bilinear", "align_corners": True, "layout": "NCHW", "color": "RGB",
                     "value_range": (0.0, 1.0)}
        wrong = [f"{k}={getattr(self, k)!r}" for k, v in supported.items() if getattr(self, k) != v]
        if wrong:
            raise BundleError(f"the bundle's preprocessing asks for {', '.join(wrong)}, but this runtime feeds "
                              "RGB in [0, 1], NCHW, resized bilinear with align_corners=True: re-export the bundle")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: Dict[str, Any]) -> Path:
    """Add checksums of every listed file and write manifest.json atomically."""
    manifest = dict(manifest, format=FORMAT_NAME, format_version=FORMAT_VERSION)
    manifest["files"] = {name: sha256_file(directory / name) for name in sorted(_listed_files(manifest))}
    return atomic_write_bytes(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())


def _listed_files(manifest: Mapping[str, Any]) -> set:
    """Every file the manifest names for the runtime to read (engines themselves are checked
    against their sidecars, which are listed through extra_files)."""
    files = {graph["file"] for graph in manifest.get("graphs", {}).values()}
    if manifest.get("tokenizer"):
        files.add(manifest["tokenizer"])
    files |= {entry["sidecar"] for entry in manifest.get("engines", {}).values() if "sidecar" in entry}
    files |= {entry[k] for entry in manifest.get("openvino", {}).get("graphs", {}).values() for k in ("xml", "bin")}
    return files | set(manifest.get("extra_files", []))


class Bundle:
    """An opened, verified bundle folder."""

    def __init__(self, directory: Path, manifest: Dict[str, Any]):
        self.directory = directory
        self.manifest = manifest

    @classmethod
    def open(cls, directory: str | Path, *, verify: bool = True) -> "Bundle":
        """Read and check a bundle; `verify` also checks every file's sha256."""
        directory = Path(directory)
        manifest = _read_manifest(directory)
        bundle = cls(directory, manifest)
        try:
            bundle.check_contract()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise BundleError(f"{directory / MANIFEST} is malformed ({type(e).__name__}: {e}): re-export the bundle"
                              ) from e
        if verify:
            bundle.verify()
        return bundle

    def check_contract(self) -> None:
        """Every file the runtime may read is checksummed, and the text width agrees everywhere.
        Also reads every field the runtime relies on, so a malformed manifest fails here."""
        if not all(isinstance(self.manifest[k], dict) for k in ("files", "graphs", "text_encoder")):
            raise TypeError("'files', 'graphs' and 'text_encoder' must be JSON objects")
        for name in self.manifest["files"]:
            self.resolve(name)  # rejects paths escaping the bundle before any file is touched
        _ = self.preprocessing, self.text_encoder_id, self.text_dim  # a missing field fails here, not mid-run
        unlisted = sorted(_listed_files(self.manifest) - set(self.manifest["files"]))
        if unlisted:
            raise BundleError(f"manifest names {', '.join(unlisted)} but records no checksum for it (a hand-edited "
                              "manifest?): refusing to read it; re-export the bundle")
        widths = {f"{name}.{k}": spec[k]["text_emb"][-1] for name, spec in self.manifest["graphs"].items()
                  for k in ("inputs", "outputs") if "text_emb" in spec.get(k, {})}
        wrong = {k: v for k, v in widths.items() if isinstance(v, int) and v != self.text_dim}
        if wrong:
            found = ", ".join(f"{k} [..., {v}]" for k, v in sorted(wrong.items()))
            raise BundleError(f"the manifest's text encoder gives {self.text_dim}-d embeddings but {found}: the "
                              "bundle mixes parts of different exports; re-export it")
        span = self.manifest.get("display_range_m")
        if span is not None and not (len(span) == 2 and 0 <= float(span[0]) < float(span[1])):
            raise ValueError(f"display_range_m must be [min, max] metres with 0 <= min < max or null, got {span!r}")
        size = [self.preprocessing.height, self.preprocessing.width]
        sizes = {name: list(spec["inputs"]["image"][-2:]) for name, spec in self.manifest["graphs"].items()
                 if "image" in spec.get("inputs", {})}
        wrong = {k: v for k, v in sizes.items() if all(isinstance(d, int) for d in v) and v != size}
        if wrong:
            found = ", ".join(f"{k} takes {v[0]}x{v[1]}" for k, v in sorted(wrong.items()))
            raise BundleError(f"the manifest resizes frames to {size[0]}x{size[1]} but {found}: re-export the bundle")

    def resolve(self, name: str) -> Path:
        """A file named by the manifest, guaranteed to lie inside the bundle folder."""
        candidate = Path(name)
        root = self.directory.resolve()
        path = (root / candidate).resolve()
        if candidate.is_absolute() or root not in path.parents:
            raise BundleError(f"manifest names a file outside the bundle ({name!r}): refusing to read it")
        return path

    def verify(self) -> None:
        """Check that every listed file exists and matches its recorded sha256."""
        for name, expected in self.manifest.get("files", {}).items():
            path = self.resolve(name)
            fix = "rebuild its engines with `tr2m-export trt`" if name.startswith(f"{ENGINES_DIR}/") else "re-export it"
            if not path.is_file():
                raise BundleError(f"bundle {self.directory} is missing {name}: {fix}")
            if sha256_file(path) != expected:
                raise BundleError(f"bundle file {name} does not match its checksum (tampered or truncated): {fix}")

    def graph(self, name: str) -> GraphSpec:
        graphs = self.manifest["graphs"]
        if name not in graphs:
            raise BundleError(f"bundle has no {name!r} graph (it has: {', '.join(sorted(graphs))})")
        spec = graphs[name]
        return GraphSpec(
            name=name, file=spec["file"], precision=spec["precision"],
            inputs={k: tuple(v) for k, v in spec["inputs"].items()},
            outputs={k: tuple(v) for k, v in spec["outputs"].items()},
        )

    def graph_path(self, name: str) -> Path:
        return self.resolve(self.graph(name).file)

    def has_graph(self, name: str) -> bool:
        return name in self.manifest["graphs"]

    @property
    def preprocessing(self) -> Preprocessing:
        pre = self.manifest["preprocessing"]
        return Preprocessing(
            height=int(pre["height"]), width=int(pre["width"]), mean=tuple(pre["mean"]), std=tuple(pre["std"]),
            resize=pre.get("resize", "bilinear"), align_corners=bool(pre.get("align_corners", True)),
            normalized_in_graph=bool(pre.get("normalized_in_graph", False)), layout=pre.get("layout", "NCHW"),
            color=pre.get("color", "RGB"), value_range=tuple(float(v) for v in pre.get("value_range", (0.0, 1.0))),
        )

    @property
    def text_encoder_id(self) -> str:
        """The text encoder's identity (name + weights hash): the caption cache's key."""
        return self.manifest["text_encoder"]["id"]

    @property
    def text_dim(self) -> int:
        return int(self.manifest["text_encoder"]["dim"])

    @property
    def untrained(self) -> bool:
        return bool(self.manifest.get("untrained", False))

    @property
    def tokenizer_path(self) -> Optional[Path]:
        name = self.manifest.get("tokenizer")
        return self.resolve(name) if name else None


def _read_manifest(directory: Path) -> Dict[str, Any]:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise BundleError(f"bundle folder not found: {directory} (create one with `tr2m-export onnx`)")
    if not path.is_file():
        raise BundleError(f"{directory} is not a bundle: no {MANIFEST} (create one with `tr2m-export onnx`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}): re-export the bundle") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{path} is not a tr2m bundle manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"bundle format version {version} is not supported by this runtime (it reads version {FORMAT_VERSION}): "
            "re-export the bundle with this tr2m, or upgrade tr2m"
        )
    for key in ("graphs", "preprocessing", "text_encoder", "files"):
        if key not in manifest:
            raise BundleError(f"{path} lacks the {key!r} section: re-export the bundle")
    return manifest
