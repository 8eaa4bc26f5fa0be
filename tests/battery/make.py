"""Bad inputs, generated on the spot into a case's folder: videos, images, checkpoints, bundles.

Nothing here is copied from ../shared/data; every file is made with PyAV, OpenCV, numpy or torch.
"""
from __future__ import annotations

import builtins
import json
import pickle
import shutil
import struct
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional, Sequence

import av
import cv2
import numpy as np


# ------------------------------------------------------------------------------ videos
def frames(n: int, size=(48, 64), seed: int = 0, *, noise: bool = False) -> list:
    """n uint8 RGB frames [H, W, 3] with moving structure (they compress like real video), or
    fresh noise each (every frame then takes about the same number of bytes)."""
    h, w = size
    rng = np.random.default_rng(seed)
    if noise:
        return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    y, x = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base + np.stack([(x + 3 * i) % 128, (y + i) % 128, (x + y) % 64], -1).astype(np.uint8))
            for i in range(n)]


def video(path: Path, n: int = 10, size=(48, 64), fps: int = 10, *, pts_ms: Optional[Sequence[int]] = None,
          rotation: int = 0, faststart: bool = False, noise: bool = False) -> Path:
    """H.264 mp4 of n generated frames; pts_ms gives each frame's time (variable frame rate);
    rotation writes a display matrix; faststart puts the index before the data."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=1000 if pts_ms is not None else fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}  # the 8K clip would take seconds otherwise
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        if n == 0:
            container.start_encoding()
        for i, rgb in enumerate(frames(n, size, noise=noise)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def unknown_codec(path: Path) -> Path:
    """A Matroska file whose video track names a codec no decoder knows."""
    video(path.with_suffix(".mp4"), n=3)
    with av.open(str(path.with_suffix(".mp4"))) as src, av.open(str(path), "w", format="matroska") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    path.with_suffix(".mp4").unlink()
    path.write_bytes(path.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_TR2M/UNKNOWN!"))
    return path


def video_frames(path: Path) -> tuple:
    """(decoded frame count, height, width) of a video; raises if it does not play."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.height, stream.width


# ------------------------------------------------------------------------------ images
def image(path: Path, array: np.ndarray) -> Path:
    ok, data = cv2.imencode(path.suffix, array)
    assert ok, path
    path.write_bytes(data.tobytes())
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""
    ok, data = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    png = bytearray(data.tobytes())
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # IHDR CRC
    path.write_bytes(bytes(png))
    return path


def cut(src: Path, dst: Path, fraction: float) -> Path:
    """The first ``fraction`` of src's bytes, as dst."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def flip_byte(path: Path, at: float = 0.5) -> Path:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def npy_shape(npz: Path, name: str = "depth") -> tuple:
    """The shape of one array in an .npz, read from its header only (cheap for huge maps)."""
    import zipfile

    with zipfile.ZipFile(npz) as z, z.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(f)[0]


# ------------------------------------------------------------------------------ checkpoints
class Planted:
    """Unpickling this object creates ``sentinel``: the proof that code from a file ran."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return builtins.open, (self.sentinel, "w")


def head_state() -> dict:
    """The tiny preset's head state dict (random weights), keys as the authors' release names them."""
    import torch

    from tr2m.config import get_preset
    from tr2m.head import ScaleMapModel

    torch.manual_seed(0)
    return {k: v.clone() for k, v in ScaleMapModel(get_preset("tiny").head).state_dict().items()}


def tiny_head():
    from tr2m.config import get_preset
    from tr2m.head import ScaleMapModel

    return ScaleMapModel(get_preset("tiny").head)


def checkpoint(path: Path, edit: Callable[[dict], object]) -> Path:
    """torch.save({"state_dict": edit(tiny head state)}) as the authors' format."""
    import torch

    state = head_state()
    torch.save({"state_dict": edit(state) or state}, path)
    return path


def evil_pickle(path: Path, sentinel: Path, *, torch_zip: bool) -> Path:
    """A checkpoint that runs code when unpickled: a plain pickle, or torch.save's zip format."""
    payload = {"state_dict": {"align_mlp.a_fc.weight": Planted(sentinel)}}
    if torch_zip:
        import torch

        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path


# ------------------------------------------------------------------------------ bundles
def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def write_manifest(bundle: Path, data: dict, *, resign: bool = False) -> None:
    """Rewrite manifest.json as given; resign recomputes every checksum (as an attacker could)."""
    if resign:
        from runtime.bundle import write_manifest as signed

        signed(bundle, data)
    else:
        (bundle / "manifest.json").write_text(json.dumps(data, indent=2))


def edit_manifest(bundle: Path, edit: Callable[[dict], None], *, resign: bool = False) -> dict:
    data = manifest(bundle)
    edit(data)
    write_manifest(bundle, data, resign=resign)
    return data


def graph_with_external_data(path: Path, location: str) -> Path:
    """A one-node ONNX graph (y = x + w) whose weight w lives in an external file at ``location``."""
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in {"location": location, "offset": "0", "length": "16"}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", io[:1], io[1:], [weight])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def rtx_available() -> bool:
    try:
        import tensorrt_rtx  # noqa: F401
    except ImportError:
        return False
    return True


def engine_paths(bundle: Path) -> tuple:
    """(engine, sidecar) of the bundle's single image engine."""
    entry = next(iter(manifest(bundle)["engines"].values()))
    return bundle / entry["file"], bundle / entry["sidecar"]


def copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))
