"""TensorRT engine sidecars: what an engine was built for, checked before it is deserialized.

A serialized TensorRT engine runs only on the GPU architecture and the exact TensorRT version that
built it; deserializing a foreign engine fails late and obscurely (or crashes). So every engine in
a bundle (``engines/KEY.engine``) has a sidecar ``engines/KEY.json`` written by
``export.trt.build_engine``: the graph, precision, TensorRT flavour and version, target compute
capability, profile shapes, and the sha256 of both the engine and the ONNX it came from. The
runtime reads the sidecar, calls ``check_engine`` against the current GPU and TensorRT, verifies
the engine's checksum, and only then hands the bytes to TensorRT.

Torch-free and TensorRT-free: this module never imports tensorrt (``current_gpu_cc`` asks the CUDA
driver directly through ctypes).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .atomic import atomic_write_bytes
from .errors import BundleError

SIDECAR_FORMAT = "tr2m-engine"
SIDECAR_VERSION = 1
ENGINES_DIR = "engines"


@dataclass(frozen=True)
class FlavourId:
    """How a TensorRT flavour is named, imported and installed (no build logic here)."""

    name: str    # registry key: tensorrt10, tensorrt11, rtx
    module: str  # Python module to import
    label: str   # for messages
    extra: str   # pip extra of tr2m that installs it


# One flavour per engine format: engines of different flavours or majors are never interchangeable.
FLAVOUR_IDS: Dict[str, FlavourId] = {
    "tensorrt10": FlavourId("tensorrt10", "tensorrt", "TensorRT 10", "tensorrt"),
    "tensorrt11": FlavourId("tensorrt11", "tensorrt", "TensorRT 11", "tensorrt"),
    "rtx": FlavourId("rtx", "tensorrt_rtx", "TensorRT for RTX", "rtx"),
}


def flavour_for_module(module_name: str, version: str) -> str:
    """The flavour key of an imported TensorRT module: ("tensorrt", "10.3.0") -> "tensorrt10"."""
    if module_name == "tensorrt_rtx":
        return "rtx"
    major = str(version).split(".")[0]
    name = f"tensorrt{major}"
    if name not in FLAVOUR_IDS:
        supported = ", ".join(sorted(f.label for f in FLAVOUR_IDS.values()))
        raise EngineError(f"TensorRT {version} is not supported (supported: {supported})")
    return name


def flavour_label(flavour: str, version: str) -> str:
    """("rtx", "1.7.1.116") -> "TensorRT for RTX 1.7.1.116"; ("tensorrt10", "10.3.0") -> "TensorRT 10.3.0"."""
    return f"TensorRT for RTX {version}" if flavour == "rtx" else f"TensorRT {version}"


class EngineError(BundleError):
    """An engine is unusable here: built for another GPU or TensorRT, corrupt, or its sidecar is bad."""


@dataclass(frozen=True)
class EngineMeta:
    """The content of an engine sidecar (engines/KEY.json).

    profile: input name -> {"min": shape, "opt": shape, "max": shape} (full shapes, batch first).
    batch: (min, opt, max). target: "sm86". layer_precisions: compute layers per data type.
    """

    graph: str
    engine: str
    engine_sha256: str
    onnx: str
    onnx_sha256: str
    flavour: str
    trt_version: str
    target: str
    precision: str
    batch: Tuple[int, int, int]
    profile: Dict[str, Dict[str, Tuple[int, ...]]]
    key: str = ""
    typing: str = "strong"
    layer_precisions: Dict[str, int] = field(default_factory=dict)
    build_seconds: float = 0.0
    built: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["batch"] = list(self.batch)
        data["profile"] = {k: {s: list(v) for s, v in p.items()} for k, p in self.profile.items()}
        return {"format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "sidecar") -> "EngineMeta":
        if not isinstance(data, Mapping) or data.get("format") != SIDECAR_FORMAT:
            raise EngineError(f"{origin} is not a tr2m engine sidecar: rebuild the engine with `tr2m-export trt`")
        if data.get("format_version") != SIDECAR_VERSION:
            raise EngineError(
                f"{origin} has sidecar version {data.get('format_version')}, this runtime reads "
                f"{SIDECAR_VERSION}: rebuild the engine with `tr2m-export trt`")
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("graph", "engine", "engine_sha256", "flavour", "trt_version", "target", "precision")
                   if k not in data]
        if missing:
            raise EngineError(f"{origin} lacks {', '.join(missing)}: rebuild the engine with `tr2m-export trt`")
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["batch"] = tuple(int(b) for b in data.get("batch", (1, 1, 1)))
        kwargs["profile"] = {k: {s: tuple(int(d) for d in v) for s, v in p.items()}
                             for k, p in data.get("profile", {}).items()}
        kwargs.setdefault("onnx", "")
        kwargs.setdefault("onnx_sha256", "")
        return cls(**kwargs)

    def describe(self) -> str:
        return f"{self.target} with {flavour_label(self.flavour, self.trt_version)}"


SidecarLike = Union[EngineMeta, Mapping[str, Any], str, Path]


def engine_key(graph: str, *, target: str, flavour: str, trt_version: str, precision: str,
               shape: Tuple[int, ...], batch: Tuple[int, int, int]) -> str:
    """The file stem of an engine: every property that makes engines non-interchangeable.

    shape: the non-batch dims of the graph's main input, e.g. (3, 434, 560).
    Example: ``image_fp16.sm86.rtx-1.7.1.116.fp16.3x434x560.b1-1-8``.
    """
    dims = "x".join(str(int(d)) for d in shape) or "scalar"
    return f"{graph}.{normalize_cc(target)}.{flavour}-{trt_version}.{precision}.{dims}.b{batch[0]}-{batch[1]}-{batch[2]}"


def write_sidecar(path: Path, meta: EngineMeta) -> Path:
    """Write a sidecar atomically."""
    return atomic_write_bytes(path, json.dumps(meta.to_dict(), indent=2, sort_keys=True).encode())


def read_sidecar(path: Union[str, Path]) -> EngineMeta:
    """Read and validate engines/KEY.json -> EngineMeta (EngineError if absent or malformed)."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"engine sidecar {path} not found: rebuild the engine with `tr2m-export trt`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineError(f"engine sidecar {path} is not valid JSON ({e}): rebuild the engine") from e
    return EngineMeta.from_dict(data, origin=str(path))


