"""Outputs for metric depth: colourized video, 16-bit PNG, NPZ, PLY point clouds, CSV stats.

Every sink takes ``write(frame, depth_m, extras)`` per frame, with depth_m float32 [H, W] in
metres at the frame's resolution (invalid pixels: NaN, inf or <= 0), then ``close()`` on a normal
end or ``abort()`` on an interruption (Ctrl-C): abort still finalizes what was written (the video
plays, the CSV has the rows so far) but never raises. Every file is written under a temporary
name in its folder and renamed when complete, so no reader ever sees a partial file.

``extras`` (optional mapping): ``"timings_ms"`` {stage: milliseconds} for the CSV; numpy arrays
(e.g. ``"scale"``, ``"shift"``) are stored next to the depth by the NPZ sink.
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

import av
import cv2
import numpy as np

from runtime.atomic import PendingFile, atomic_write_bytes
from runtime.colormap import DepthColorizer, legend
from runtime.errors import OutputError, Tr2mRuntimeWarning
from runtime.sources import Frame

Extras = Mapping[str, Any]


def valid_mask(depth_m: np.ndarray) -> np.ndarray:
    """bool [H, W]: finite and positive depth."""
    return np.isfinite(depth_m) & (depth_m > 0)


def rgb8(frame: Frame) -> np.ndarray:
    """The frame as uint8 [H, W, 3] RGB (16-bit frames keep their high byte)."""
    return frame.rgb if frame.rgb.dtype == np.uint8 else (frame.rgb >> 8).astype(np.uint8)


def _ensure_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot create the output folder ({e.strerror or e})") from e
    return folder


def _write_file(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e}); check free space and "
                          "permissions") from e


class Sink(ABC):
    """One output. Subclasses implement ``_write`` and, if they keep state, ``_finish``."""

    frames_written: int = 0

    def write(self, frame: Frame, depth_m: np.ndarray, extras: Extras | None = None) -> None:
        """frame: the input Frame; depth_m: float32 [H, W] metres, H, W = frame.rgb's."""
        if depth_m.ndim != 2 or depth_m.shape != frame.rgb.shape[:2]:
            raise OutputError(f"depth shape {depth_m.shape} does not match frame "
                              f"{frame.rgb.shape[:2]}; resize it back to the frame first")
        self._write(frame, depth_m, extras or {})
        self.frames_written += 1

    @abstractmethod
    def _write(self, frame: Frame, depth_m: np.ndarray, extras: Extras) -> None:
        """Write one validated frame."""

    def _finish(self) -> None:
        """Finalize outputs that span frames (video container, CSV). Default: nothing."""

    def close(self) -> None:
        """Normal end: finalize; raises OutputError if that fails."""
        self._finish()

    def abort(self) -> None:
        """Interrupted end: finalize what was written so far; warns instead of raising."""
        try:
            self._finish()
        except Exception as e:  # noqa: BLE001 - abort runs while another error unwinds
            warnings.warn(f"{type(self).__name__}: could not finalize the output ({e})",
                          Tr2mRuntimeWarning, stacklevel=2)

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _FolderSink(Sink):
    """A sink that writes one file per frame: ``<folder>/<stem><suffix>`` for image inputs (named
    after the input file, so an output always maps to its input), else
    ``<folder>/<prefix><index:06d><suffix>``."""

    prefix = "depth_"
    suffix = ""

    def __init__(self, folder: Path | str) -> None:
        self.folder = _ensure_folder(Path(folder))

    def path_for(self, frame: Frame) -> Path:
        name = frame.stem or f"{self.prefix}{frame.index:06d}"
        return self.folder / f"{name}{self.suffix}"


class Png16Sink(_FolderSink):
    """Depth in millimetres as 16-bit PNG: 0 = invalid, valid depth clipped to [1, 65535] mm
    (a valid pixel never reads as invalid; 65.535 m is the far limit)."""

    suffix = ".png"

    def _write(self, frame: Frame, depth_m: np.ndarray, extras: Extras) -> None:
        _write_file(self.path_for(frame), png16_bytes(depth_m))


