"""tr2m-run end to end: real videos through every output, the caption cache across runs, Ctrl-C,
bad inputs, torch never imported, and the offline demo."""
from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from runtime import demo
from runtime.cli import main
from runtime.errors import BundleError
from runtime.text_embedder import TextEmbedder
from tests.runtime.fixtures_io import BEDROOM, COFFEE, NYU_RGB, REPO, ROLLERCOASTER, count_video_frames, require

N = 12


@pytest.fixture
def bundle(tiny_bundle) -> str:
    return str(tiny_bundle.bundle)


def tr2m_run(*args) -> int:
    return main([str(a) for a in args])


def summary(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def leftovers(folder: Path) -> list:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def ply_vertices(path: Path) -> int:
    data = path.read_bytes()
    header = data[: data.index(b"end_header\n") + len(b"end_header\n")].decode("ascii")
    count = int(header.split("element vertex ")[1].split()[0])
    assert len(data) == len(header) + 15 * count  # float x, y, z + uchar r, g, b
    return count


@pytest.mark.parametrize("video", [BEDROOM, ROLLERCOASTER], ids=["h264", "mpeg4-part2"])
def test_real_video_through_every_output(bundle, video, tmp_path):
    out = tmp_path / "out"
    code = tr2m_run(require(video), "--bundle", bundle, "--caption", "a room", "--out", out, "--max-frames", N,
                    "--side-by-side", "--png16", "--npz", "--ply", "--fov", 60, "--ply-stride", 4, "--csv",
                    "--cache-dir", tmp_path / "cache", "-q")
    assert code == 0
    frames, width, height = count_video_frames(out / "depth.mp4")
    assert frames == N and height == 540 and width > 2 * 960  # rgb | depth | legend
    pngs = sorted((out / "png16").glob("*.png"))
    npzs = sorted((out / "npz").glob("*.npz"))
    plys = sorted((out / "ply").glob("*.ply"))
    assert len(pngs) == len(npzs) == len(plys) == N
    for png, npz, ply in zip(pngs, npzs, plys):
        mm = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        with np.load(npz) as z:
            depth = z["depth"]
        assert mm.dtype == np.uint16 and mm.shape == depth.shape == (540, 960)
        valid = np.isfinite(depth) & (depth > 0)
        expected = np.where(valid, np.clip(np.round(depth.astype(np.float64) * 1000), 1, 65535), 0)
        assert np.abs(mm.astype(np.int64) - expected).max() <= 1  # millimetres of the same metres
        assert ply_vertices(ply) == int(valid[::4, ::4].sum())
    with open(out / "depth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(N))
    with np.load(npzs[-1]) as z:
        assert float(rows[-1]["median_m"]) == pytest.approx(float(np.median(z["depth"])), rel=1e-4)
    assert float(rows[0]["image_ms"]) > 0
    info = summary(out)
    assert info["frames"] == N and info["untrained"] is True and info["fps"] > 0
    assert not leftovers(out)


def test_scene_schedule_hits_the_caption_cache_within_and_across_runs(bundle, tmp_path, monkeypatch):
    schedule = tmp_path / "scenes.json"
    schedule.write_text(json.dumps({"default": "a house", "ranges": [
        {"start_frame": 0, "end_frame": 4, "caption": "a bedroom"},
        {"start_frame": 4, "end_frame": 8, "caption": "children jumping on a bed"},
        {"start_frame": 8, "end_frame": 12, "caption": "a bedroom"},
    ]}))
    args = [require(BEDROOM), "--bundle", bundle, "--captions", schedule, "--max-frames", N, "--batch", 3,
            "--cache-dir", tmp_path / "cache", "-q"]
    assert tr2m_run(*args, "--out", tmp_path / "one") == 0
    # every caption the schedule can give (its default too) is embedded before the first frame
    assert summary(tmp_path / "one")["caption_cache"] == {"hits": N, "misses": 3}
    monkeypatch.setattr(TextEmbedder, "_run", lambda self, captions: pytest.fail(f"text graph ran for {captions}"))
    assert tr2m_run(*args, "--out", tmp_path / "two") == 0
    assert summary(tmp_path / "two")["caption_cache"] == {"hits": N, "misses": 0}


def test_keyframe_mode(bundle, tmp_path):
    out = tmp_path / "out"
    assert tr2m_run(require(COFFEE), "--bundle", bundle, "--caption", "a table", "--out", out, "--max-frames", 9,
                    "--keyframe-every", 4, "--smooth", 0.5, "--cache-dir", tmp_path / "cache", "-q") == 0
    info = summary(out)
    assert info["frames"] == 9 and info["keyframes"] == 3  # frames 0, 4, 8
    assert {"relative", "scale_shift"} <= set(info["stage_ms"])


SCRIPT = """
import sys
from runtime.cli import main
code = main(sys.argv[1:])
assert "torch" not in sys.modules, "tr2m-run imported torch"
sys.exit(code)
"""


def test_ctrl_c_leaves_a_playable_video_of_the_frames_done_and_torch_is_never_imported(bundle, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-c", SCRIPT, str(require(BEDROOM)), "--bundle", bundle, "--caption", "a bedroom",
            "--out", str(out), "--png16", "--cache-dir", str(tmp_path / "cache"), "-q"]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("png16/*.png"))) < 4 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted:" in stderr
    done = summary(out)["frames"]
    assert 4 <= done < 200
    assert count_video_frames(out / "depth.mp4")[0] == done == len(list(out.glob("png16/*.png")))
    assert not leftovers(out)


