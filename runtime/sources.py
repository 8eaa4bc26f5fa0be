"""Frame sources: video file, single image, folder of images, camera; and a prefetch thread.

``open_source(spec)`` picks the source class from ``SOURCES`` (first whose ``accepts`` says yes):
a digit string is a camera index, a folder is an image folder, a known image extension is an
image, anything else is tried as a video. Every source yields ``Frame`` objects once (single
pass) with ``rgb`` as [H, W, 3] RGB, uint8 (uint16 for 16-bit images), C-contiguous.
"""
from __future__ import annotations

import queue
import re
import threading
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import av
import cv2
import numpy as np

from runtime.errors import SourceError, Tr2mRuntimeWarning

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".pnm", ".jp2"})


@dataclass(frozen=True)
class Frame:
    """One input frame. rgb: [H, W, 3] uint8 or uint16, RGB order. timestamp_s: seconds from
    the stream start (None for still images). name: the file name for image inputs. stem: for
    image inputs, what per-frame outputs are named after: the file's stem, or its whole name when
    another image of the folder has the same stem ("" for video and camera frames)."""

    index: int
    timestamp_s: float | None
    rgb: np.ndarray
    name: str = ""
    stem: str = ""


@dataclass(frozen=True)
class Skipped:
    """An input the source could not use and left out: path, why, and ``position``, the number of
    frames the source had yielded before it (so a consumer knows whether its run got that far)."""

    path: str
    reason: str
    position: int

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class SourceInfo:
    """What is known before decoding everything; None where the container does not say."""

    kind: str
    spec: str
    frame_count: int | None = None
    fps: float | None = None
    size: tuple[int, int] | None = None  # (height, width) as displayed (rotation applied)


def _warn(message: str) -> None:
    warnings.warn(message, Tr2mRuntimeWarning, stacklevel=3)


class FrameSource(ABC):
    """A single-pass iterable of ``Frame``; also a context manager that closes it.

    ``skipped`` lists the inputs left out so far (`Skipped`, in order; appended while iterating,
    possibly from a prefetch thread): a damaged image in a folder is skipped, not fatal.
    """

    info: SourceInfo

    def __init__(self) -> None:
        self._iterated = False
        self.skipped: list[Skipped] = []

    @classmethod
    @abstractmethod
    def accepts(cls, spec: str) -> bool:
        """True if ``spec`` (a path or camera index) is for this kind of source."""

    @abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """The frames, in order."""

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise SourceError(f"{self.info.spec}: a frame source can be read once; open it again")
        self._iterated = True
        return self._frames()

    def close(self) -> None:
        """Release files/devices; safe to call twice."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _existing_file(spec: str) -> Path:
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"{spec}: no such file or folder")
    if not path.is_file():
        raise SourceError(f"{spec}: not a regular file")
    if path.stat().st_size == 0:
        raise SourceError(f"{spec}: the file is empty")
    return path


# ---------------------------------------------------------------------------------- images
# JPEG: IMREAD_COLOR applies the EXIF orientation that phone photos rely on (IMREAD_UNCHANGED
# ignores it); JPEG has no alpha or 16-bit data to lose. Everything else: IMREAD_UNCHANGED keeps
# 16-bit depth, gray and alpha, which _to_rgb then handles.
_JPEG_MAGIC = b"\xff\xd8\xff"


def read_image(path: Path | str) -> np.ndarray:
    """Decode an image file -> [H, W, 3] RGB, uint8 or uint16. Raises SourceError."""
    path = _existing_file(str(path))
    return decode_image(np.fromfile(path, dtype=np.uint8), path)  # fromfile: non-ASCII paths too


def decode_image(data: np.ndarray, name: Path | str) -> np.ndarray:
    """Encoded image bytes (uint8 [N]) -> [H, W, 3] RGB, uint8 or uint16; ``name`` labels the
    errors (a path, or "the request body"). Raises SourceError."""
    flags = cv2.IMREAD_COLOR if data[:3].tobytes() == _JPEG_MAGIC else cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(data, flags)
    except cv2.error as e:  # e.g. a header claiming more pixels than CV_IO_MAX_IMAGE_PIXELS allows
        reason = str(e).split("error: ")[-1].strip()
        raise SourceError(f"{name}: OpenCV refuses to decode this image ({reason}); if it is really "
                          "that large, downscale it first") from None
    if img is None:
        raise SourceError(f"{name}: not a readable image (corrupt, truncated, or not the format its "
                          "extension says); re-save it as PNG or JPEG")
    return _to_rgb(img, name)


# OpenCV channel count -> conversion to RGB (alpha dropped: it carries no depth cue).
_TO_RGB = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}


def _to_rgb(img: np.ndarray, path: Path | str) -> np.ndarray:
    if img.dtype not in (np.uint8, np.uint16):
        raise SourceError(f"{path}: {img.dtype} images are not supported; convert to 8 or 16 bit")
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in _TO_RGB:
        raise SourceError(f"{path}: {channels}-channel images are not supported")
    return cv2.cvtColor(img, _TO_RGB[channels])


class ImageSource(FrameSource):
    """A single image file: one frame, index 0, no timestamp."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        self._rgb = read_image(spec)
        self._path = Path(spec)
        self.info = SourceInfo(kind="image", spec=spec, frame_count=1, size=self._rgb.shape[:2])

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return Path(spec).suffix.lower() in IMAGE_EXTENSIONS

    def _frames(self) -> Iterator[Frame]:
        yield Frame(index=0, timestamp_s=None, rgb=self._rgb, name=self._path.name, stem=self._path.stem)