def normalize_cc(cc: Union[str, int, Tuple[int, int]]) -> str:
    """A compute capability as "smXY": accepts "sm86", "SM_86", "8.6", 86, (8, 6); "sm120" for 12.0."""
    if isinstance(cc, tuple):
        major, minor = (int(v) for v in cc)
        return f"sm{major}{minor}"
    text = str(cc).strip().lower().replace("_", "")
    match = re.fullmatch(r"(?:sm)?(\d+)\.(\d)", text)
    if match:
        return f"sm{int(match.group(1))}{match.group(2)}"
    match = re.fullmatch(r"(?:sm)?(\d{2,3})", text)
    if match:
        return f"sm{match.group(1)}"
    raise ValueError(f"not a compute capability: {cc!r} (write it as sm86 or 8.6)")


def check_engine(sidecar: SidecarLike, gpu_cc: Union[str, int, Tuple[int, int], None], trt_version: str,
                 *, flavour: Optional[str] = None) -> EngineMeta:
    """Refuse an engine that this GPU / TensorRT cannot run, before anything is deserialized.

    sidecar: EngineMeta, its dict, or the sidecar path. gpu_cc: the current GPU ("sm86", "8.6",
    (8, 6)); None means no GPU. trt_version: the installed TensorRT's ``__version__``.
    flavour: the installed flavour key (tensorrt10, tensorrt11, rtx); None skips that check.
    Returns the EngineMeta; raises EngineError naming what differs and the rebuild command.
    """
    meta = _as_meta(sidecar)
    rebuild = f"rebuild it here with `{rebuild_command(meta)}`"
    name = meta.engine or meta.key
    if gpu_cc is None:
        raise EngineError(f"engine {name} needs a CUDA GPU ({meta.target}) and none was found")
    here_cc = normalize_cc(gpu_cc)
    if flavour is not None and flavour != meta.flavour:
        raise EngineError(f"engine {name} was built for {meta.describe()}, but this runtime uses "
                          f"{flavour_label(flavour, trt_version)}: {rebuild}")
    if normalize_cc(meta.target) != here_cc:
        raise EngineError(f"engine {name} was built for {meta.describe()}; this GPU is {here_cc}: {rebuild}")
    if str(meta.trt_version) != str(trt_version):
        raise EngineError(f"engine {name} was built for {meta.describe()}; this machine has "
                          f"{trt_version} (engines only run on the exact version that built them): {rebuild}")
    return meta


