"""Session fixtures shared by every test package: tiny random models and the real samples."""
from __future__ import annotations

import os
from pathlib import Path

import signal

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("TR2M_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_reaches_tests():
    """Let Ctrl-C tests work when the suite itself was started with SIGINT ignored.

    A shell starts background jobs (nohup, `&`, some CI runners) with SIGINT ignored, and
    children inherit that, so a SIGINT sent to a CLI under test would do nothing. A Python
    handler here makes SIGINT raise KeyboardInterrupt in this process, and exec resets it to
    the default in subprocesses, which then install their own.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


def _require_shared() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real samples not found at {SHARED_DATA} (set TR2M_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real RGB-depth samples and videos (read-only)."""
    return _require_shared()


@pytest.fixture(scope="session")
def real_frames(shared_data) -> list:
    """Three real RGB frames of different sizes (NYU, KITTI, SUN RGB-D) as uint8 [H,W,3]."""
    import cv2

    paths = [
        shared_data / "metric3d_nyu" / "rgb" / "rgb_00000.jpg",
        shared_data / "metric3d_kitti" / "rgb" / "0000000005.png",
        shared_data / "open3d_testdata_rgbd" / "other_formats" / "SUN_color.jpg",
    ]
    return [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths]


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny preset, seeded random weights given visible structure (randomize_for_demo); shared: never mutate."""
    import torch
    import tr2m

    torch.manual_seed(0)
    return tr2m.randomize_for_demo(tr2m.create_model("tiny", pretrained=False))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def real_frame_paths(shared: Path) -> list:
    return [
        shared / "metric3d_nyu" / "rgb" / "rgb_00000.jpg",
        shared / "metric3d_kitti" / "rgb" / "0000000005.png",
        shared / "metric3d_nyu" / "rgb" / "rgb_00050.jpg",
    ]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, shared_data):
    """A tiny random-init bundle with every graph and the FP16 image graph (built once)."""
    from export.bundle import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    report = export_bundle(
        ExportOptions(out=out, preset="tiny", random_init=True, half=True, parity_frames=real_frame_paths(shared_data)),
        log=lambda message: None,
    )
    return report


JOIN_SIZE = (320, 180)  # (width, height): the two joined clips, scaled alike


def _clip_frames(path: Path, limit: int | None = None) -> list:
    import cv2
    from runtime.sources import open_source

    with open_source(str(path)) as source:
        frames = [cv2.resize(f.rgb, JOIN_SIZE, interpolation=cv2.INTER_AREA) for f in source]
    return frames[:limit]


@pytest.fixture(scope="session")
def joined_clips(shared_data) -> tuple:
    """Frames of two real clips at 320x180: (bedroom, 120 frames; roller coaster, 70 frames)."""
    videos = shared_data / "videos"
    return _clip_frames(videos / "sam2_bedroom.mp4", 120), _clip_frames(videos / "vda_davis_rollercoaster.mp4")


@pytest.fixture(scope="session")
def joined_video(tmp_path_factory, joined_clips) -> tuple:
    """(path, cut frame): an H.264 video at 30 fps of one clip then the other; the cut is the first
    frame of the second clip."""
    from runtime.demo import write_video

    first, second = joined_clips
    path = tmp_path_factory.mktemp("videos") / "joined.mp4"
    write_video(path, first + second, fps=30)
    return path, len(first)


@pytest.fixture(scope="session")
def tiny_captioners(tmp_path_factory) -> tuple:
    """(describer folder, object-lister folder): tiny random LLaVA-NeXT and Mask2Former, saved once."""
    from tr2m.captioning.tiny import build_tiny_describer, build_tiny_lister

    root = tmp_path_factory.mktemp("captioners")
    return build_tiny_describer(root / "describer"), build_tiny_lister(root / "objects")


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core box, tiny models run many times faster without the
    threads of a pool spinning against each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
