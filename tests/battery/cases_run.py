"""Captions, caption caches, outputs, Ctrl-C and the remaining CLI/API edges of a run."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import make
from .cases_files import frame_image
from .cases_media import expect, played, summary
from .harness import REPO, Case, Context, Crash, Result, Skip, api_error, worked


# ------------------------------------------------------------------------------ captions
def caption_empty(text: str):
    return lambda ctx: ctx.run(frame_image(ctx), caption=text).error(r"--caption is empty")


def caption_long(ctx: Context) -> Result:
    cache = ctx.root / "cache"
    ctx.run(frame_image(ctx), cache=cache, caption="a long corridor with doors " * 371).ok()  # 10,017 characters
    counts = summary(ctx)["caption_cache"]
    expect(counts == {"hits": 1, "misses": 1}, f"caption cache {counts}")  # embedded up front, then served
    expect(len(list(cache.rglob("*.npz"))) == 1, "one cache entry")
    return worked("10,017 characters: truncated to 77 tokens by the tokenizer, cached under its hash")


def caption_undecodable_argv(ctx: Context) -> Result:
    """Bytes that are not UTF-8 on the command line arrive as lone surrogates (surrogateescape)."""
    ctx.run(frame_image(ctx), cache=ctx.root / "cache", caption=b"caf\xe9 \xff".decode("utf-8", "surrogateescape")).ok()
    return worked("embedded; run.json and the cache key keep the exact bytes")


def captions_file(name: str, data: bytes, pattern: str):
    def case(ctx: Context) -> Result:
        path = ctx.path(name)
        path.write_bytes(data)
        return ctx.run(frame_image(ctx), "--captions", path).error(pattern)
    return case


def _engine(ctx: Context):
    from runtime import Engine

    return Engine.open(ctx.bundle, cache_dir=ctx.cache)


def embedding_api(make_emb, pattern: str):
    def case(ctx: Context) -> Result:
        from runtime.errors import CaptionError

        engine, frame = _engine(ctx), make.frames(1, (30, 40))[0]
        return api_error(lambda: engine.predict(frame, text_emb=make_emb(engine.bundle.text_dim)), (CaptionError,),
                         pattern)
    return case


def _nan_embedding(dim: int) -> np.ndarray:
    emb = np.ones(dim, np.float32)
    emb[3] = np.nan
    return emb


# ------------------------------------------------------------------------------ caches
def _cache_fault(spoil, note: str):
    """Run once to fill a private cache, spoil the entry, run again: the entry is recomputed."""
    def case(ctx: Context) -> Result:
        from runtime.cache import CaptionCache

        cache, image = ctx.root / "cache", frame_image(ctx)
        ctx.run(image, cache=cache, out=ctx.root / "first").ok()
        entry = next(cache.rglob("*.npz"))
        with np.load(entry) as z:
            truth = z["embedding"].copy()
        spoil(entry, ctx)
        seen = ctx.run(image, cache=cache).ok()
        counts = summary(ctx)["caption_cache"]
        expect(counts == {"hits": 1, "misses": 1}, f"the spoiled entry was served: cache {counts}")
        expect(any("cache" in w for w in seen.warnings()), f"no warning about the cache entry: {seen.err!r}")
        bundle = json.loads((ctx.bundle / "manifest.json").read_text())["text_encoder"]
        again = CaptionCache(bundle["id"], bundle["dim"], cache).get_or_compute(["a room"], _must_not_compute)
        expect(np.array_equal(again[0], truth), "the recomputed entry differs from the original")
        return worked(f"{note}; warned, recomputed, entry whole again")
    return case


def _must_not_compute(captions):
    raise Crash(f"the cache did not serve {captions} after the repair")


def _garbage(entry: Path, ctx: Context) -> None:
    entry.write_bytes(os.urandom(300))


def _truncate(entry: Path, ctx: Context) -> None:
    make.cut(entry, entry, 0.5)


def _other_caption(entry: Path, ctx: Context) -> None:
    with np.load(entry) as z:
        arrays = dict(z)
    arrays["caption"] = np.frombuffer(b"an office", np.uint8)
    arrays["embedding"] = arrays["embedding"] * 0 + 1
    with open(entry, "wb") as f:
        np.savez(f, **arrays)


def _nan_entry(entry: Path, ctx: Context) -> None:
    with np.load(entry) as z:
        arrays = dict(z)
    arrays["embedding"] = np.full_like(arrays["embedding"], np.nan)
    with open(entry, "wb") as f:
        np.savez(f, **arrays)


def _pickled_entry(entry: Path, ctx: Context) -> None:
    sentinel = ctx.root / "PLANTED_CODE_RAN"
    with np.load(entry) as z:
        arrays = dict(z)
    arrays["embedding"] = np.array([make.Planted(sentinel)], dtype=object)
    with open(entry, "wb") as f:
        np.savez(f, **arrays)


def _directory_entry(entry: Path, ctx: Context) -> None:
    entry.unlink()
    entry.mkdir()


def cache_pickle_never_runs(ctx: Context) -> Result:
    result = _cache_fault(_pickled_entry, "an object array holding a planted pickle")(ctx)
    if (ctx.root / "PLANTED_CODE_RAN").exists():
        raise Crash("CODE FROM THE CACHE ENTRY RAN")
    return result


def cache_entry_is_folder(ctx: Context) -> Result:
    cache, image = ctx.root / "cache", frame_image(ctx)
    ctx.run(image, cache=cache, out=ctx.root / "first").ok()
    _directory_entry(next(cache.rglob("*.npz")), ctx)
    seen = ctx.run(image, cache=cache).ok()
    expect(len(seen.warnings()) >= 1, "no warning")
    return worked("warned, cached in memory for the run: " + seen.warnings()[-1][9:90])


def cache_dir_is_file(ctx: Context) -> Result:
    blocker = ctx.path("cache")
    blocker.write_text("a file where the cache folder should be")
    return ctx.run(frame_image(ctx), cache=blocker).error(r"--cache-dir.*is a file")


def default_cache_unusable(ctx: Context) -> Result:
    """No --cache-dir and the user cache folder cannot be made: cache in memory, warn, go on."""
    blocker = ctx.path("xdg-cache")
    blocker.write_text("a file where the user's cache folder should be")
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(blocker)
    try:
        seen = ctx.run(frame_image(ctx), cache=False).ok()
    finally:
        os.environ.pop("XDG_CACHE_HOME") if saved is None else os.environ.__setitem__("XDG_CACHE_HOME", saved)
    expect(any("memory only" in w for w in seen.warnings()), f"no warning: {seen.err!r}")
    return worked("warned: caching in memory only")


# ------------------------------------------------------------------------------ subprocess runs
def _spawn(ctx: Context, source: Path, out: Path, cache: Path, *extra) -> subprocess.Popen:
    args = [sys.executable, "-m", "runtime", str(source), "--bundle", str(ctx.bundle), "--out", str(out),
            "--cache-dir", str(cache), "-q", *map(str, extra)]
    env = dict(os.environ, TR2M_THREADS="1")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _schedule(ctx: Context) -> Path:
    path = ctx.path("scenes.json")
    path.write_text(json.dumps([{"start_frame": 10 * i, "end_frame": 10 * i + 10, "caption": f"scene number {i}"}
                                for i in range(3)]))
    return path


def two_runs(same_out: bool):
    def case(ctx: Context) -> Result:
        clip, cache = make.video(ctx.path("clip.mp4"), n=30), ctx.root / "cache"
        outs = [ctx.out] * 2 if same_out else [ctx.root / "out1", ctx.root / "out2"]
        procs = [_spawn(ctx, clip, out, cache, "--captions", _schedule(ctx), "--png16") for out in outs]
        results = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, results):
            if p.returncode != 0 or "Traceback" in err:
                raise Crash(f"a concurrent run failed (exit {p.returncode}): {err.strip()[-300:]}")
        for out in set(outs):
            count, _, _ = make.video_frames(out / "depth.mp4")
            expect(count == 30 and json.loads((out / "run.json").read_text())["frames"] == 30, f"{out.name} outputs")
            expect(len(list((out / "png16").glob("*.png"))) == 30, "30 PNGs")
        entries = len(list(cache.rglob("*.npz")))
        # the three scenes and the default caption (frames past the schedule's end), embedded up front
        expect(entries == 4, f"{entries} cache entries for 3 captions and the default")
        where = "the same folder" if same_out else "two folders"
        return worked(f"both exit 0; {where}: whole video, 30 PNGs, run.json; 3 valid cache entries")
    return case


def ctrl_c(where: str, seed: int):
    """SIGINT to a video run at a random moment; the frames done must all be there and play."""
    def case(ctx: Context) -> Result:
        rng = random.Random(seed)
        # Long enough that the run is still going when the signal lands, even on an idle machine.
        clip = make.video(ctx.path("clip.mp4"), n=2000, size=(48, 64))
        proc = _spawn(ctx, clip, ctx.out, ctx.cache, "--caption", "a room", "--png16")
        delay = _wait_for(proc, ctx.out, where, rng)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if "Traceback" in err or proc.returncode != 130:
            raise Crash(f"exit {proc.returncode} after Ctrl-C: {err.strip()[-300:]}")
        ctx.partial_ok = True
        if not (ctx.out / "run.json").exists():
            expect(not ctx.out.exists(), f"no frame done but {ctx.out.name}/ was left")
            return worked(f"Ctrl-C {delay}: exit 130, nothing written ({_last(err)})")
        done = summary(ctx)["frames"]
        played(ctx, done)
        expect(len(list((ctx.out / "png16").glob("*.png"))) == done, "PNG count != frames done")
        return worked(f"Ctrl-C {delay}: exit 130, {done} frames, the mp4 plays them all")
    return case


def ctrl_c_before_first_frame(ctx: Context) -> Result:
    """Ctrl-C after the output folder was made but before the loop took over Ctrl-C (in process:
    the signal's timing cannot be forced from outside)."""
    import runtime.cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    real, runtime.cli._log_start = runtime.cli._log_start, interrupted
    try:
        seen = ctx.run(make.video(ctx.path("clip.mp4"), n=5))
    finally:
        runtime.cli._log_start = real
    if seen.crash or seen.code != 130 or "nothing was written" not in seen.err:
        raise Crash(f"exit {seen.code}: {seen.err.strip()[-200:]}", seen.explain())
    expect(not ctx.out.exists(), f"{ctx.out.name}/ was left although nothing was written")
    return worked(f"exit 130, {_last(seen.err)}; no output folder left")


def _wait_until_mapped(proc: subprocess.Popen, library: str, timeout: float = 60.0) -> None:
    """Block until `proc` has loaded a shared library whose path contains `library`."""
    maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.monotonic() + timeout
    while library not in maps.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise Crash(f"the CLI never loaded {library} (exit {proc.returncode})")
        time.sleep(0.002)


def ctrl_c_during_imports(ctx: Context) -> Result:
    """SIGINT while the interpreter is still importing the CLI's modules. Waiting for numpy's
    extension to load puts the signal inside the CLI's imports whatever the machine's speed (a
    fixed delay landed in the interpreter's own start-up on a loaded box, before any tr2m code)."""
    delay = random.Random(4).uniform(0.0, 0.05)
    proc = _spawn(ctx, frame_image(ctx), ctx.out, ctx.cache, "--caption", "a room")
    _wait_until_mapped(proc, "_multiarray_umath")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if "Traceback" in err or proc.returncode != 130:
        raise Crash(f"exit {proc.returncode} after Ctrl-C {delay:.2f} s into start-up: {_last(err)}")
    expect(not ctx.out.exists(), "output folder left")
    return worked(f"exit 130 {delay:.2f} s into start-up, nothing written")


def _wait_for(proc: subprocess.Popen, out: Path, where: str, rng: random.Random) -> str:
    """Wait until the run reaches ``where`` ("start": its output folder exists; "run": frames are being
    written), then a random extra delay; returns a description of the moment."""
    deadline = time.monotonic() + 120
    ready = (lambda: out.is_dir()) if where == "start" else (lambda: any(out.glob("png16/*.png")))
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        raise Crash(f"the run ended before Ctrl-C (exit {proc.returncode})")
    extra = rng.uniform(0, 0.05) if where == "start" else rng.uniform(0.05, 0.5)
    time.sleep(extra)
    return f"{extra:.2f} s after the {'output folder appeared' if where == 'start' else 'first frame'}"


def _last(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:100] if lines else ""


# ------------------------------------------------------------------------------ outputs
def read_only_out(ctx: Context) -> Result:
    folder = _unwritable_folder(ctx)
    return ctx.run(frame_image(ctx), out=folder).error(r"cannot (write in|create) the output folder")


def _unwritable_folder(ctx: Context) -> Path:
    """A folder this process cannot write in: chmod 555, or (as root, which ignores modes) /sys."""
    folder = ctx.path("read-only/x").parent
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys"), Path("/proc")):
        try:
            (candidate / ".tr2m-write-test").touch()
        except OSError:
            return candidate
        (candidate / ".tr2m-write-test").unlink()
    raise Skip("no read-only folder available here (root ignores file modes)")


def out_is_a_file(ctx: Context) -> Result:
    blocker = ctx.path("a-file")
    blocker.write_text("not a folder")
    return ctx.run(frame_image(ctx), out=blocker / "out").error(r"cannot create the output folder")


class TinyDisk:
    """A disk that fills up, for the files written through runtime.atomic (frames, run.json, cache):
    they share ``capacity`` bytes, and the write that crosses it stores what fits and raises
    OSError(ENOSPC). ``video=True`` also turns the video's temporary file into a link to /dev/full,
    so that FFmpeg's own writes fail with ENOSPC (when its buffer is first flushed)."""

    def __init__(self, capacity: int, *, video: bool = False) -> None:
        self.left, self.video = capacity, video

    def take(self, f, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self.left:
            f.write(data[: self.left])
            self.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= len(data)
        return f.write(data)

    def open(self, path, mode="r", *args, **kwargs):
        f = io.open(path, mode, *args, **kwargs)
        return _MeteredFile(f, self) if any(m in mode for m in "wxa") else f

    @contextlib.contextmanager
    def mounted(self):
        import av

        import runtime.atomic

        real_av_open = av.open

        def av_open(target, mode="r", **kwargs):
            if self.video and mode == "w" and isinstance(target, str) and Path(target).name.startswith("."):
                os.symlink("/dev/full", target)  # the temporary video file
            return real_av_open(target, mode, **kwargs)
        runtime.atomic.open = self.open
        av.open = av_open
        try:
            yield self
        finally:
            del runtime.atomic.open
            av.open = real_av_open


class _MeteredFile(io.RawIOBase):
    def __init__(self, f, disk: TinyDisk) -> None:
        self.f, self.disk = f, disk

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self.disk.take(self.f, data)

    def close(self) -> None:
        self.f.close()
        super().close()


def full_disk(capacity: int, outputs: tuple, where: str, *, video: bool = False):
    def case(ctx: Context) -> Result:
        clip = make.video(ctx.path("clip.mp4"), n=20)
        with TinyDisk(capacity, video=video).mounted():
            seen = ctx.run(clip, *outputs)
        result = seen.error(r"No space left on device.*(free space|space)")
        ctx.partial_ok = True
        for png in (ctx.out / "png16").glob("*.png") if (ctx.out / "png16").is_dir() else ():
            import cv2

            expect(cv2.imread(str(png), cv2.IMREAD_UNCHANGED) is not None, f"{png.name} is half-written")
        if (ctx.out / "depth.mp4").exists():
            make.video_frames(ctx.out / "depth.mp4")  # plays
        files = sorted(p.name for p in ctx.out.rglob("*") if p.is_file()) if ctx.out.exists() else []
        return Result(result.verdict, f"{result.message} [{where}; left {len(files)} whole files]")
    return case


# ------------------------------------------------------------------------------ API and CLI edges
def frame_api(frame, pattern: str):
    def case(ctx: Context) -> Result:
        from runtime.errors import FrameError

        engine = _engine(ctx)
        return api_error(lambda: engine.predict(frame, "a room"), (FrameError,), pattern)
    return case


def empty_batch(ctx: Context) -> Result:
    from runtime.errors import FrameError

    engine = _engine(ctx)
    return api_error(lambda: engine.predict_batch([], []), (FrameError,), r"no frames")


def engine_open_api(pattern: str, **options):
    def case(ctx: Context) -> Result:
        from runtime import Engine
        from runtime.errors import BundleError

        return api_error(lambda: Engine.open(ctx.bundle, cache_dir=ctx.cache, **options), (BundleError,), pattern)
    return case


def unknown_preset(ctx: Context) -> Result:
    import tr2m

    return api_error(lambda: tr2m.create_model("paper-xl", pretrained=False), (ValueError,), r"choose one of.*tiny")


def export_existing_out(ctx: Context) -> Result:
    ctx.path("bundle/keep.txt").write_text("someone's work")
    seen = ctx.export("onnx", "--preset", "tiny", "--random-init", "--out", ctx.root / "bundle")
    result = seen.error(r"already exists.*--force")
    expect((ctx.root / "bundle" / "keep.txt").read_text() == "someone's work", "the existing folder was touched")
    return result


def export_bad_parity_frame(ctx: Context) -> Result:
    bad = ctx.path("frame.jpg")
    bad.write_bytes(b"\xff\xd8\xff" + bytes(100))
    seen = ctx.export("onnx", "--preset", "tiny", "--random-init", "--parity-frame", bad, "--out", ctx.root / "bundle")
    result = seen.error(r"frame.jpg: not a readable image")
    expect(not (ctx.root / "bundle").exists(), "a bundle was written")
    return result


def eval_output_read_only(ctx: Context) -> Result:
    from .cases_files import eval_args

    report = _unwritable_folder(ctx) / "report.json"
    return ctx.evaluate(*eval_args(ctx), "--bundle", ctx.bundle, "--output", report).error(
        r"[^.]report\.json(?!\.tmp).*(check|writable|choose|another)")


def train_out_read_only(ctx: Context) -> Result:
    from .cases_files import TRAIN

    return ctx.train(*TRAIN, "--out", _unwritable_folder(ctx) / "run").error(r"run")


def calib_bad_video(ctx: Context) -> Result:
    bundle = ctx.copy_bundle()
    empty = ctx.path("calib.mp4")
    empty.write_bytes(b"")
    seen = ctx.export("trt", "--bundle", bundle, "--int8", "--calib", empty, "--flavour", "rtx", "--target", "sm86")
    result = seen.error(r"calib.mp4.*empty")
    from runtime.bundle import Bundle

    Bundle.open(bundle)  # still whole
    expect(not (bundle / "image_int8.onnx").exists(), "an INT8 graph was written from no frames")
    return result


def train_resume_garbage(ctx: Context) -> Result:
    run = ctx.path("run/x").parent
    (run / "last_state.safetensors").write_bytes(b"\x00" * 64)
    from .cases_files import TRAIN

    return ctx.train(*TRAIN, "--out", ctx.root / "new", "--resume", run).error(r"last_state|state|safetensors")


def train_datasets_not_utf8(ctx: Context) -> Result:
    path = ctx.path("datasets.json")
    path.write_bytes(b'[{"name": "nyu", "root": "caf\xe9"}]')
    return ctx.train("--preset", "tiny", "--random-init", "--datasets-json", path, "--out", ctx.root / "run"
                     ).error(r"datasets.json.*(UTF-8|utf-8)")


def eval_missing_root(ctx: Context) -> Result:
    return ctx.evaluate("--dataset", "nyu", "--root", ctx.root / "nope", "--preset", "tiny", "--random-init"
                        ).error(r"not found")


CASES = [
    Case("caption: empty", "tr2m-run", caption_empty("")),
    Case("caption: only spaces", "tr2m-run", caption_empty("   ")),
    Case("caption: 10,000 characters", "tr2m-run", caption_long),
    Case("caption: bytes that are not UTF-8 on the command line", "tr2m-run", caption_undecodable_argv),
    Case("captions file: not UTF-8 (Latin-1 SRT)", "tr2m-run", captions_file(
        "scenes.srt", "1\n00:00:00,000 --> 00:00:05,000\nun caf\xe9\n".encode("latin-1"), r"not UTF-8")),
    Case("captions file: unsupported type (.txt)", "tr2m-run", captions_file(
        "scenes.txt", b"an office\n", r"unsupported caption file type.*\.json")),
    Case("captions file: JSON caption that is a number", "tr2m-run", captions_file(
        "scenes.json", b'[{"start": 0, "caption": 42}]', r"needs a \"caption\" string")),
    Case("text embedding: wrong dimension", "runtime.Engine.predict",
         embedding_api(lambda dim: np.ones(dim + 5, np.float32), r"shape")),
    Case("text embedding: NaN", "runtime.Engine.predict", embedding_api(_nan_embedding, r"NaN")),
    Case("cache: corrupt entry (random bytes)", "tr2m-run", _cache_fault(_garbage, "random bytes")),
    Case("cache: truncated entry", "tr2m-run", _cache_fault(_truncate, "half an entry")),
    Case("cache: entry holding another caption", "tr2m-run", _cache_fault(_other_caption, "another caption's entry")),
    Case("cache: entry holding NaN", "tr2m-run", _cache_fault(_nan_entry, "NaN embedding")),
    Case("cache: entry with a planted pickle", "tr2m-run", cache_pickle_never_runs),
    Case("cache: entry is a folder", "tr2m-run", cache_entry_is_folder),
    Case("cache: --cache-dir is a file", "tr2m-run", cache_dir_is_file),
    Case("cache: default cache folder cannot be created", "tr2m-run", default_cache_unusable),
    Case("cache: written by two runs at once", "tr2m-run x2", two_runs(same_out=False)),
    Case("outputs: two runs writing the same folder", "tr2m-run x2", two_runs(same_out=True)),
    Case("outputs: read-only folder", "tr2m-run", read_only_out),
    Case("outputs: --out under a file", "tr2m-run", out_is_a_file),
    Case("outputs: disk full while writing frame files", "tr2m-run",
         full_disk(40_000, ("--png16", "--no-video"), "PNG frames")),
    Case("outputs: disk full while writing the video", "tr2m-run", full_disk(10**9, (), "depth.mp4", video=True)),
    Case("outputs: disk full when writing run.json", "tr2m-run", full_disk(200, (), "run.json")),
    Case("Ctrl-C: while Python imports the CLI", "tr2m-run (SIGINT)", ctrl_c_during_imports),
    Case("Ctrl-C: before the first frame (injected)", "tr2m-run", ctrl_c_before_first_frame),
    Case("Ctrl-C: right after start-up", "tr2m-run (SIGINT)", ctrl_c("start", seed=1)),
    Case("Ctrl-C: at a random frame (1)", "tr2m-run (SIGINT)", ctrl_c("run", seed=2)),
    Case("Ctrl-C: at a random frame (2)", "tr2m-run (SIGINT)", ctrl_c("run", seed=3)),
    Case("frame: float64 array", "runtime.Engine.predict", frame_api(np.zeros((8, 8, 3)), r"dtype float64")),
    Case("frame: 0x0 array", "runtime.Engine.predict", frame_api(np.zeros((0, 0, 3), np.uint8), r"shape")),
    Case("frame: 5 channels", "runtime.Engine.predict", frame_api(np.zeros((8, 8, 5), np.uint8), r"shape")),
    Case("bundle: no INT8 graph for --precision int8", "runtime.Engine.open",
         engine_open_api(r"no int8 image graph", precision="int8")),
    Case("backend: unknown name", "runtime.Engine.open", engine_open_api(r"unknown backend.*ort-cpu", backend="cuda")),
    Case("preset: unknown name", "tr2m.create_model", unknown_preset),
    Case("frames: empty batch", "runtime.Engine.predict_batch", empty_batch),
    Case("export: --out exists", "tr2m-export onnx", export_existing_out),
    Case("export: corrupt parity frame", "tr2m-export onnx", export_bad_parity_frame),
    Case("export: unknown preset", "tr2m-export onnx", lambda ctx: ctx.export(
        "onnx", "--preset", "paper-xl", "--random-init", "--out", ctx.root / "bundle").error(r"unknown preset.*tiny")),
    Case("outputs: --output in a read-only folder", "tr2m-eval", eval_output_read_only),
    Case("outputs: --out in a read-only folder", "tr2m-train", train_out_read_only),
    Case("calibration: empty video", "tr2m-export trt --int8", calib_bad_video),
    Case("training state: garbage --resume", "tr2m-train", train_resume_garbage),
    Case("datasets JSON: not UTF-8", "tr2m-train", train_datasets_not_utf8),
    Case("dataset: root missing", "tr2m-eval", eval_missing_root),
]
