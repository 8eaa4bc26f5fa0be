"""runtime.sources on the real videos and images, generated edge cases, and prefetch."""
from __future__ import annotations

import itertools
import struct
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from runtime.errors import SourceError, Tr2mRuntimeWarning
from runtime.sources import (Frame, FolderSource, VideoSource, open_source, prefetch,
                             read_image)
from tests.runtime.fixtures_io import (BEDROOM, COFFEE, NYU_DEPTH, NYU_RGB, ROLLERCOASTER,
                                       UNIDEPTH_RGB, first_frames, remux_head, require,
                                       write_video)


# ------------------------------------------------------------------------------- videos
def test_h264_video_frames_info_and_timestamps():
    with open_source(require(BEDROOM)) as source:
        assert (source.info.kind, source.info.fps, source.info.frame_count,
                source.info.size) == ("video", 30.0, 200, (540, 960))
        frames = list(itertools.islice(source, 8))
    assert [f.index for f in frames] == list(range(8))
    np.testing.assert_allclose([f.timestamp_s for f in frames], np.arange(8) / 30, atol=1e-9)
    for f in frames:
        assert f.rgb.shape == (540, 960, 3) and f.rgb.dtype == np.uint8
        assert f.rgb.flags.c_contiguous
    assert not np.array_equal(frames[0].rgb, frames[7].rgb)  # no buffer reused across frames


def test_video_frames_are_rgb_ordered_like_opencv_decoding():
    ours = first_frames(BEDROOM, 3)[2].rgb.astype(np.int16)
    capture = cv2.VideoCapture(str(BEDROOM))
    for _ in range(3):
        ok, bgr = capture.read()
    capture.release()
    assert ok
    theirs = bgr[:, :, ::-1].astype(np.int16)
    assert np.abs(ours - theirs).mean() < 3  # same picture (converters differ slightly)
    assert np.abs(ours - theirs[:, :, ::-1]).mean() > 3 * np.abs(ours - theirs).mean()


def test_mpeg4_part2_video_and_a_video_with_audio():
    mpeg4 = first_frames(ROLLERCOASTER, 4)
    np.testing.assert_allclose([f.timestamp_s for f in mpeg4], np.arange(4) / 24, atol=1e-9)
    with open_source(require(COFFEE)) as source:
        assert source.info.size == (720, 1280) and source.info.fps == pytest.approx(29.97, 1e-3)
        frame = next(iter(source))
    assert frame.rgb.shape == (720, 1280, 3)


