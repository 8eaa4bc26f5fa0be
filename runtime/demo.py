"""The embedded default: `tr2m-run --demo` runs the whole path offline on a fresh machine.

Everything the demo needs is made here, once, and kept under the user cache folder
(``<user cache>/tr2m/demo/<tr2m version>-bundle<format>/``, e.g. ~/.cache/tr2m/demo/...):

* ``corridor.mp4``: a 4 s, 15 fps, 640x360 H.264 video rendered with numpy (a ray-cast corridor
  with a tiled floor, brick walls, ceiling lights and three crates, the camera walking forward
  and swaying), so the demo input has real perspective and parallax;
* ``bundle-tiny/``: when no ``--bundle`` is given, the tiny preset exported with random weights
  (``tr2m-export onnx --preset tiny --random-init``). Building it needs PyTorch and the export
  package (the ``torch`` extra); the builder is found through the entry point ``tiny-demo`` of
  the group ``tr2m.bundle_builders`` (registered by the package that provides it), so runtime/
  imports nothing above it and stays torch-free.
  The bundle is UNTRAINED: its depth has no metric meaning, it only exercises the pipeline.

The demo's captions change half-way (two scenes), so the caption cache shows up in the summary.
"""
from __future__ import annotations

import math
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import av
import numpy as np

from .atomic import PendingFile
from .bundle import FORMAT_VERSION, MANIFEST, Bundle
from .captions import CaptionRange, CaptionSchedule
from .errors import BundleError
from .plugins import load_plugin

DEMO_SIZE = (360, 640)   # (height, width)
DEMO_FPS = 15
DEMO_SECONDS = 4.0
DEMO_CAPTIONS = CaptionSchedule(default="a long corridor", ranges=(
    CaptionRange(caption="a long corridor", start=0.0, end=2.0),
    CaptionRange(caption="a hallway in an office building", start=2.0),
))

Log = Callable[[str], None]
BUILDERS = "tr2m.bundle_builders"  # entry-point group of bundle builders (setup.cfg)
DEMO_BUILDER = "tiny-demo"


def demo_root() -> Path:
    """<user cache>/tr2m/demo/<tr2m version>-bundle<format version>."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("tr2m")) / "demo" / f"{_tr2m_version()}-bundle{FORMAT_VERSION}"


def _tr2m_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tr2m")
    except PackageNotFoundError:
        return "0+unknown"


# ------------------------------------------------------------------------------ the video
def demo_video(root: Optional[Path] = None, log: Log = lambda m: None) -> Path:
    """The demo video (rendered on first use, a few seconds; then reused): returns its path."""
    path = Path(root or demo_root()) / "corridor.mp4"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"rendering the demo video {path} ...")
        write_video(path, render_frames(seconds=DEMO_SECONDS))
    return path


def write_video(path: Path, frames, fps: int = DEMO_FPS) -> Path:
    """Encode uint8 RGB frames [H, W, 3] (even H, W) as H.264 mp4, atomically."""
    with PendingFile(path) as pending:
        with av.open(str(pending.temp), "w", format="mp4") as container:
            stream = None
            for rgb in frames:
                if stream is None:
                    stream = container.add_stream("libx264", rate=Fraction(fps))
                    stream.height, stream.width = rgb.shape[:2]
                    stream.pix_fmt, stream.options = "yuv420p", {"crf": "20", "preset": "veryfast"}
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def render_frames(seconds: float = DEMO_SECONDS, fps: int = DEMO_FPS, size=DEMO_SIZE):
    """Yield the demo's frames: uint8 [H, W, 3] RGB."""
    scene = Corridor(size)
    for i in range(int(round(seconds * fps))):
        t = i / fps
        yield scene.render(x=0.45 * math.sin(1.3 * t), z=1.1 * t, yaw=0.08 * math.sin(0.7 * t))