def base_graph(graph: str) -> str:
    """The bundle graph a precision variant derives from: image_fp16 -> image, image_int8 -> image."""
    for suffix in ("_fp16", "_int8"):
        if graph.endswith(suffix):
            return graph[: -len(suffix)]
    return graph


def rebuild_command(meta: EngineMeta) -> str:
    """The CLI line that rebuilds an engine like ``meta`` on the current machine."""
    precision = {"fp16": " --fp16", "int8": " --int8"}.get(meta.precision, "")
    flavour = "rtx" if meta.flavour == "rtx" else "tensorrt"
    return f"tr2m-export trt --bundle BUNDLE --graphs {base_graph(meta.graph)}{precision} --flavour {flavour}"


def _as_meta(sidecar: SidecarLike) -> EngineMeta:
    if isinstance(sidecar, EngineMeta):
        return sidecar
    if isinstance(sidecar, (str, Path)):
        return read_sidecar(sidecar)
    return EngineMeta.from_dict(sidecar)


def sha256_bytes(data) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


def load_engine_bytes(sidecar_path: Union[str, Path], *, gpu_cc, trt_version: str,
                      flavour: Optional[str] = None) -> Tuple[EngineMeta, bytes]:
    """Check the sidecar against this machine, then read the engine and verify its sha256.

    Returns (meta, engine bytes) ready for ``IRuntime.deserialize_cuda_engine``; raises
    EngineError (nothing deserialized) when the engine does not belong here or is damaged.
    """
    sidecar_path = Path(sidecar_path)
    meta = check_engine(read_sidecar(sidecar_path), gpu_cc, trt_version, flavour=flavour)
    engine_path = sidecar_path.parent / Path(meta.engine).name
    if not engine_path.is_file():
        raise EngineError(f"engine file {engine_path} is missing: rebuild it with `tr2m-export trt`")
    data = engine_path.read_bytes()
    if sha256_bytes(data) != meta.engine_sha256:
        raise EngineError(f"engine file {engine_path} does not match its sidecar checksum (truncated or "
                          "replaced): rebuild it with `tr2m-export trt`")
    return meta, data


def engine_request(bundle, graph: str) -> Tuple[str, str]:
    """A graph name as the Engine asks for it -> (base graph, precision) an engine must have.

    image_fp16 -> (image, fp16): on TensorRT 10 that engine may come from image_fp16.onnx or,
    with the weak FP16 flag, from image.onnx (recorded as graph image, precision fp16); both fit.
    image -> (image, fp32): an FP16 engine built from image.onnx must never stand in for it.
    text -> (text, its exported precision).
    """
    base = base_graph(graph)
    if base != graph:
        return base, graph[len(base) + 1:]
    return base, bundle.graph(graph).precision if bundle.has_graph(graph) else "fp32"


