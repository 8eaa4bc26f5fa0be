"""Videos and images through `tr2m-run`: broken ones are refused clearly, odd-but-valid ones work."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from . import make
from .harness import Case, Context, Crash, Result, worked


def summary(ctx: Context) -> dict:
    return json.loads((ctx.out / "run.json").read_text())


def depth_shapes(ctx: Context) -> list:
    return [make.npy_shape(p) for p in sorted((ctx.out / "npz").glob("*.npz"))]


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Crash(f"wrong output: {message}")


def played(ctx: Context, frames: int) -> tuple:
    """depth.mp4 plays and holds ``frames`` frames; returns (count, height, width)."""
    got = make.video_frames(ctx.out / "depth.mp4")
    expect(got[0] == frames, f"depth.mp4 has {got[0]} frames, expected {frames}")
    return got


# ------------------------------------------------------------------------------ videos
def video_missing(ctx: Context) -> Result:
    return ctx.run(ctx.root / "missing.mp4").error(r"no such file")


def video_empty(ctx: Context) -> Result:
    path = ctx.path("empty.mp4")
    path.write_bytes(b"")
    return ctx.run(path).error(r"empty")


def video_truncated(ctx: Context) -> Result:
    """Index at the end (the usual mp4): cut half-way, nothing can be decoded."""
    full = make.video(ctx.path("full.mp4"), n=40, noise=True)
    return ctx.run(make.cut(full, ctx.path("cut.mp4"), 0.5)).error(r"damaged or truncated")


def video_truncated_faststart(ctx: Context) -> Result:
    """Index at the front: the frames before the cut are done, with a warning."""
    full = make.video(ctx.path("full.mp4"), n=40, faststart=True, noise=True)
    seen = ctx.run(make.cut(full, ctx.path("cut.mp4"), 0.5), "--npz").ok()
    done = summary(ctx)["frames"]
    expect(0 < done < 40, f"{done} frames from half a 40-frame video")
    expect(any("truncated" in w for w in seen.warnings()), f"no truncation warning: {seen.err!r}")
    played(ctx, done)
    return worked(f"{done} of 40 frames done, warned: {seen.warnings()[0][9:]}")


def video_named_png(ctx: Context) -> Result:
    path = make.video(ctx.path("clip.mp4"), n=3)
    return ctx.run(path.rename(path.with_suffix(".png"))).error(r"not the format its extension says")


def video_named_txt(ctx: Context) -> Result:
    path = make.video(ctx.path("clip.mp4"), n=5)
    ctx.run(path.rename(path.with_suffix(".txt"))).ok()
    played(ctx, 5)
    return worked("decoded by content: 5 frames")


def png_named_mp4(ctx: Context) -> Result:
    path = make.image(ctx.path("still.png"), make.frames(1, (30, 40))[0])
    ctx.run(path.rename(path.with_suffix(".mp4")), "--npz").ok()
    expect(depth_shapes(ctx) == [(30, 40)], f"depth shapes {depth_shapes(ctx)}")
    return worked("one frame, depth 30x40")


def video_zero_frames(ctx: Context) -> Result:
    return ctx.run(make.video(ctx.path("zero.mp4"), n=0)).error(r"no video stream|no frame")


def video_unknown_codec(ctx: Context) -> Result:
    return ctx.run(make.unknown_codec(ctx.path("unknown.mkv"))).error(r"decoder not found.*H.264")


def video_vfr(ctx: Context) -> Result:
    pts = [0, 30, 40, 200, 210, 400, 420, 430, 800, 1000]
    ctx.run(make.video(ctx.path("vfr.mp4"), n=10, pts_ms=pts), "--npz", "--csv").ok()
    with open(ctx.out / "depth.csv", newline="") as f:
        stamps = [round(float(r["timestamp_s"]) * 1000) for r in csv.DictReader(f)]
    expect(stamps == pts, f"timestamps {stamps}, expected {pts}")
    expect(depth_shapes(ctx) == [(48, 64)] * 10, "depth shapes")
    played(ctx, 10)
    return worked("10 frames, timestamps kept (0-1000 ms, uneven), depth 48x64")


def video_rotated(ctx: Context) -> Result:
    ctx.run(make.video(ctx.path("rotated.mp4"), n=6, rotation=90), "--npz").ok()
    shapes = depth_shapes(ctx)
    expect(shapes == [(64, 48)] * 6, f"depth shapes {shapes[:2]}, expected (64, 48) after the 90 degree turn")
    count, height, _ = played(ctx, 6)
    expect(height == 64, f"video height {height}, expected 64 (upright)")
    return worked("display matrix applied: 48x64 coded -> depth 64x48")


def video_huge(ctx: Context) -> Result:
    ctx.run(make.video(ctx.path("huge.mp4"), n=2, size=(4320, 7680)), "--no-video", "--npz").ok()
    expect(depth_shapes(ctx) == [(4320, 7680)] * 2, f"depth shapes {depth_shapes(ctx)}")
    return worked("2 frames of 8K: depth 4320x7680")


# ------------------------------------------------------------------------------ images
def _odd_image(name: str, array: np.ndarray):
    def case(ctx: Context) -> Result:
        path = make.image(ctx.path(name), array)
        ctx.run(path, "--npz").ok()
        expect(depth_shapes(ctx) == [array.shape[:2]], f"depth {depth_shapes(ctx)} for a {array.shape} image")
        played(ctx, 1)
        return worked(f"{array.dtype} {array.shape} -> depth {array.shape[0]}x{array.shape[1]}, video plays")
    return case


def image_huge(ctx: Context) -> Result:
    big = np.zeros((10000, 10000, 3), np.uint8)
    big[::100], big[:, ::100] = 255, 128
    path = make.image(ctx.path("big.png"), big)
    del big
    ctx.run(path, "--no-video", "--npz").ok()
    expect(depth_shapes(ctx) == [(10000, 10000)], f"depth shapes {depth_shapes(ctx)}")
    return worked("depth 10000x10000")


def image_bomb(ctx: Context) -> Result:
    return ctx.run(make.png_claiming(ctx.path("bomb.png"), 50000, 50000)).error(r"MAX_IMAGE_PIXELS.*downscale")


def jpeg_truncated(ctx: Context) -> Result:
    full = make.image(ctx.path("full.jpg"), make.frames(1, (64, 64))[0])
    return ctx.run(make.cut(full, ctx.path("cut.jpg"), 0.5)).error(r"corrupt, truncated.*re-save")


def jpeg_garbage(ctx: Context) -> Result:
    path = ctx.path("garbage.jpg")
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    return ctx.run(path).error(r"not a readable image.*re-save")


def text_named_png(ctx: Context) -> Result:
    path = ctx.path("notes.png")
    path.write_text("these are notes, not pixels\n" * 20)
    return ctx.run(path).error(r"not a readable image|extension")


def folder_mixed(ctx: Context) -> Result:
    folder = ctx.path("frames/x").parent
    for i, rgb in enumerate(make.frames(2, (30, 40))):
        make.image(folder / f"img{i}.png", rgb)
    (folder / "notes.txt").write_text("not an image")
    (folder / "readme.md").write_text("# not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 50)
    (folder / "sub").mkdir()
    seen = ctx.run(folder, "--npz")
    if seen.crash is not None or seen.code != 3:  # 3: done, but an input was skipped
        raise Crash(f"exit {seen.code} (expected 3: done with a skipped input)", seen.explain())
    expect(depth_shapes(ctx) == [(30, 40)] * 2, f"depth shapes {depth_shapes(ctx)}")
    expect(len(seen.warnings()) == 2, f"expected two warnings (non-images, broken.jpg), got {seen.warnings()}")
    skipped = [Path(s["path"]).name for s in json.loads((ctx.out / "run.json").read_text())["skipped"]]
    expect(skipped == ["broken.jpg"], f"run.json lists skipped {skipped}")
    return worked("2 images done, exit 3; warned: " + " / ".join(w[9:70] for w in seen.warnings()))


def folder_without_images(ctx: Context) -> Result:
    folder = ctx.path("docs/x").parent
    (folder / "a.txt").write_text("text")
    shutil.copy(__file__, folder / "b.py")
    return ctx.run(folder).error(r"no image files")


def video_fifo(ctx: Context) -> Result:
    import os

    os.mkfifo(ctx.path("pipe.mp4"))
    return ctx.run(ctx.root / "pipe.mp4").error(r"not a regular file")


def video_corrupt_middle(ctx: Context) -> Result:
    """Bytes flipped a third of the way in: the frames before the damage are done, with a warning."""
    path = make.video(ctx.path("clip.mp4"), n=30, noise=True)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 2000, 7):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    seen = ctx.run(path).ok()
    done = summary(ctx)["frames"]
    expect(0 < done <= 30, f"{done} frames")
    expect(done == 30 or seen.warnings(), "frames were dropped without a warning")
    played(ctx, done)
    return worked(f"{done} of 30 frames done" + (f", warned: {seen.warnings()[0][9:90]}" if seen.warnings() else ""))


def audio_only(ctx: Context) -> Result:
    import av

    path = ctx.path("sound.mp4")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return ctx.run(path).error(r"no video stream")


CASES = [
    Case("video: missing file", "tr2m-run", video_missing),
    Case("video: empty file (0 bytes)", "tr2m-run", video_empty),
    Case("video: truncated half-way (index at the end)", "tr2m-run", video_truncated),
    Case("video: truncated half-way (index first)", "tr2m-run", video_truncated_faststart),
    Case("video: mp4 named .png (wrong extension)", "tr2m-run", video_named_png),
    Case("video: mp4 named .txt (wrong extension)", "tr2m-run", video_named_txt),
    Case("video: PNG named .mp4 (wrong extension)", "tr2m-run", png_named_mp4),
    Case("video: zero frames", "tr2m-run", video_zero_frames),
    Case("video: unsupported codec", "tr2m-run", video_unknown_codec),
    Case("video: corrupt bytes a third of the way in", "tr2m-run", video_corrupt_middle),
    Case("video: audio only (no video stream)", "tr2m-run", audio_only),
    Case("video: a named pipe (FIFO)", "tr2m-run", video_fifo),
    Case("camera: index 97 not available", "tr2m-run", lambda ctx: ctx.run("97").error(r"camera 97 is not available")),
    Case("video: variable frame rate", "tr2m-run", video_vfr),
    Case("video: rotated 90 (display matrix)", "tr2m-run", video_rotated),
    Case("video: huge resolution (7680x4320)", "tr2m-run", video_huge),
    Case("image: 1x1", "tr2m-run", _odd_image("one.png", np.full((1, 1, 3), 90, np.uint8))),
    Case("image: 10000x10000", "tr2m-run", image_huge),
    Case("image: PNG header claiming 50000x50000", "tr2m-run", image_bomb),
    Case("image: grayscale", "tr2m-run", _odd_image("gray.png", make.frames(1, (30, 40))[0][:, :, 0].copy())),
    Case("image: RGBA", "tr2m-run", _odd_image("rgba.png", np.dstack([make.frames(1, (30, 40))[0],
                                                                          np.full((30, 40), 7, np.uint8)]))),
    Case("image: 16-bit RGB", "tr2m-run", _odd_image("rgb16.png", make.frames(1, (30, 40))[0].astype(np.uint16) * 257)),
    Case("image: 16-bit grayscale", "tr2m-run", _odd_image("gray16.png",
                                                          np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50)),
    Case("image: corrupt JPEG (truncated)", "tr2m-run", jpeg_truncated),
    Case("image: corrupt JPEG (garbage after the header)", "tr2m-run", jpeg_garbage),
    Case("image: text file named .png", "tr2m-run", text_named_png),
    Case("image folder: non-images and a broken JPEG among images", "tr2m-run", folder_mixed),
    Case("image folder: no image at all", "tr2m-run", folder_without_images),
]
