"""runtime.sinks and runtime.colormap: 10 real frames through every output, read back."""
from __future__ import annotations

import csv
import math

import av
import cv2
import numpy as np
import pytest

from runtime.colormap import DepthColorizer, legend, nice_ticks, turbo_lut
from runtime.errors import OutputError
from runtime.sinks import (SINKS, CsvSink, Intrinsics, NpzSink, PlySink, Png16Sink, SinkGroup,
                           VideoSink, make_sink)
from runtime.sources import Frame
from tests.runtime.fixtures_io import BEDROOM, count_video_frames, first_frames, synthetic_depth

N_FRAMES = 10


@pytest.fixture(scope="module")
def clip() -> list[tuple[Frame, np.ndarray]]:
    """The first 10 real frames with a depth map per frame that has invalid pixels (NaN,
    0, -1, inf), a pixel beyond the 16-bit PNG range and a tiny positive one."""
    out = []
    for frame in first_frames(BEDROOM, N_FRAMES):
        depth = synthetic_depth(frame.rgb)
        depth[:4, :] = np.nan
        depth[4, :10] = 0.0
        depth[4, 10:20] = -1.0
        depth[4, 20:30] = np.inf
        depth[5, 0] = 70.0       # beyond 65.535 m
        depth[5, 1] = 0.0002     # rounds to 0 mm, must stay valid
        out.append((frame, depth))
    return out


def write_all(sink, clip, n=N_FRAMES, timings=True):
    for i, (frame, depth) in enumerate(clip[:n]):
        extras = {"timings_ms": {"preprocess": 1.0 + i, "engine": 20.0}} if timings else {}
        sink.write(frame, depth, extras)


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


# ------------------------------------------------------------------------------- video
def test_video_sink_writes_a_decodable_h264_with_fixed_range_colours(tmp_path, clip):
    path = tmp_path / "depth.mp4"
    sink = VideoSink(path, min_m=0.5, max_m=5.0, fps=30)
    write_all(sink, clip)
    assert not path.exists()  # still under its temporary name
    sink.close()
    expected = sink.compose(*clip[0])
    n, width, height = count_video_frames(path)
    assert n == N_FRAMES
    assert (height, width) == (expected.shape[0] + expected.shape[0] % 2,
                               expected.shape[1] + expected.shape[1] % 2)
    assert width % 2 == 0 and height % 2 == 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
        decoded = next(container.decode(stream)).to_ndarray(format="rgb24")
    assert np.abs(decoded[:540, :960].astype(int) - expected[:, :960]).mean() < 6
    assert leftovers(tmp_path) == []


def test_side_by_side_video_shows_the_rgb_frame_and_a_legend(tmp_path, clip):
    frame, depth = clip[0]
    sink = VideoSink(tmp_path / "sbs.mp4", min_m=0.5, max_m=5.0, side_by_side=True)
    picture = sink.compose(frame, depth)
    np.testing.assert_array_equal(picture[:, :960], frame.rgb)
    np.testing.assert_array_equal(picture[:, 960:1920], sink.colorizer(depth))
    bar = picture[:, 1920:]
    np.testing.assert_array_equal(bar, legend(540, sink.colorizer))
    assert (bar < 60).all(axis=2).sum() > 100  # dark label text was drawn
    write_all(sink, clip, n=2)
    sink.close()
    assert count_video_frames(tmp_path / "sbs.mp4")[0] == 2


def test_abort_after_five_frames_leaves_a_playable_video(tmp_path, clip):
    path = tmp_path / "aborted.mp4"
    sink = VideoSink(path, min_m=0.5, max_m=5.0)
    write_all(sink, clip, n=5)
    sink.abort()
    assert count_video_frames(path)[0] == 5
    assert leftovers(tmp_path) == []


def test_ctrl_c_inside_a_with_block_finalizes_the_video(tmp_path, clip):
    path = tmp_path / "interrupted.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoSink(path, min_m=0.5, max_m=5.0) as sink:
            write_all(sink, clip, n=5)
            raise KeyboardInterrupt
    assert count_video_frames(path)[0] == 5
    assert leftovers(tmp_path) == []