def png16_bytes(depth_m: np.ndarray) -> bytes:
    """depth float [H, W] metres -> a 16-bit PNG file in millimetres (0 = invalid, valid depth
    clipped to [1, 65535] mm)."""
    mm = np.clip(np.nan_to_num(depth_m * 1000.0, posinf=65535.0), 1, 65535)
    mm = np.where(valid_mask(depth_m), np.round(mm), 0).astype(np.uint16)
    ok, png = cv2.imencode(".png", mm)
    if not ok:
        raise OutputError("PNG encoding failed")
    return png.tobytes()


class NpzSink(_FolderSink):
    """NPZ per frame: ``depth`` float32 [H, W] metres, ``index`` int64, ``timestamp_s``
    float64 (NaN for still images), plus any numpy arrays in extras. Compressed by default;
    ``compressed=False`` is several times faster (float mantissas compress poorly anyway)."""

    suffix = ".npz"

    def __init__(self, folder: Path | str, *, compressed: bool = True) -> None:
        super().__init__(folder)
        self._save = np.savez_compressed if compressed else np.savez

    def _write(self, frame: Frame, depth_m: np.ndarray, extras: Extras) -> None:
        arrays = {k: v for k, v in extras.items() if isinstance(v, np.ndarray)}
        ts = math.nan if frame.timestamp_s is None else frame.timestamp_s
        buf = io.BytesIO()
        self._save(buf, **arrays, depth=depth_m.astype(np.float32, copy=False),
                   index=np.int64(frame.index), timestamp_s=np.float64(ts))
        _write_file(self.path_for(frame), buf.getvalue())


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for the frame's resolution; pixel (u, v) = (column, row),
    integer at pixel centres. Camera axes as OpenCV: x right, y down, z forward."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0):
            raise OutputError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @classmethod
    def from_hfov(cls, width: int, height: int, hfov_deg: float) -> "Intrinsics":
        """Square pixels, principal point at the image centre ((W-1)/2, (H-1)/2); the
        horizontal field of view spans the outer pixel edges."""
        if not 0 < hfov_deg < 180:
            raise OutputError(f"horizontal field of view must be in (0, 180) degrees, "
                              f"got {hfov_deg}")
        f = width / (2.0 * math.tan(math.radians(hfov_deg) / 2.0))
        return cls(fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)


