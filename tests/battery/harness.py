"""The battery's machinery: run one case, capture what a user would see, and judge it.

A case is a function ``case(ctx) -> Result``. It feeds one bad input or fault to a CLI (in
process, output captured at the file-descriptor level so that C libraries' messages count too)
or to the Python API, and says what it saw through the helpers below:

- ``Seen.error(pattern)``: the CLI failed as it should: non-zero exit, exactly one ``error: ...``
  line (or click's own usage error), no traceback, a message matching ``pattern``;
- ``api_error(fn, types, pattern)``: the API raised one of the documented types with a one-line
  message matching ``pattern``;
- ``worked(message)``: a valid-but-odd input was accepted and its output checked by the case.

Anything else (a traceback, a wrong answer, a silently accepted bad input) raises ``Crash``. After
every case ``run_case`` scans the case's folder and the shared caption cache: a temporary file, an
export staging folder or a cache entry that does not check out makes the verdict ``LEFTOVER``.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple, Type

import numpy as np

CLEAR, WORKED, UNCLEAR = "clear error", "worked", "unclear error"
CRASH, LEFTOVER, SKIPPED = "CRASH", "LEFTOVER", "skipped"
GOOD = (CLEAR, WORKED)
REPO = Path(__file__).resolve().parents[2]

# Names that must never survive a run: atomic-write temporaries (runtime.atomic, tr2m.checkpoint),
# export staging and replaced bundles (export.bundle), write probes.
_DEBRIS = re.compile(r"^\..+(\.[0-9a-f]{12}\.tmp|\.tmp\d+$|\.partial-|\.old-)|^\.probe")


class Crash(Exception):
    """The case saw a traceback, a wrong answer, or a bad input accepted without a word."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class Unclear(Crash):
    """A one-line error without a traceback, but it does not name the problem or the fix."""


class Leftover(Exception):
    """A half-written or temporary file, or a poisoned cache entry, was left behind."""


class Skip(Exception):
    """The case cannot run here (e.g. TensorRT for RTX is not installed)."""


@dataclass(frozen=True)
class Result:
    verdict: str
    message: str


def worked(message: str) -> Result:
    return Result(WORKED, message)


@dataclass(frozen=True)
class Case:
    """One bad input or fault: what it is, which component gets it, and the function that runs it."""

    input: str
    component: str
    run: Callable[["Context"], Result]
    known: str = ""  # a bug reported in a module the battery's author may not edit (pytest: xfail)

    @property
    def id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.input} {self.component}".lower()).strip("-")


@dataclass
class Outcome:
    case: Case
    verdict: str
    message: str
    seconds: float
    details: str = ""  # the traceback or captured output behind a CRASH / LEFTOVER


# ------------------------------------------------------------------------------ capturing
@dataclass
class Seen:
    """What one CLI call showed: exit code, stdout, stderr, and the traceback if one escaped."""

    command: str
    code: int
    out: str
    err: str
    crash: Optional[str] = None

    def _lines(self) -> list:
        return [line for line in self.err.splitlines() if line.strip()]

    def explain(self) -> str:
        return (f"{self.command} exit {self.code}\n--- stderr\n{self.err}\n--- stdout\n{self.out[-2000:]}"
                + (f"\n--- traceback\n{self.crash}" if self.crash else ""))

    def error(self, pattern: str, *, code: Optional[int] = None) -> Result:
        """A clear error: non-zero exit, one `error:` line matching pattern (case-insensitive)."""
        if self.crash is not None or "Traceback (most recent call last)" in self.err + self.out:
            raise Crash(f"traceback: {_last_line(self.crash or self.err)}", self.explain())
        if self.code == 0:
            raise Crash(f"exit 0: the bad input was accepted ({_last_line(self.out) or 'no message'})", self.explain())
        if code is not None and self.code != code:
            raise Crash(f"exit {self.code}, expected {code}")
        errors = [line for line in self._lines() if re.match(r"(error|Error): ", line)]
        if len(errors) != 1:
            raise Crash(f"expected one 'error:' line, got {len(errors)}: {self.err.strip()[-300:]!r}", self.explain())
        others = [line for line in self._lines() if not _allowed_beside_error(line)]
        if others:
            raise Crash(f"noise beside the error: {others[0][:200]!r}", self.explain())
        message = errors[0].split(": ", 1)[1]
        if not re.search(pattern, message, re.IGNORECASE):
            raise Unclear(f"does not say {pattern!r}: {message}", self.explain())
        return Result(CLEAR, message)

    def ok(self) -> "Seen":
        """The run succeeded (exit 0, no traceback); returns self for the case's own checks."""
        if self.crash is not None or self.code != 0:
            raise Crash(f"exit {self.code}: {_last_line(self.crash or self.err)}", self.explain())
        return self

    def warnings(self) -> list:
        return [line for line in self._lines() if line.startswith("warning: ")]