def test_video_without_frames_leaves_nothing(tmp_path):
    VideoSink(tmp_path / "empty.mp4", min_m=0.5, max_m=5.0).close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs,message", [
    (dict(path="out.avi", min_m=0.5, max_m=5), "unsupported video extension"),
    (dict(path="out.mp4", min_m=5, max_m=0.5), "0 <= min < max"),
    (dict(path="out.mp4", min_m=0.5, max_m=5, fps=0), "fps must be positive"),
])
def test_video_sink_rejects_bad_settings(tmp_path, kwargs, message):
    kwargs["path"] = tmp_path / kwargs["path"]
    with pytest.raises(OutputError, match=message):
        VideoSink(**kwargs)


# ------------------------------------------------------------------------------- colormap
def test_colours_depend_on_the_fixed_range_not_on_each_frame():
    colorize = DepthColorizer(0.5, 5.0)
    near_frame = np.array([[0.5, 1.0, 2.0]], np.float32)
    far_frame = np.array([[2.0, 4.0, 9.0]], np.float32)
    np.testing.assert_array_equal(colorize(near_frame)[0, 2], colorize(far_frame)[0, 0])
    lut = turbo_lut()
    np.testing.assert_array_equal(colorize(near_frame)[0, 0], lut[255])  # min_m: red end
    np.testing.assert_array_equal(colorize(far_frame)[0, 2], lut[0])     # clipped at max_m
    invalid = np.array([[np.nan, 0.0, -2.0, np.inf]], np.float32)
    np.testing.assert_array_equal(colorize(invalid), 0)
    assert lut.shape == (256, 3) and lut[0, 2] > lut[0, 0] and lut[255, 0] > lut[255, 2]


@pytest.mark.parametrize("lo,hi,ticks", [
    (0.5, 5.0, [1, 2, 3, 4, 5]), (0.0, 10.0, [0, 2.5, 5, 7.5, 10]),
    (0.1, 80.0, [20, 40, 60, 80]), (0.2, 0.9, [0.2, 0.4, 0.6, 0.8]),
])
def test_legend_ticks_are_round_values_inside_the_range(lo, hi, ticks):
    assert nice_ticks(lo, hi) == pytest.approx(ticks)


# ------------------------------------------------------------------------------- files
def test_png16_stores_millimetres_with_zero_for_invalid(tmp_path, clip):
    write_all(Png16Sink(tmp_path), clip)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"depth_{i:06d}.png" for i in range(N_FRAMES)]
    for i in (0, N_FRAMES - 1):
        depth = clip[i][1]
        mm = cv2.imread(str(tmp_path / names[i]), cv2.IMREAD_UNCHANGED)
        assert mm.dtype == np.uint16 and mm.shape == depth.shape
        valid = np.isfinite(depth) & (depth >= 0.0005) & (depth < 65.5)
        assert np.abs(mm[valid] / 1000.0 - depth[valid]).max() <= 0.0005 + 1e-6
        assert (mm[:4] == 0).all() and (mm[4, :30] == 0).all()
        assert mm[5, 0] == 65535 and mm[5, 1] == 1