def _natural_key(name: str) -> list:
    # "img2" before "img10": digit runs compare as numbers (split alternates text/number).
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class FolderSource(FrameSource):
    """Every image in a folder (not recursive), in natural order of file name.

    Non-image files are skipped with one warning giving their count; an image that fails to
    decode is skipped and listed in ``skipped`` (the loop reports it); no image at all, or none
    decodable, is a SourceError.
    """

    def __init__(self, spec: str) -> None:
        super().__init__()
        folder = Path(spec)
        files = sorted((p for p in folder.iterdir() if p.is_file()),
                       key=lambda p: _natural_key(p.name))
        self._paths = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        skipped = len(files) - len(self._paths)
        if not self._paths:
            raise SourceError(f"{spec}: no image files in this folder "
                              f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        if skipped:
            _warn(f"{spec}: skipped {skipped} non-image file(s)")
        self.info = SourceInfo(kind="folder", spec=spec, frame_count=len(self._paths))

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return Path(spec).is_dir()

    def _frames(self) -> Iterator[Frame]:
        index = 0
        stems = _output_stems(self._paths)
        for path in self._paths:
            try:
                rgb = read_image(path)
            except SourceError as e:
                reason = str(e).removeprefix(f"{path}: ")
                self.skipped.append(Skipped(path=str(path), reason=reason, position=index))
                continue
            yield Frame(index=index, timestamp_s=None, rgb=rgb, name=path.name, stem=stems[path])
            index += 1
        if index == 0:
            raise SourceError(f"{self.info.spec}: none of the {len(self._paths)} images "
                              "could be decoded")


def _output_stems(paths: list[Path]) -> dict[Path, str]:
    """Each image's stem, or its whole name where two images share a stem (a.jpg and a.png), so
    that outputs named after their input never collide."""
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    return {path: path.stem if counts[path.stem] == 1 else path.name for path in paths}


# ---------------------------------------------------------------------------------- video
@dataclass(frozen=True)
class _Orientation:
    """How to turn a decoded picture upright: transpose, then flip rows/columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def apply(self, img: np.ndarray) -> np.ndarray:
        if self.transpose:
            img = img.transpose(1, 0, 2)
        if self.flip_rows:
            img = img[::-1]
        if self.flip_cols:
            img = img[:, ::-1]
        return np.ascontiguousarray(img)


_UPRIGHT = _Orientation()


def _orientation(matrix: np.ndarray) -> _Orientation | None:
    """The display matrix's (libavutil display.h) linear part as a transpose + flips.

    The matrix maps a source point (p, q) = (column, row) to (a*p + c*q, b*p + d*q) with
    a, b, c, d = m[0], m[1], m[3], m[4]. Returns None for angles that are not multiples of 90.
    """
    a, b, c, d = (int(matrix[i]) for i in (0, 1, 3, 4))
    if b == 0 and c == 0 and a and d:
        return _Orientation(flip_rows=d < 0, flip_cols=a < 0)
    if a == 0 and d == 0 and b and c:
        # Transposed: output row follows the source column (sign b), column the row (sign c).
        return _Orientation(transpose=True, flip_rows=b < 0, flip_cols=c < 0)
    return None


def _frame_orientation(frame: "av.VideoFrame") -> _Orientation | None:
    for sd in frame.side_data:
        if getattr(sd.type, "name", "") == "DISPLAYMATRIX":
            return _orientation(np.frombuffer(bytes(sd), dtype=np.int32)[:9])
    return _UPRIGHT


class VideoSource(FrameSource):
    """A video file decoded with PyAV: RGB uint8 frames, timestamps in seconds from the first
    stream timestamp, display-matrix rotation/flips applied. A decode error part-way stops the
    stream with a warning (an error if no frame decoded at all)."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        self._spec = spec
        self._container = _open_container(_existing_file(spec))
        try:
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"  # frame + slice threads: decoding is the hog
            rate = self._stream.average_rate or self._stream.guessed_rate
            self._fps = float(rate) if rate else None
            self._warned_angle = False
            self._decoded = self._decode()
            self._first = next(self._decoded)  # fail now, not in the middle of a run
        except BaseException:
            self.close()
            raise
        self.info = SourceInfo(kind="video", spec=spec, frame_count=self._stream.frames or None,
                               fps=self._fps, size=self._first.rgb.shape[:2])

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return True  # the fallback: PyAV decides whether it is a video

    def _decode(self) -> Iterator[Frame]:
        frames = self._container.decode(self._stream)
        index = 0
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                self._check_complete(index)
                return
            except (av.FFmpegError, ValueError) as e:
                if index == 0:
                    raise SourceError(f"{self._spec}: cannot decode the video ({_av_reason(e)}); it "
                                      "may be damaged or truncated, or re-encode it as H.264 "
                                      "(ffmpeg -i IN -c:v libx264 OUT.mp4)") from e
                _warn(f"{self._spec}: decoding stopped after {index} frames "
                      f"({_av_reason(e)}); the file may be truncated")
                return
            yield self._to_frame(frame, index)
            index += 1

    def _check_complete(self, decoded: int) -> None:
        """At the end of the stream: no frame is an error, fewer than declared a warning (a file
        cut short usually just ends early, without a decoder error)."""
        if decoded == 0:
            raise SourceError(f"{self._spec}: no frame could be decoded (empty or damaged video)")
        declared = self._stream.frames
        if declared and decoded < declared:
            _warn(f"{self._spec}: decoded {decoded} of the {declared} frames the file declares; "
                  "it may be truncated")

    def _to_frame(self, frame: "av.VideoFrame", index: int) -> Frame:
        rgb = frame.to_ndarray(format="rgb24")
        orientation = _frame_orientation(frame)
        if orientation is None and not self._warned_angle:
            self._warned_angle = True
            _warn(f"{self._spec}: rotation by an angle that is not a multiple of 90 degrees "
                  "is not applied")
        rgb = (orientation or _UPRIGHT).apply(rgb)
        return Frame(index=index, timestamp_s=self._seconds(frame, index), rgb=rgb)

    def _seconds(self, frame: "av.VideoFrame", index: int) -> float | None:
        if frame.pts is None or frame.time_base is None:
            return index / self._fps if self._fps else None
        start = self._stream.start_time or 0
        return float((frame.pts - start) * frame.time_base)

    def _frames(self) -> Iterator[Frame]:
        yield self._first
        self._first = None  # do not hold the first picture for the whole run
        yield from self._decoded

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()


# FFmpeg demuxers that "decode" non-video files into pictures (tty renders any text file).
_NOT_VIDEO_FORMATS = frozenset({"tty"})


def _open_container(path: Path) -> "av.container.InputContainer":
    try:
        container = av.open(str(path))
    except (av.FFmpegError, ValueError) as e:
        raise SourceError(f"{path}: not a video or image this runtime can read "
                          f"({_av_reason(e)}); a video may be damaged or truncated (an mp4 cut "
                          "short loses its index)") from e
    if container.format.name in _NOT_VIDEO_FORMATS or not container.streams.video:
        container.close()
        raise SourceError(f"{path}: the file has no video stream (not a video)")
    return container


def _av_reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


# ---------------------------------------------------------------------------------- camera
class CameraSource(FrameSource):
    """A camera by index (cv2.VideoCapture). Timestamps are seconds since the first frame."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        self._capture = cv2.VideoCapture(int(spec))
        if not self._capture.isOpened():
            self.close()
            raise SourceError(f"camera {spec} is not available; check the index, that it is "
                              "connected and that this user may open it")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        size = (int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
        self.info = SourceInfo(kind="camera", spec=spec, fps=fps if fps > 0 else None,
                               size=size if all(size) else None)

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return spec.isdigit()

    def _frames(self) -> Iterator[Frame]:
        t0 = None
        index = 0
        while True:
            ok, bgr = self._capture.read()
            if not ok:
                return  # unplugged or end of a virtual device
            now = time.monotonic()
            t0 = now if t0 is None else t0
            yield Frame(index=index, timestamp_s=now - t0, rgb=_to_rgb(bgr, Path(self.info.spec)))
            index += 1

    def close(self) -> None:
        capture = getattr(self, "_capture", None)
        if capture is not None:
            capture.release()


# Order matters: the first class whose accepts() is true opens the spec; video is the fallback.
SOURCES: dict[str, type[FrameSource]] = {
    "camera": CameraSource,
    "folder": FolderSource,
    "image": ImageSource,
    "video": VideoSource,
}


def open_source(spec: str | Path) -> FrameSource:
    """Open a video file, image, folder of images or camera index ("0") as a FrameSource.

    A digit string always means a camera: write ``./0`` for a file named ``0``."""
    spec = str(spec)
    if not spec:
        raise SourceError("no input given: pass a video, image, folder or camera index")
    if not spec.isdigit() and not Path(spec).exists():
        raise SourceError(f"{spec}: no such file or folder")
    for cls in SOURCES.values():
        if cls.accepts(spec):
            return cls(spec)
    raise SourceError(f"{spec}: not a video, image, folder or camera index")  # unreachable


# ---------------------------------------------------------------------------------- prefetch
_END = object()


class Prefetcher:
    """Iterates ``source`` in a background thread, at most ``maxsize`` frames ahead.

    Decoding overlaps the consumer's work; memory holds at most maxsize + 1 frames. An exception
    raised by the source is re-raised in the consumer at the point it happened. Stop early with
    ``close()`` or a ``with`` block; the source itself stays open (close it after this).
    """

    def __init__(self, source: Iterable[Frame], maxsize: int = 4) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._finished = False
        self.exhausted = False  # the source ended and every frame was taken
        self._thread = threading.Thread(target=self._produce, args=(source,), daemon=True,
                                        name="tr2m-prefetch")
        self._thread.start()

    def _produce(self, source: Iterable[Frame]) -> None:
        try:
            for frame in source:
                if not self._put((frame, None)):
                    return
            self._put((_END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, who re-raises it
            self._put((_END, e))

    def _put(self, item: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)  # wakes up to notice close()
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> Frame:
        if self._finished:
            raise StopIteration
        item, error = self._queue.get()
        if item is not _END:
            return item
        self.close()
        if error is not None:
            raise error
        self.exhausted = True
        raise StopIteration

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and drop frames decoded ahead; idempotent."""
        self._finished = True
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            _warn("the prefetch thread is still blocked in the source after close()")
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prefetch(source: Iterable[Frame], maxsize: int = 4) -> Prefetcher:
    """Decode ahead of the consumer: ``with prefetch(open_source(spec), 4) as frames: ...``."""
    return Prefetcher(source, maxsize)