def quadrants(h: int = 32, w: int = 64) -> np.ndarray:
    """A uint8 RGB picture whose four flat quadrants make any rotation or flip visible."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2:] = (0, 255, 0)
    img[h // 2:, : w // 2] = (0, 0, 255)
    img[h // 2:, w // 2:] = (255, 255, 255)
    return img


@pytest.mark.parametrize("rotation,hflip", [(0, False), (90, False), (180, False),
                                            (-90, False), (0, True), (90, True)])
def test_display_matrix_rotation_and_mirror_are_applied(tmp_path, rotation, hflip):
    # PyAV documents set_display_rotation as counter-clockwise degrees, mirrored after.
    path = write_video(tmp_path / "rotated.mp4", [quadrants()] * 2, rotation=rotation,
                       hflip=hflip)
    upright = np.rot90(quadrants(), k=rotation // 90)
    upright = upright[:, ::-1] if hflip else upright
    with open_source(path) as source:
        assert source.info.size == upright.shape[:2]
        frame = next(iter(source))
    assert frame.rgb.shape == upright.shape
    assert np.abs(frame.rgb.astype(int) - upright).mean() < 8


def test_truncated_video_keeps_the_good_frames_and_warns(tmp_path):
    head = remux_head(require(BEDROOM), tmp_path / "head.mp4", 30)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(head.read_bytes()[: int(head.stat().st_size * 0.6)])
    with pytest.warns(Tr2mRuntimeWarning, match="may be truncated"):
        with open_source(cut) as source:
            frames = list(source)
    assert 0 < len(frames) < 30
    assert [f.index for f in frames] == list(range(len(frames)))


def test_video_cut_before_any_frame_or_without_index_is_an_error(tmp_path):
    head = remux_head(require(BEDROOM), tmp_path / "head.mp4", 30)
    data = head.read_bytes()
    no_frames = tmp_path / "no_frames.mp4"
    no_frames.write_bytes(data[: data.find(b"mdat") + 64])
    with pytest.raises(SourceError, match="no frame could be decoded|cannot decode"):
        open_source(no_frames)
    no_index = tmp_path / "no_index.mp4"  # the real file keeps its index (moov) at the end
    no_index.write_bytes(require(BEDROOM).read_bytes()[:500_000])
    with pytest.raises(SourceError, match="not a video or image"):
        open_source(no_index)


class _FailingDecode:
    """Stands in for container.decode: n good frames, then a decoder error."""

    def __init__(self, frames, n_good):
        self.frames, self.n_good = frames, n_good

    def __call__(self, stream):
        yield from self.frames[: self.n_good]
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")


@pytest.mark.parametrize("n_good", [3, 0])
def test_decoder_error_part_way_stops_with_a_warning_or_errors_at_zero(monkeypatch, n_good):
    with av.open(str(require(BEDROOM))) as container:
        real = list(itertools.islice(container.decode(video=0), 3))
    monkeypatch.setattr(av.container.InputContainer, "decode", lambda self, *a, **k:
                        _FailingDecode(real, n_good)(None))
    if n_good == 0:
        with pytest.raises(SourceError, match="cannot decode the video"):
            VideoSource(str(BEDROOM))
        return
    with pytest.warns(Tr2mRuntimeWarning, match="decoding stopped after 3 frames"):
        with VideoSource(str(BEDROOM)) as source:
            assert len(list(source)) == 3


@pytest.mark.parametrize("name,content,message", [
    ("empty.mp4", b"", "the file is empty"),
    ("noise.mp4", bytes(range(256)) * 64, "not a video or image"),
    ("notes.txt", b"hello, not a video\n" * 40, "no video stream"),
])
def test_files_that_are_not_videos(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message) as info:
        open_source(path)
    assert "\n" not in str(info.value)


def test_missing_input_camera_and_second_iteration(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "missing.mp4")
    with pytest.raises(SourceError, match="camera 97 is not available"):
        open_source("97")
    with open_source(UNIDEPTH_RGB) as source:
        list(source)
        with pytest.raises(SourceError, match="can be read once"):
            iter(source)


# ------------------------------------------------------------------------------- images
def test_image_is_converted_from_bgr_to_rgb():
    rgb = read_image(require(UNIDEPTH_RGB))
    np.testing.assert_array_equal(rgb, cv2.imread(str(UNIDEPTH_RGB))[:, :, ::-1])
    with open_source(UNIDEPTH_RGB) as source:
        assert source.info.kind == "image" and source.info.size == (480, 640)
        (frame,) = list(source)
    assert frame.timestamp_s is None and frame.name == "rgb.png"


def test_16bit_gray_image_keeps_its_values_on_three_channels():
    rgb = read_image(require(NYU_DEPTH))
    raw = cv2.imread(str(NYU_DEPTH), cv2.IMREAD_UNCHANGED)
    assert rgb.dtype == np.uint16 and rgb.shape == raw.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], raw)


def test_16bit_rgba_image_drops_alpha_and_keeps_channel_order(tmp_path):
    rgb16 = (read_image(require(UNIDEPTH_RGB)).astype(np.uint16) * 257)
    alpha = np.full(rgb16.shape[:2] + (1,), 1234, np.uint16)
    path = tmp_path / "rgba16.png"
    cv2.imwrite(str(path), np.concatenate([rgb16[:, :, ::-1], alpha], axis=2))  # BGRA on disk
    np.testing.assert_array_equal(read_image(path), rgb16)


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert a minimal EXIF APP1 segment (one Orientation tag) after the JPEG SOI marker."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_jpeg_exif_orientation_is_applied(tmp_path):
    bgr = cv2.imread(str(require(NYU_RGB)))
    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
    path = tmp_path / "phone.jpg"
    path.write_bytes(_with_exif_orientation(jpeg, 6))  # 6: rotate 90 clockwise to display
    rgb = read_image(path)
    assert rgb.shape == (640, 480, 3)
    expected = np.rot90(bgr[:, :, ::-1], k=-1)
    assert np.abs(rgb.astype(int) - expected).mean() < 2


def test_folder_natural_order_skips_non_images_and_unreadable_files(tmp_path):
    img = read_image(require(UNIDEPTH_RGB))
    for i, name in enumerate(["img10.png", "img2.png", "img1.png"]):
        cv2.imwrite(str(tmp_path / name), np.ascontiguousarray(img[:, :, ::-1]) // (i + 1))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    (tmp_path / "sub").mkdir()
    with pytest.warns(Tr2mRuntimeWarning, match="skipped 1 non-image file"):
        source = open_source(tmp_path)
    assert isinstance(source, FolderSource) and source.info.frame_count == 4
    frames = list(source)
    assert [f.name for f in frames] == ["img1.png", "img2.png", "img10.png"]
    assert [f.index for f in frames] == [0, 1, 2]
    np.testing.assert_array_equal(frames[2].rgb, img)  # img10 was written undivided
    # The damaged file is listed with its reason and where it fell, for the loop to report.
    assert [(Path(s.path).name, s.position) for s in source.skipped] == [("broken.png", 0)]
    assert "not a readable image" in source.skipped[0].reason and str(tmp_path) not in source.skipped[0].reason


def test_image_frames_carry_the_stem_outputs_are_named_after(tmp_path):
    img = np.zeros((4, 6, 3), np.uint8)
    for name in ("kitchen.jpg", "a.jpg", "a.png"):
        cv2.imwrite(str(tmp_path / name), img)
    assert [(f.name, f.stem) for f in open_source(tmp_path)] == [
        ("a.jpg", "a.jpg"), ("a.png", "a.png"), ("kitchen.jpg", "kitchen")]  # a.* share a stem: whole names
    assert [f.stem for f in open_source(tmp_path / "kitchen.jpg")] == ["kitchen"]


def test_folder_without_images_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="no image files"):
        open_source(tmp_path)
    (tmp_path / "a.png").write_bytes(b"garbage")
    with pytest.raises(SourceError, match="none of the 1 images could be decoded"):
        list(open_source(tmp_path))


# ------------------------------------------------------------------------------- prefetch
class _Slow:
    """A source that takes `delay` per frame, counts frames produced, and may fail."""

    def __init__(self, n: int, delay: float = 0.0, fail_after: int | None = None):
        self.n, self.delay, self.fail_after = n, delay, fail_after
        self.produced = 0

    def __iter__(self):
        for i in range(self.n):
            if i == self.fail_after:
                raise SourceError("decoder exploded")
            time.sleep(self.delay)
            self.produced += 1
            yield Frame(index=i, timestamp_s=i / 30, rgb=np.zeros((2, 2, 3), np.uint8))


def test_prefetch_keeps_order_on_a_real_video():
    with open_source(require(BEDROOM)) as source, prefetch(source, maxsize=3) as frames:
        got = list(itertools.islice(frames, 12))
    direct = first_frames(BEDROOM, 12)
    assert [f.index for f in got] == list(range(12))
    for a, b in zip(got, direct):
        np.testing.assert_array_equal(a.rgb, b.rgb)


def test_prefetch_overlaps_decoding_with_the_consumer():
    source, n, delay = _Slow(12, delay=0.03), 12, 0.03
    t0 = time.perf_counter()
    with prefetch(source, maxsize=2) as frames:
        for _ in frames:
            time.sleep(delay)  # the consumer's "inference"
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.8 * (2 * n * delay)  # serial would take 2 * n * delay


def test_prefetch_is_bounded_and_stops_cleanly_when_closed_early():
    source = _Slow(1000)
    frames = prefetch(source, maxsize=3)
    first = next(frames)
    time.sleep(0.2)  # let the producer run as far ahead as it may
    assert first.index == 0 and source.produced <= 1 + 3 + 1
    frames.close()
    assert not any(t.name == "tr2m-prefetch" and t.is_alive() for t in threading.enumerate())
    assert source.produced < 10
    with pytest.raises(StopIteration):
        next(frames)


def test_prefetch_reraises_the_source_error_after_the_good_frames():
    frames = prefetch(_Slow(10, fail_after=4), maxsize=2)
    got = []
    with pytest.raises(SourceError, match="decoder exploded"):
        for frame in frames:
            got.append(frame.index)
    assert got == [0, 1, 2, 3]