_PLY_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                        ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def ply_bytes(points: np.ndarray) -> bytes:
    """Binary little-endian PLY from a structured array of dtype ``_PLY_VERTEX``."""
    header = ("ply\nformat binary_little_endian 1.0\ncomment tr2m metric depth, metres\n"
              f"element vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    return header.encode("ascii") + points.astype(_PLY_VERTEX, copy=False).tobytes()


class PlySink(_FolderSink):
    """Coloured point cloud per frame: x = (u - cx) z / fx, y = (v - cy) z / fy, z = depth,
    for every ``stride``-th row and column with valid depth. Give ``intrinsics`` or
    ``hfov_deg`` (then intrinsics come from each frame's size)."""

    prefix = "points_"
    suffix = ".ply"

    def __init__(self, folder: Path | str, *, intrinsics: Intrinsics | None = None,
                 hfov_deg: float | None = None, stride: int = 1) -> None:
        if (intrinsics is None) == (hfov_deg is None):
            raise OutputError("the PLY output needs exactly one of intrinsics (fx, fy, cx, cy) "
                              "or a horizontal field of view")
        if int(stride) < 1:
            raise OutputError(f"stride must be a positive integer, got {stride}")
        super().__init__(folder)
        self.intrinsics, self.hfov_deg, self.stride = intrinsics, hfov_deg, int(stride)

    def points(self, frame: Frame, depth_m: np.ndarray) -> np.ndarray:
        """Structured [N] array (x, y, z float32 metres; red, green, blue uint8)."""
        h, w = depth_m.shape
        k = self.intrinsics or Intrinsics.from_hfov(w, h, self.hfov_deg)
        v, u = np.mgrid[0:h:self.stride, 0:w:self.stride]
        z = depth_m[v, u]
        keep = valid_mask(z)
        u, v, z = u[keep], v[keep], z[keep].astype(np.float64)
        out = np.empty(len(z), _PLY_VERTEX)
        out["x"] = (u - k.cx) * z / k.fx
        out["y"] = (v - k.cy) * z / k.fy
        out["z"] = z
        rgb = rgb8(frame)[v, u]
        out["red"], out["green"], out["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        return out

    def _write(self, frame: Frame, depth_m: np.ndarray, extras: Extras) -> None:
        _write_file(self.path_for(frame), ply_bytes(self.points(frame, depth_m)))


class CsvSink(Sink):
    """One row per frame: index, timestamp_s, name, valid_fraction, median_m, min_m, max_m
    (over valid pixels; empty when none) and one ``<stage>_ms`` column per timing in
    ``extras["timings_ms"]`` (columns in order of first appearance). Written on close/abort."""

    BASE_COLUMNS = ("index", "timestamp_s", "name", "valid_fraction", "median_m", "min_m",
                    "max_m")

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        _ensure_folder(self.path.parent)
        self.rows: list[dict[str, Any]] = []
        self._timing_columns: dict[str, None] = {}  # an ordered set

    def _write(self, frame: Frame, depth_m: np.ndarray, extras: Extras) -> None:
        valid = depth_m[valid_mask(depth_m)]
        row: dict[str, Any] = {
            "index": frame.index, "timestamp_s": _fmt(frame.timestamp_s), "name": frame.name,
            "valid_fraction": _fmt(valid.size / depth_m.size),
            "median_m": _fmt(np.median(valid) if valid.size else None),
            "min_m": _fmt(valid.min() if valid.size else None),
            "max_m": _fmt(valid.max() if valid.size else None),
        }
        for stage, ms in (extras.get("timings_ms") or {}).items():
            column = f"{stage}_ms"
            self._timing_columns[column] = None
            row[column] = _fmt(ms)
        self.rows.append(row)

    def _finish(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=[*self.BASE_COLUMNS, *self._timing_columns],
                                restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        _write_file(self.path, text.getvalue().encode("utf-8"))


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{float(value):.6g}"


# Output suffix -> PyAV container format (H.264 in each).
_VIDEO_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


class VideoSink(Sink):
    """Colourized depth as H.264 (libx264, yuv420p) over a fixed range [min_m, max_m], with a
    colour-bar legend in metres and optionally the RGB frame on the left.

    Frames are timed at a constant ``fps``. The file is written under a temporary name and
    renamed by close()/abort(); both flush the encoder and finalize the container, so an
    interrupted run still leaves a playable video of the frames done. Dimensions are padded to
    even numbers (yuv420p); a frame of a different size (image folders) is scaled to the first.
    """

    def __init__(self, path: Path | str, *, min_m: float, max_m: float, fps: float = 30.0,
                 side_by_side: bool = False, legend: bool = True, crf: int = 18,
                 preset: str = "veryfast") -> None:
        self.path = Path(path)
        fmt = _VIDEO_FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise OutputError(f"{self.path}: unsupported video extension; use one of "
                              f"{sorted(_VIDEO_FORMATS)}")
        if not (fps > 0 and math.isfinite(fps)):
            raise OutputError(f"video fps must be positive, got {fps}")
        try:
            self.colorizer = DepthColorizer(min_m, max_m)
        except ValueError as e:
            raise OutputError(str(e)) from None
        _ensure_folder(self.path.parent)
        self.fps, self.side_by_side, self.with_legend = fps, side_by_side, legend
        self._format, self._options = fmt, {"crf": str(int(crf)), "preset": preset}
        self._pending = PendingFile(self.path)
        self._container = self._stream = None
        self._size: tuple[int, int] | None = None  # (height, width) of the encoded picture
        self._legend_cache: dict[int, np.ndarray] = {}

    def compose(self, frame: Frame, depth_m: np.ndarray) -> np.ndarray:
        """The picture for one frame: uint8 [H', W', 3] RGB, [rgb |] colour [| legend]."""
        parts = [rgb8(frame)] if self.side_by_side else []
        parts.append(self.colorizer(depth_m))
        if self.with_legend:
            h = depth_m.shape[0]
            if h not in self._legend_cache:
                self._legend_cache[h] = legend(h, self.colorizer)
            parts.append(self._legend_cache[h])
        return np.hstack(parts)

    def _write(self, frame: Frame, depth_m: np.ndarray, extras: Extras) -> None:
        if self._pending.done:
            raise OutputError(f"{self.path}: the video was given up after an earlier error")
        picture = self.compose(frame, depth_m)
        if self._container is None:
            h, w = picture.shape[:2]
            self._open(h + h % 2, w + w % 2)  # yuv420p needs even sizes
        picture = self._fit(picture)
        video_frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        video_frame.pts = self.frames_written
        try:
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as e:
            self._abandon()
            raise OutputError(f"{self.path}: cannot write the video ({_reason(e)}); check free space and "
                              "permissions") from e

    def _open(self, height: int, width: int) -> None:
        try:
            self._container = av.open(str(self._pending.temp), "w", format=self._format)
            stream = self._container.add_stream(
                "libx264", rate=Fraction(self.fps).limit_denominator(1001))
        except (av.FFmpegError, OSError) as e:
            self._pending.discard()
            raise OutputError(f"{self.path}: cannot start the video ({e})") from e
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = self._options
        self._stream, self._size = stream, (height, width)

    def _fit(self, picture: np.ndarray) -> np.ndarray:
        """Pad to the even stream size; scale first if the picture size changed."""
        h, w = self._size
        if picture.shape[0] not in (h, h - 1) or picture.shape[1] not in (w, w - 1):
            picture = cv2.resize(picture, (w, h), interpolation=cv2.INTER_AREA)
        pad = ((0, h - picture.shape[0]), (0, w - picture.shape[1]), (0, 0))
        return np.pad(picture, pad) if any(p[1] for p in pad) else picture

    def _finish(self) -> None:
        if self._pending.done:
            return
        if self._container is None:
            self._pending.discard()  # no frame: leave no empty file behind
            return
        try:
            for packet in self._stream.encode(None):  # flush the frames the encoder holds
                self._container.mux(packet)
            self._container.close()
        except (av.FFmpegError, OSError) as e:
            self._abandon()
            raise OutputError(f"{self.path}: cannot finalize the video ({_reason(e)}); check free space and "
                              "permissions") from e
        self._pending.commit()

    def _abandon(self) -> None:
        """After a failed write the muxer's state is unknown: close the container without flushing
        the encoder (muxing after an I/O error crashed FFmpeg here) and drop the temporary file."""
        container, self._container = self._container, None
        try:
            container.close()
        except (av.FFmpegError, OSError):
            pass
        self._pending.discard()


class SinkGroup(Sink):
    """Several sinks as one: each frame goes to all; close/abort reach all even if one fails."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = list(sinks)

    def write(self, frame: Frame, depth_m: np.ndarray, extras: Extras | None = None) -> None:
        for sink in self.sinks:
            sink.write(frame, depth_m, extras)
        self.frames_written += 1

    def _write(self, frame: Frame, depth_m: np.ndarray, extras: Extras) -> None:
        raise NotImplementedError  # write() dispatches to the members

    def close(self) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except OutputError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def abort(self) -> None:
        for sink in self.sinks:
            sink.abort()


SINKS: dict[str, type[Sink]] = {
    "video": VideoSink,
    "png16": Png16Sink,
    "npz": NpzSink,
    "ply": PlySink,
    "csv": CsvSink,
}


def make_sink(kind: str, path: Path | str, **options: Any) -> Sink:
    """Build a sink by name (``SINKS``): a file path for video/csv, a folder for the others."""
    cls = SINKS.get(kind)
    if cls is None:
        raise OutputError(f"unknown output '{kind}'; choose one of {', '.join(SINKS)}")
    return cls(path, **options)