def _allowed_beside_error(line: str) -> bool:
    """Lines a clear error may come with: warnings, the UNTRAINED banner, click's usage header."""
    return bool(re.match(r"(error|Error): |warning: |!!! UNTRAINED|Usage: |Try '.*' for help", line))


def _last_line(text: Optional[str]) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


@contextlib.contextmanager
def captured(seen: Seen):
    """Capture stdout/stderr at the Python and the file-descriptor level into ``seen``."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        saved = os.dup(1), os.dup(2)
        py_out, py_err = io.StringIO(), io.StringIO()
        os.dup2(fd_out.fileno(), 1)
        os.dup2(fd_err.fileno(), 2)
        try:
            with contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_err):
                yield seen
        finally:
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
            fd_out.seek(0)
            fd_err.seek(0)
            seen.out += py_out.getvalue() + fd_out.read().decode(errors="replace")
            seen.err += py_err.getvalue() + fd_err.read().decode(errors="replace")


def invoke(command: str, entry: Callable[[list], Optional[int]], args: Sequence) -> Seen:
    """Run a console entry point in process, as the shell would; SystemExit gives the code."""
    seen = Seen(command=f"{command} {' '.join(map(str, args))}", code=0, out="", err="")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with captured(seen), warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            code = entry([str(a) for a in args])
            seen.code = int(code or 0)
        except SystemExit as e:
            seen.code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - exactly what the battery is looking for
            seen.crash = traceback.format_exc()
            seen.code = 1
    for sig, handler in handlers.items():  # tr2m-export installs a SIGTERM handler
        signal.signal(sig, handler)
    return seen


def click_entry(command) -> Callable[[list], None]:
    """A click command called as its console script would be (standalone mode)."""
    return lambda args: command.main(args=args, prog_name=command.name, standalone_mode=True)


def api_error(fn: Callable[[], object], types: Tuple[Type[BaseException], ...], pattern: str) -> Result:
    """The API refused: ``fn()`` raised one of ``types`` with a one-line message matching pattern."""
    seen = Seen(command="api", code=0, out="", err="")
    try:
        with captured(seen), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = fn()
    except types as e:
        message = str(e)
        if "\n" in message.strip():
            raise Crash(f"{type(e).__name__} message spans lines: {message[:200]!r}") from e
        if not re.search(pattern, message, re.IGNORECASE):
            raise Unclear(f"does not say {pattern!r}: {type(e).__name__}: {message}") from e
        return Result(CLEAR, f"{type(e).__name__}: {message}")
    except Exception as e:  # noqa: BLE001
        raise Crash(f"undocumented {type(e).__module__}.{type(e).__name__}: {_last_line(str(e))}") from e
    raise Crash(f"accepted silently (returned {type(value).__name__})")


# ------------------------------------------------------------------------------ the context
@dataclass
class Context:
    """Everything a case may use. ``bundle`` is shared and must not be modified: copy it."""

    bundle: Path
    root: Path
    cache: Path
    engine_bundle: Optional[Callable[[], Path]] = None  # builds an RTX engine once (lazily)
    partial_ok: bool = False  # a failed run may leave complete outputs of the frames it did

    @property
    def out(self) -> Path:
        return self.root / "out"

    def path(self, name: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def copy_bundle(self, source: Optional[Path] = None, name: str = "bundle") -> Path:
        return Path(shutil.copytree(source or self.bundle, self.root / name))

    def run(self, *args, bundle: Optional[Path] = None, out: Optional[Path] = None, cache=None,
            caption: Optional[str] = "a room") -> Seen:
        """tr2m-run SOURCE... with --out (default: the case's), --cache-dir (default: the shared
        warm cache; False: none) and a caption."""
        from runtime.cli import main

        extra = ["--bundle", bundle or self.bundle, "-q", "--out", out or self.out]
        extra += ["--cache-dir", cache or self.cache] if cache is not False else []
        extra += ["--caption", caption] if caption is not None else []
        return invoke("tr2m-run", main, [*args, *extra])

    def export(self, *args) -> Seen:
        from export.cli import main  # tr2m-export

        return invoke("tr2m-export", click_entry(main), args)

    def evaluate(self, *args) -> Seen:
        from tr2m.evaluation.cli import main

        return invoke("tr2m-eval", click_entry(main), [*args, "--quiet"])

    def train(self, *args) -> Seen:
        from tr2m.training.cli import main

        return invoke("tr2m-train", click_entry(main), [*args, "--no-progress", "--num-workers", "0"])


# ------------------------------------------------------------------------------ judging
def debris(folders: Iterable[Path]) -> list:
    """Temporary files and staging folders under ``folders``."""
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [p for p in folder.rglob("*") if _DEBRIS.search(p.name)]
    return found


def check_cache_folder(folder: Path) -> None:
    """Every caption-cache entry under folder is whole and filed under its own key (a set-aside
    ``*.corrupt`` file is fine); raises Leftover for a poisoned entry."""
    from runtime.cache import cache_key

    for path in folder.rglob("*.npz") if folder.is_dir() else ():
        if path.is_dir():
            continue  # a case's own obstacle (an entry that is a folder)
        try:
            with np.load(path, allow_pickle=False) as z:
                vec, encoder, caption = z["embedding"], z["encoder_id"].tobytes(), z["caption"].tobytes()
        except Exception as e:  # noqa: BLE001
            raise Leftover(f"unreadable cache entry {path.name} ({e})") from e
        key = hashlib.sha256(encoder + b"\0" + caption).hexdigest()
        if path.stem != key or key != cache_key(encoder.decode("utf-8", "surrogatepass"),
                                                caption.decode("utf-8", "surrogatepass")):
            raise Leftover(f"cache entry {path.name} holds another caption's embedding")
        if vec.dtype != np.float32 or vec.ndim != 1 or not np.isfinite(vec).all():
            raise Leftover(f"cache entry {path.name} holds a bad embedding ({vec.dtype} {vec.shape})")


def run_case(case: Case, ctx: Context) -> Outcome:
    """Run one case in ctx.root and judge it (the case's verdict, then debris and the caches)."""
    started = time.perf_counter()
    details = ""
    try:
        result = case.run(ctx)
        verdict, message = result.verdict, result.message
        if verdict == CLEAR and ctx.out.exists() and not ctx.partial_ok:
            raise Leftover(f"the failed run left {ctx.out.name}/: {sorted(p.name for p in ctx.out.iterdir())[:4]}")
        found = debris([ctx.root, ctx.cache])
        if found:
            raise Leftover(f"left {', '.join(sorted(str(p.relative_to(p.parents[1])) for p in found)[:3])}")
        for folder in [ctx.cache, *ctx.root.rglob("cache*")]:
            check_cache_folder(folder)
    except Skip as e:
        verdict, message = SKIPPED, str(e)
    except Leftover as e:
        verdict, message = LEFTOVER, str(e)
    except Unclear as e:
        verdict, message = UNCLEAR, str(e)
    except Crash as e:
        verdict, message = CRASH, str(e)
        details = e.details or "".join(traceback.format_exception(e))
    except Exception as e:  # noqa: BLE001 - the case itself broke: report, do not stop the battery
        verdict, message = CRASH, f"{type(e).__name__}: {_last_line(str(e))}"
        details = traceback.format_exc()
    return Outcome(case, verdict, " ".join(message.split()), time.perf_counter() - started, details)


def build_engine_bundle(bundle: Path, folder: Path) -> Path:
    """A copy of ``bundle`` with a TensorRT for RTX engine of the image graph built for sm86 (no GPU
    needed: RTX builds ahead of time); raises Skip without tensorrt_rtx."""
    try:
        import tensorrt_rtx  # noqa: F401
    except ImportError as e:
        raise Skip("TensorRT for RTX is not installed: no engine to tamper with") from e
    from export.cli import main

    copy = Path(shutil.copytree(bundle, folder))
    seen = invoke("tr2m-export", click_entry(main),
                  ["trt", "--bundle", copy, "--flavour", "rtx", "--target", "sm86", "--graphs", "image"])
    if seen.code != 0 or seen.crash:
        raise RuntimeError(f"could not build the RTX engine:\n{seen.explain()}")
    return copy