def copy_bundle(bundle: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def bad_version(bundle, tmp_path):
    copy = copy_bundle(bundle, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(dict(manifest, format_version=99)))
    return [require(BEDROOM), "--bundle", copy], "format version 99"


def tampered(bundle, tmp_path):
    copy = copy_bundle(bundle, tmp_path)
    with open(copy / "text.onnx", "ab") as f:
        f.write(b"\0")
    return [require(BEDROOM), "--bundle", copy], "does not match its checksum"


def write(name: str, data: bytes):
    def make(bundle, tmp_path):
        (tmp_path / name).write_bytes(data)
        return [tmp_path / name, "--bundle", bundle], None
    return make


def unknown_codec(bundle, tmp_path):
    path = tmp_path / "unknown.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    path.write_bytes(path.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_TR2M/UNKNOWN!"))
    return [path, "--bundle", bundle], "Decoder not found"


def caption_file(name: str, text: str, message: str):
    def make(bundle, tmp_path):
        (tmp_path / name).write_text(text)
        return [require(BEDROOM), "--bundle", bundle, "--captions", tmp_path / name], message
    return make


def unwritable_out(bundle, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    return [require(BEDROOM), "--bundle", bundle, "--out", tmp_path / "a-file" / "out"], "cannot create the output folder"


BAD_INPUTS = {
    "missing": (lambda b, t: ([t / "missing.mp4", "--bundle", b], "no such file")),
    "empty": write("empty.mp4", b""),
    "not-a-video": write("notes.mp4", b"hello, not a video\n" * 40),
    "truncated": (lambda b, t: write("cut.mp4", require(BEDROOM).read_bytes()[:400_000])(b, t)),
    "unknown-codec": unknown_codec,
    "no-camera": (lambda b, t: (["97", "--bundle", b], "camera 97 is not available")),
    "bundle-version": bad_version,
    "bundle-tampered": tampered,
    "bundle-missing": (lambda b, t: ([require(BEDROOM), "--bundle", t / "nope"], "bundle folder not found")),
    "captions-json": caption_file("c.json", '[{"start": 0, "caption": "a room"', "invalid JSON"),
    "captions-srt": caption_file("c.srt", "1\n00:00:01 -> 00:00:02\nhello\n", "malformed SRT"),
    "unwritable-out": unwritable_out,
    "bad-range": (lambda b, t: ([require(BEDROOM), "--bundle", b, "--range", "10:1"], "--range")),
    "ply-without-camera": (lambda b, t: ([require(BEDROOM), "--bundle", b, "--ply"], "--fov")),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_error_exit_2_and_leaves_nothing(bundle, tmp_path, capsys, case):
    args, message = BAD_INPUTS[case](bundle, tmp_path)
    out = tmp_path / "out"
    if "--out" not in args:
        args += ["--out", out]
    code = tr2m_run(*args, "--caption", "a room", "--cache-dir", tmp_path / "cache", "-q")
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    if message:
        assert message in err
    assert not out.exists()
    assert not leftovers(tmp_path)


def test_console_script_reports_a_bad_input_without_traceback(tmp_path):
    script = Path(sys.executable).with_name("tr2m-run")
    if not script.exists():
        pytest.skip("the tr2m-run console script is not installed in this environment")
    result = subprocess.run([str(script), str(tmp_path / "missing.mp4"), "--bundle", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "tr2m-out").exists()


def test_demo_runs_offline_on_its_generated_video(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(demo, "DEMO_SECONDS", 0.6)  # 9 frames: the test only needs the path to run
    monkeypatch.chdir(tmp_path)
    assert tr2m_run("--bundle", bundle, "--max-frames", 6, "--cache-dir", tmp_path / "cache") == 0
    captured = capsys.readouterr()
    assert captured.err.count("UNTRAINED bundle") == 2  # at the start and at the end
    assert "(video, 640x360, 9 frames" in captured.err and "model input 56x70 HxW)" in captured.err  # as --size
    info = summary(tmp_path / "tr2m-out" / "demo")
    # both demo captions are embedded before the first frame (this short cut uses only the first)
    assert info["frames"] == 6 and info["untrained"] and info["caption_cache"] == {"hits": 6, "misses": 2}
    video = next((tmp_path / "xdg" / "tr2m" / "demo").glob("*/corridor.mp4"))
    assert count_video_frames(video) == (9, 640, 360)
    assert tr2m_run("--demo", "--bundle", bundle, "--max-frames", 2, "--out", tmp_path / "again",
                    "--cache-dir", tmp_path / "cache", "-q") == 0  # the cached video is reused


def test_demo_bundle_is_built_once_and_needs_torch_only_when_building(bundle, tmp_path, monkeypatch):
    built = []

    def fake_build(folder, log):
        built.append(folder)
        shutil.copytree(bundle, folder)
    first = demo.demo_bundle(tmp_path, build=fake_build)
    second = demo.demo_bundle(tmp_path, build=fake_build)
    assert first == second and built == [first] and (first / "manifest.json").is_file()

    def broken_build(folder, log):
        raise RuntimeError("out of memory")
    with pytest.raises(BundleError, match=r"could not build the demo bundle \(RuntimeError: out of memory\)"):
        demo.demo_bundle(tmp_path / "broken", build=broken_build)


def test_the_demo_finds_its_builder_through_the_installed_entry_point(monkeypatch):
    builder = demo.find_bundle_builder()  # the real entry point, registered in setup.cfg by export
    assert (builder.__module__, builder.__name__) == ("export.demo", "build_demo_bundle")
    monkeypatch.setitem(sys.modules, "export.demo", None)  # as if the torch extra (export's needs) were missing
    with pytest.raises(BundleError, match=r"PyTorch, which is not installed: pip install 'tr2m\[torch\]'.*--bundle"):
        demo.find_bundle_builder()
    with pytest.raises(BundleError, match=r"pip install 'tr2m\[torch\]'.*no bundle builder 'tiny-demo' is registered"):
        demo.find_bundle_builder(group="tr2m.no_such_builders")


def test_a_damaged_image_in_a_folder_is_named_counted_and_exits_3(bundle, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(require(NYU_RGB), folder / "kitchen.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 50)
    shutil.copy(require(NYU_RGB), folder / "office.jpg")
    out = tmp_path / "out"
    code = tr2m_run(folder, "--bundle", bundle, "--caption", "a room", "--out", out, "--npz", "--png16",
                    "--cache-dir", tmp_path / "cache", "-q")
    captured = capsys.readouterr()
    assert code == 3
    warned = [line for line in captured.err.splitlines() if line.startswith("warning: skipped")]
    assert len(warned) == 1 and str(folder / "broken.jpg") in warned[0] and "not a readable image" in warned[0]
    assert "skipped 1 input that could not be read" in captured.out
    info = summary(out)
    assert info["frames"] == 2 and [Path(s["path"]).name for s in info["skipped"]] == ["broken.jpg"]
    assert "not a readable image" in info["skipped"][0]["reason"]
    # Outputs are named after their input, so a skip never shifts the mapping.
    assert sorted(p.name for p in (out / "npz").iterdir()) == ["kitchen.npz", "office.npz"]
    assert sorted(p.name for p in (out / "png16").iterdir()) == ["kitchen.png", "office.png"]
    single = tmp_path / "single"
    assert tr2m_run(folder / "office.jpg", "--bundle", bundle, "--caption", "a room", "--out", single, "--npz",
                    "--no-video", "--cache-dir", tmp_path / "cache", "-q") == 0
    assert [p.name for p in (single / "npz").iterdir()] == ["office.npz"] and summary(single)["skipped"] == []


def test_help_lists_the_options(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "3 done, but inputs were skipped" in " ".join(text.split())
    for option in ("--caption", "--captions", "--bundle", "--backend", "--precision", "--png16", "--npz", "--ply",
                   "--fov", "--intrinsics", "--csv", "--range", "--max-frames", "--batch", "--keyframe-every",
                   "--smooth", "--demo"):
        assert option in text


# ------------------------------------------------------------------------------ --auto-caption
def test_auto_caption_yields_two_caption_ranges_and_a_depth_video(bundle, joined_video, tiny_captioners, tmp_path,
                                                                   monkeypatch, one_thread):
    """The captioner comes through the tr2m.captioners entry point (the runtime imports no torch
    itself); the joined real clips give two scenes, then depth for every frame."""
    from runtime.captions import CaptionSchedule

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path, cut = joined_video
    out = tmp_path / "out"
    assert tr2m_run(path, "--bundle", bundle, "--auto-caption", "--caption-model", tiny_captioners[0], "--out", out,
                    "--cache-dir", tmp_path / "cache", "-q") == 0
    ranges = CaptionSchedule.from_file(out / "captions.srt").ranges
    assert len(ranges) == 2 and ranges[1].start == pytest.approx(cut / 30, abs=1e-3)
    frames, _, _ = count_video_frames(out / "depth.mp4")
    assert frames == cut + 70
    assert summary(out)["caption_cache"]["misses"] <= 3  # two scene captions (+ the default)


def test_auto_caption_without_the_torch_extra_is_one_line(bundle, tmp_path, capsys, monkeypatch):
    import runtime.autocaption as hook

    monkeypatch.setattr(hook, "GROUP", "tr2m.no-such-group")  # as in an install without the torch side
    video = tmp_path / "v.mp4"
    demo.write_video(video, [np.zeros((32, 32, 3), np.uint8)] * 2)
    assert tr2m_run(video, "--bundle", bundle, "--auto-caption", "--out", tmp_path / "out", "-q") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --auto-caption needs the torch extra (pip install 'tr2m[torch]')")
    assert err.count("\n") == 1
    assert tr2m_run(video, "--bundle", bundle, "--auto-caption", "--captions", video, "-q") == 2
    assert tr2m_run("0", "--bundle", bundle, "--auto-caption", "-q") == 2
    assert tr2m_run(video, "--bundle", bundle, "--caption-model", "x", "-q") == 2
