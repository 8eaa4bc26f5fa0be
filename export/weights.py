"""One weight file per precision, shared by every graph of a bundle.

The fused image graph holds the same Depth Anything, DINOv2 and head tensors as the keyframe
halves (relative, scale_shift). ONNX external data lets several graphs point at the same bytes
(location + offset + length), so `WeightStore` writes each distinct tensor once: a tensor whose
bytes are already in the file is pointed at the existing copy. Graph files then hold only nodes
and small constants. ONNX Runtime, OpenVINO and TensorRT's parser all read external data; the
manifest checksums the weight file like any graph.

Offsets of large tensors are aligned to 4 KiB so a runtime may map them straight from the page cache.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Iterator, Optional, Set, Tuple

import onnx
from onnx import numpy_helper

ALIGN = 4096  # for tensors of at least ALIGN_FROM bytes; smaller ones are 64-byte aligned
ALIGN_FROM = 1 << 16
MIN_BYTES = 1024  # smaller tensors (shape constants, scalars) stay inside the graph file, as onnx does
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def weight_file(precision: str) -> str:
    """The bundle file holding the weights of every graph in `precision` (fp32, fp16)."""
    return f"weights.{precision}.data"


class WeightStore:
    """An append-only external-data file where each distinct tensor is stored once.

    path: the file (created on first write). Use `externalize(model)` on each graph before saving
    it into the same folder; the graph's initializers then point into this file.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._index: Dict[str, Tuple[int, int]] = {}  # sha256 of the bytes -> (offset, length)
        self.size = self.path.stat().st_size if self.path.exists() else 0
        self.requested = 0  # bytes the graphs asked to store, before sharing

    def externalize(self, model: onnx.ModelProto, names: Optional[Set[str]] = None) -> int:
        """Move every initializer of at least MIN_BYTES (only those in `names` if given) into the
        file, in place; returns the bytes added. Initializers kept in another external file of the
        same folder (a scratch store) are moved here too, one tensor at a time."""
        before = self.size
        with open(self.path, "ab") as out:
            for tensor in _large_initializers(model, self.path.name):
                if names is not None and tensor.name not in names:
                    continue
                data = tensor_bytes(tensor, self.path.parent)
                offset = self._place(out, data)
                _point_at(tensor, self.path.name, offset, len(data))
        return self.size - before

    def _place(self, out, data: bytes) -> int:
        self.requested += len(data)
        key = hashlib.sha256(data).hexdigest()
        if key not in self._index:
            padding = -self.size % (ALIGN if len(data) >= ALIGN_FROM else 64)
            out.write(b"\0" * padding + data)
            self._index[key] = (self.size + padding, len(data))
            self.size += padding + len(data)
        return self._index[key][0]


def _large_initializers(model: onnx.ModelProto, location: str) -> Iterator[onnx.TensorProto]:
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.STRING or _location(tensor) == location:
            continue
        if _nbytes(tensor) >= MIN_BYTES:
            yield tensor


def _location(tensor: onnx.TensorProto) -> str:
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return ""
    return {entry.key: entry.value for entry in tensor.external_data}.get("location", "")


def _nbytes(tensor: onnx.TensorProto) -> int:
    info = {entry.key: entry.value for entry in tensor.external_data}
    if "length" in info:
        return int(info["length"])
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def tensor_bytes(tensor: onnx.TensorProto, directory: Path) -> bytes:
    """A tensor's raw little-endian bytes, read from its external file in `directory` if it has one."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        info = {entry.key: entry.value for entry in tensor.external_data}
        with open(directory / info["location"], "rb") as f:
            f.seek(int(info.get("offset", 0)))
            return f.read(int(info["length"]) if "length" in info else -1)
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).tobytes()  # typed fields (float_data, ...) -> little-endian raw bytes


def _point_at(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    for name in _TYPED_FIELDS:
        tensor.ClearField(name)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def referenced_bytes(model: onnx.ModelProto) -> Dict[str, int]:
    """Bytes a graph reads from each external file (a graph loaded without its external data)."""
    totals: Dict[str, int] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        totals[_location(tensor)] = totals.get(_location(tensor), 0) + _nbytes(tensor)
    return totals


# Operands that hold a layer's weights, by op: (op_type, input index).
_WEIGHT_OPERANDS = {("MatMul", 1), ("Gemm", 1), ("Conv", 1), ("ConvTranspose", 1), ("Gather", 0)}


def weight_operands(model: onnx.ModelProto) -> Set[str]:
    """Initializers used only as layer weights (MatMul/Gemm/Conv B, embedding tables): the bulk of
    the bytes, and values that graph simplifiers do not inspect (unlike biases and constants)."""
    uses: Dict[str, Set[Tuple[str, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            uses.setdefault(name, set()).add((node.op_type, index))
    initializers = {t.name for t in model.graph.initializer}
    return {name for name, use in uses.items() if name in initializers and use <= _WEIGHT_OPERANDS}


def external_files(path: Path) -> list:
    """Files an ONNX graph reads beside itself (external data), relative to its folder."""
    return sorted(referenced_bytes(onnx.load(str(path), load_external_data=False)))


def graph_bytes(path: Path) -> int:
    """Bytes a graph file loads: the file itself plus the external data it points at."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    return path.stat().st_size + sum(referenced_bytes(model).values())
