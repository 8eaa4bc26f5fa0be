"""Helpers shared by the runtime I/O tests (imported explicitly; deliberately not a conftest).

Real inputs are read from the shared data folder (outside the repository), never copied into the
repository; ``TR2M_SHARED_DATA`` overrides its location.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import time
from pathlib import Path

import av
import numpy as np
import pytest

from runtime.errors import OutputError
from runtime.sinks import Sink

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("TR2M_SHARED_DATA", REPO.parent / "shared" / "data"))
BEDROOM = DATA / "videos" / "sam2_bedroom.mp4"          # H.264 960x540, 30 fps, 200 frames
COFFEE = DATA / "videos" / "sam2_04_coffee.mp4"         # H.264 1280x720, 29.97 fps, + AAC audio
ROLLERCOASTER = DATA / "videos" / "vda_davis_rollercoaster.mp4"  # MPEG-4 Part 2, 24 fps
NYU_RGB = DATA / "metric3d_nyu" / "rgb" / "rgb_00000.jpg"        # 480x640 JPEG
NYU_DEPTH = DATA / "metric3d_nyu" / "depth" / "sync_depth_00000.png"  # 16-bit gray PNG
UNIDEPTH_RGB = DATA / "unidepth_demo" / "rgb.png"                # 480x640 8-bit PNG


def require(path: Path) -> Path:
    """path, or skip the test when the shared data folder is not there."""
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    return path


def first_frames(path: Path, n: int) -> list:
    """The first n Frames of a real video (short clips keep the tests fast)."""
    from runtime.sources import open_source

    with open_source(require(path)) as source:
        return list(itertools.islice(source, n))


def synthetic_depth(rgb: np.ndarray, lo: float = 0.5, hi: float = 5.0) -> np.ndarray:
    """float32 [H, W] metres in [lo, hi] that follows the frame's brightness (real structure)."""
    gray = rgb.astype(np.float32).mean(axis=2) / 255.0
    return (lo + (hi - lo) * gray).astype(np.float32)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, rotation: int = 0,
                hflip: bool = False) -> Path:
    """Encode uint8 RGB frames (even sizes) as H.264 mp4 with an optional display matrix."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation or hflip:
            stream.set_display_rotation(rotation, hflip=hflip)
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def remux_head(src: Path, dst: Path, n_packets: int) -> Path:
    """Copy the first n video packets (no re-encode) into an mp4 with the index at the front
    (faststart), so that cutting the file's tail leaves a decodable but truncated video."""
    with av.open(str(src)) as inp, av.open(str(dst), "w",
                                          options={"movflags": "faststart"}) as out:
        stream_in = inp.streams.video[0]
        stream_out = out.add_stream_from_template(stream_in)
        for packet in itertools.islice((p for p in inp.demux(stream_in) if p.dts is not None),
                                       n_packets):
            packet.stream = stream_out
            out.mux(packet)
    return dst


def count_video_frames(path: Path) -> tuple[int, int, int]:
    """(decoded frame count, width, height) of a video file, decoded with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        return n, stream.width, stream.height


# ------------------------------------------------------------------------- caption encoders
ENCODER_ID = "test-clip:fake:dim8"
DIM = 8


def fake_embedding(caption: str, dim: int = DIM) -> np.ndarray:
    """A deterministic float32 [dim] vector per caption (what a text encoder would return)."""
    seed = int.from_bytes(hashlib.sha256(caption.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class CountingEncoder:
    """compute() for CaptionCache that records every call."""

    def __init__(self, dim: int = DIM, delay_s: float = 0.0) -> None:
        self.dim, self.delay_s = dim, delay_s
        self.calls: list[list[str]] = []

    def __call__(self, captions: list[str]) -> np.ndarray:
        self.calls.append(list(captions))
        time.sleep(self.delay_s)
        return np.stack([fake_embedding(c, self.dim) for c in captions])

    @property
    def computed(self) -> list[str]:
        return [c for call in self.calls for c in call]


def cache_writer_process(directory: str, rounds: int, keys_per_round: int, barrier) -> None:
    """Child process for the concurrency test. Per round both processes start together and walk
    the same new keys one by one, so each often reads a key while the other is writing it.
    Any cache warning (a partial or corrupt file seen) is raised as an error (exit code 1)."""
    import warnings

    from runtime.cache import CaptionCache
    from runtime.errors import Tr2mRuntimeWarning

    warnings.simplefilter("error", Tr2mRuntimeWarning)
    try:
        for r in range(rounds):
            keys = [f"round {r} caption {i}" for i in range(keys_per_round)]
            barrier.wait(timeout=30)
            cache = CaptionCache(ENCODER_ID, DIM, directory)
            for key in keys:
                got = cache.get_or_compute([key], CountingEncoder())
                assert np.array_equal(got[0], fake_embedding(key))
    except BaseException:
        barrier.abort()  # release the other process at once instead of at the timeout
        raise


def prepared(folder, **options):
    """Outputs under folder with a fixed range and 10 fps, prepared (the folder exists)."""
    from runtime.output_folder import Outputs

    outputs = Outputs(folder=folder, range_m=(0.5, 10.0), fps=10.0, **options)
    outputs.prepare()
    return outputs


class FailingSink(Sink):
    """A sink whose write number `fail_at` raises OutputError("disk full"); records how it ended."""

    def __init__(self, fail_at):
        self.fail_at, self.finished = fail_at, None

    def _write(self, frame, depth_m, extras):
        if self.frames_written == self.fail_at:
            raise OutputError("disk full")

    def close(self):
        self.finished = "close"

    def abort(self):
        self.finished = "abort"