def recorded_engines(bundle, graph: str) -> list:
    """Manifest entries of the engines that can serve ``graph`` (see `engine_request`), widest batch first."""
    base, precision = engine_request(bundle, graph)
    entries = [e for e in bundle.manifest.get("engines", {}).values()
               if base_graph(e.get("graph", "")) == base and e.get("precision") == precision]
    return sorted(entries, key=lambda e: -int(e.get("batch", [0, 0, 0])[-1]))


@dataclass(frozen=True)
class EngineChoice:
    """The engine picked for a graph: its sidecar content and files, and the flavour that runs it."""

    meta: EngineMeta
    sidecar: Path
    engine: Path
    flavour: str


def select_engine(bundle, graph: str, *, versions: Mapping[str, str], gpu_cc=None, device: int = 0) -> EngineChoice:
    """The engine of ``graph`` (base graph AND precision) that this GPU and an installed TensorRT can run.

    versions: installed flavour -> version, e.g. {"tensorrt10": "10.3.0", "rtx": "1.7.1.116"} (both
    flavours may be installed; each engine is checked against the one that built it). gpu_cc:
    override of the GPU's compute capability (default: asked from the CUDA driver). Only sidecars
    are read here; the engine bytes are checksummed by `load_engine_bytes` on the read that
    deserializes them. Raises EngineError saying why none fits and how to rebuild.
    """
    entries = recorded_engines(bundle, graph)
    base, precision = engine_request(bundle, graph)
    if not entries:
        raise EngineError(f"the bundle has no {precision} TensorRT engine for the {base} graph: build one with "
                          f"`tr2m-export trt --bundle {bundle.directory} --graphs {base}"
                          f"{' --' + precision if precision != 'fp32' else ''}`")
    gpu = gpu_cc if gpu_cc is not None else current_gpu_cc(device)
    reasons = []
    for entry in entries:
        sidecar = bundle.resolve(entry["sidecar"])
        try:
            meta = read_sidecar(sidecar)
            here = versions.get(meta.flavour)
            if here is None:
                raise EngineError(f"engine {meta.engine} was built for {meta.describe()}, and "
                                  f"{FLAVOUR_IDS[meta.flavour].label if meta.flavour in FLAVOUR_IDS else meta.flavour}"
                                  f" is not installed here ({_installed(versions)})")
            check_engine(meta, gpu, here, flavour=meta.flavour)
            engine = sidecar.parent / Path(meta.engine).name
            if not engine.is_file():
                raise EngineError(f"engine file {engine} is missing: rebuild it with `tr2m-export trt`")
        except EngineError as e:
            reasons.append(str(e))
            continue
        return EngineChoice(meta, sidecar, engine, meta.flavour)
    more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
    raise EngineError(f"none of the {len(entries)} {base} {precision} engines fits this machine "
                      f"({gpu or 'no GPU'}, {_installed(versions)}): {reasons[0]}{more}")


def _installed(versions: Mapping[str, str]) -> str:
    return ", ".join(flavour_label(f, v) for f, v in versions.items()) or "no TensorRT installed"


# ------------------------------------------------------------------ the current GPU, via the driver
_CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 75, 76  # CUdevice_attribute (cuda.h)


def current_gpu_cc(device: int = 0) -> Optional[str]:
    """The compute capability of CUDA device ``device`` as "smXY", or None without a driver/GPU.

    Asks the CUDA driver (libcuda) directly, so it needs neither torch nor TensorRT nor the
    CUDA toolkit; honours CUDA_VISIBLE_DEVICES like every CUDA program.
    """
    lib = _load_libcuda()
    if lib is None:
        return None
    try:
        if lib.cuInit(0) != 0:
            return None
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or device >= count.value:
            return None
        handle, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        if lib.cuDeviceGet(ctypes.byref(handle), device) != 0:
            return None
        if (lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, handle) != 0
                or lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, handle) != 0):
            return None
    except (AttributeError, OSError):
        return None
    return f"sm{major.value}{minor.value}"


def _load_libcuda():
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    found = ctypes.util.find_library("cuda")
    for name in names + ([found] if found else []):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None