@pytest.mark.parametrize("compressed", [True, False])
def test_npz_stores_float_metres_and_array_extras(tmp_path, clip, compressed):
    sink = NpzSink(tmp_path / "npz", compressed=compressed)
    frame, depth = clip[3]
    scale = np.full((31, 40), 0.5, np.float32)
    sink.write(frame, depth, {"scale": scale, "timings_ms": {"engine": 3.0}})
    with np.load(tmp_path / "npz" / "depth_000003.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["depth", "index", "scale", "timestamp_s"]
        assert z["depth"].dtype == np.float32
        np.testing.assert_array_equal(z["depth"], depth)  # NaN positions included
        np.testing.assert_array_equal(z["scale"], scale)
        assert int(z["index"]) == 3 and float(z["timestamp_s"]) == pytest.approx(3 / 30)
    size = (tmp_path / "npz" / "depth_000003.npz").stat().st_size
    assert (size < depth.nbytes) == compressed  # the synthetic depth has flat areas


def read_ply(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                      ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    return header, np.frombuffer(data[end:], dtype)


def test_ply_points_follow_the_pinhole_model(tmp_path, clip):
    k = Intrinsics(fx=520.0, fy=515.0, cx=478.5, cy=268.0)
    write_all(PlySink(tmp_path, intrinsics=k, stride=4), clip, n=2)
    frame, depth = clip[1]
    header, points = read_ply(tmp_path / "points_000001.ply")
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    grid = depth[::4, ::4]
    n_valid = int((np.isfinite(grid) & (grid > 0)).sum())
    assert f"element vertex {n_valid}" in header and len(points) == n_valid
    v, u = 100, 200  # a grid pixel: find its point among the valid ones (row-major order)
    order = np.cumsum((np.isfinite(grid) & (grid > 0)).ravel()) - 1
    p = points[order[(v // 4) * grid.shape[1] + u // 4]]
    z = float(depth[v, u])
    np.testing.assert_allclose([p["x"], p["y"], p["z"]],
                               [(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], rtol=1e-6)
    assert (p["red"], p["green"], p["blue"]) == tuple(frame.rgb[v, u])


def test_ply_from_horizontal_field_of_view(tmp_path, clip):
    frame, depth = clip[0]
    PlySink(tmp_path, hfov_deg=90.0).write(frame, depth)
    _, points = read_ply(tmp_path / "points_000000.ply")
    k = Intrinsics.from_hfov(960, 540, 90.0)
    assert k.fx == pytest.approx(480.0) and (k.cx, k.cy) == (479.5, 269.5)
    right_edge = points[np.isclose(points["x"], (959 - 479.5) * points["z"] / 480.0)]
    assert len(right_edge) >= 500  # the last column of every valid row
    with pytest.raises(OutputError, match="exactly one of"):
        PlySink(tmp_path)
    with pytest.raises(OutputError, match="exactly one of"):
        PlySink(tmp_path, intrinsics=k, hfov_deg=60.0)


def test_csv_rows_hold_depth_stats_and_stage_timings(tmp_path, clip):
    path = tmp_path / "stats" / "run.csv"
    sink = CsvSink(path)
    write_all(sink, clip)
    sink.close()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_FRAMES
    assert list(rows[0]) == [*CsvSink.BASE_COLUMNS, "preprocess_ms", "engine_ms"]
    for i in (0, 7):
        depth = clip[i][1]
        valid = depth[np.isfinite(depth) & (depth > 0)]
        row = rows[i]
        assert int(row["index"]) == i and float(row["timestamp_s"]) == pytest.approx(i / 30, 1e-5)
        assert float(row["median_m"]) == pytest.approx(np.median(valid), rel=1e-5)
        assert float(row["min_m"]) == pytest.approx(0.0002, rel=1e-5)
        assert float(row["max_m"]) == pytest.approx(70.0)
        assert float(row["valid_fraction"]) == pytest.approx(valid.size / depth.size, rel=1e-5)
        assert float(row["preprocess_ms"]) == 1.0 + i and float(row["engine_ms"]) == 20.0
    assert leftovers(tmp_path) == []


def test_every_registered_sink_writes_ten_real_frames(tmp_path, clip):
    options = {"video": dict(min_m=0.5, max_m=5.0, fps=30), "ply": dict(hfov_deg=60, stride=8)}
    paths = {"video": tmp_path / "d.mp4", "csv": tmp_path / "d.csv"}
    group = SinkGroup([make_sink(kind, paths.get(kind, tmp_path / kind), **options.get(kind, {}))
                       for kind in SINKS])
    write_all(group, clip)
    group.close()
    assert count_video_frames(paths["video"])[0] == N_FRAMES
    assert len(paths["csv"].read_text().splitlines()) == N_FRAMES + 1
    for kind in ("png16", "npz", "ply"):
        assert len(list((tmp_path / kind).iterdir())) == N_FRAMES
    assert leftovers(tmp_path) == [] and group.frames_written == N_FRAMES


def test_sink_errors_are_clear(tmp_path, clip):
    frame, depth = clip[0]
    with pytest.raises(OutputError, match="unknown output 'gif'; choose one of video, png16"):
        make_sink("gif", tmp_path / "x")
    with pytest.raises(OutputError, match="does not match frame"):
        Png16Sink(tmp_path).write(frame, depth[:100])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create the output folder") as info:
        NpzSink(blocker / "npz")
    assert "\n" not in str(info.value)


def test_16bit_frames_are_shown_by_their_high_byte(tmp_path, clip):
    frame, depth = clip[0]
    frame16 = Frame(index=0, timestamp_s=0.0, rgb=frame.rgb.astype(np.uint16) * 257)
    sink = VideoSink(tmp_path / "v.mp4", min_m=0.5, max_m=5.0, side_by_side=True)
    np.testing.assert_array_equal(sink.compose(frame16, depth)[:, :960], frame.rgb)
    assert math.isclose(Intrinsics.from_hfov(100, 50, 60).fx, 50 / math.tan(math.radians(30)))