class Corridor:
    """A ray-cast corridor, camera axes as OpenCV (x right, y down, z forward), metres.

    Walls at x = +-1.5, floor at y = 1.2 (eye height), ceiling at y = -1.4, an end wall at z = 30,
    and axis-aligned crates on the floor. Shading falls off with distance (a depth cue).
    """

    HALF_WIDTH, FLOOR, CEILING, END = 1.5, 1.2, -1.4, 30.0
    CRATES = ((-0.9, 4.0, 0.7), (0.8, 8.0, 0.9), (-0.6, 13.0, 1.1))  # (x centre, z near, size)

    def __init__(self, size=DEMO_SIZE, hfov_deg: float = 70.0, seed: int = 0) -> None:
        h, w = size
        f = w / (2 * math.tan(math.radians(hfov_deg) / 2))
        v, u = np.mgrid[0:h, 0:w].astype(np.float32)
        self.rays = np.stack([(u - (w - 1) / 2) / f, (v - (h - 1) / 2) / f, np.ones_like(u)])  # [3, H, W]
        self.noise = np.random.default_rng(seed).uniform(0.75, 1.0, (64, 64)).astype(np.float32)
        self.surfaces = [self._floor, self._wall, self._ceiling, self._end_wall] + [self._crate] * len(self.CRATES)

    def render(self, *, x: float, z: float, yaw: float) -> np.ndarray:
        """The view from (x, 0, z) turned by ``yaw`` radians: uint8 [H, W, 3] RGB."""
        c, s = math.cos(yaw), math.sin(yaw)
        d = np.stack([c * self.rays[0] + s * self.rays[2], self.rays[1], -s * self.rays[0] + c * self.rays[2]])
        hits = np.stack(self._room_hits(x, z, d) + [
            _box_hit((x, 0.0, z), d, (cx - size / 2, self.FLOOR - size, cz), (cx + size / 2, self.FLOOR, cz + size))
            for cx, cz, size in self.CRATES])
        which = np.argmin(hits, axis=0)
        t = np.take_along_axis(hits, which[None], axis=0)[0]
        colour = np.empty(t.shape + (3,), np.float32)
        for k, surface in enumerate(self.surfaces):
            m = which == k
            tk = t[m]
            colour[m] = surface(x + tk * d[0][m], tk * d[1][m], z + tk * d[2][m])
        colour *= np.exp(-t / np.float32(14.0))[..., None]
        return np.clip(colour * 255 + 8, 0, 255).astype(np.uint8)

    def _room_hits(self, x, z, d):
        inf = np.float32(np.inf)
        dx, dy, dz = d
        with np.errstate(divide="ignore", invalid="ignore"):
            wall = np.where(dx > 0, (self.HALF_WIDTH - x) / dx, np.where(dx < 0, (-self.HALF_WIDTH - x) / dx, inf))
            floor = np.where(dy > 0, self.FLOOR / dy, inf)
            ceiling = np.where(dy < 0, self.CEILING / dy, inf)
            end = np.where(dz > 0, (self.END - z) / dz, inf)
        return [floor, wall, ceiling, end]

    # Surfaces: hit points (px, py, pz) [n] -> RGB [n, 3] in [0, 1].
    def _floor(self, px, py, pz):
        return _tint((0.9, 0.85, 0.75), (_checker(px, pz, 0.5) * 0.5 + 0.35) * self._tex(px, pz, 0.05))

    def _wall(self, px, py, pz):
        row = np.floor(py / 0.15)
        mortar = (np.mod(py, 0.15) < 0.02) | (np.mod(pz / 0.4 + 0.5 * np.mod(row, 2), 1.0) < 0.05)
        return _tint((0.7, 0.35, 0.25), np.where(mortar, 0.55, 1.0) * self._tex(pz, py, 0.1))

    def _ceiling(self, px, py, pz):
        return _tint((0.95, 0.95, 0.9), np.where((np.mod(pz, 3.0) < 0.6) & (np.abs(px) < 0.5), 1.0, 0.45))

    def _end_wall(self, px, py, pz):
        return _tint((0.3, 0.45, 0.8), _checker(px, py, 0.3) * 0.4 + 0.4)

    def _crate(self, px, py, pz):
        return _tint((0.75, 0.5, 0.25), self._tex(px + pz, py, 0.25))

    def _tex(self, a, b, cell: float) -> np.ndarray:
        """Value noise lookup (nearest cell) in [0.75, 1]."""
        i = np.floor(a / cell).astype(np.int64) % 64
        j = np.floor(b / cell).astype(np.int64) % 64
        return self.noise[i, j]


def _tint(rgb, grey: np.ndarray) -> np.ndarray:
    return np.asarray(grey, np.float32)[:, None] * np.asarray(rgb, np.float32)


def _checker(a, b, cell: float) -> np.ndarray:
    return (np.mod(np.floor(a / cell) + np.floor(b / cell), 2)).astype(np.float32)


def _box_hit(origin, d, lo, hi) -> np.ndarray:
    """Distance along each ray d [3, H, W] from origin to the box [lo, hi] (slab method); inf on a miss."""
    near = np.full(d.shape[1:], -np.inf, np.float32)
    far = np.full(d.shape[1:], np.inf, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for o, dk, a, b in zip(origin, d, lo, hi):
            t1, t2 = (a - o) / dk, (b - o) / dk
            near = np.fmax(near, np.fmin(t1, t2))  # fmin/fmax skip the NaN of 0/0
            far = np.fmin(far, np.fmax(t1, t2))
    return np.where((far >= near) & (near > 0), near, np.inf).astype(np.float32)


# ------------------------------------------------------------------------------ the bundle
def demo_bundle(root: Optional[Path] = None, log: Log = lambda m: None,
                build: Optional[Callable[[Path, Log], None]] = None) -> Path:
    """The tiny untrained demo bundle (built on first use with PyTorch, then reused)."""
    folder = Path(root or demo_root()) / "bundle-tiny"
    if (folder / MANIFEST).is_file():
        try:
            Bundle.open(folder)
            return folder
        except BundleError as e:
            log(f"warning: the cached demo bundle is unusable ({e}); rebuilding it")
            shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    log(f"building the tiny UNTRAINED demo bundle in {folder} (once; about a minute) ...")
    build_with(build or find_bundle_builder(), folder, log)
    return folder


def find_bundle_builder(name: str = DEMO_BUILDER, group: str = BUILDERS) -> Callable[[Path, Log], None]:
    """The bundle builder registered as ``name`` in the entry-point ``group`` (export registers the
    demo's); without the torch extra, a BundleError naming it."""
    return load_plugin(group, name, kind="bundle builder", error=BundleError,
                       needs="the demo builds a tiny untrained bundle with PyTorch, which is not installed: "
                             "pip install 'tr2m[torch]', or pass --bundle DIR")


def build_with(builder: Callable[[Path, Log], None], folder: Path, log: Log) -> None:
    """Run a bundle builder; any failure of it becomes one BundleError line for the CLI."""
    try:
        builder(folder, log)
    except Exception as e:  # noqa: BLE001 - any export failure becomes one line for the CLI
        if (folder / MANIFEST).is_file():
            return  # another process built it at the same time
        raise BundleError(f"could not build the demo bundle ({type(e).__name__}: {e})") from e
