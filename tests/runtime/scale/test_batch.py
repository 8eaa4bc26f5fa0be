"""tr2m-batch on a real local Ray: the shared videos plus a damaged one, a rerun that redoes only
a tampered folder, Ctrl-C that leaves only complete folders, and a worker killed mid-video.

One Ray is started here for the module; the commands join it with --address, as they would
join a cluster (starting a local Ray per command is what tr2m-serve's tests and the benchmark do).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runtime.scale import folders

from .conftest import REPO

BATCH = "import sys; from runtime.scale.entry import batch_main; sys.exit(batch_main())"
VIDEOS = ("sam2_04_coffee.mp4", "sam2_bedroom.mp4", "vda_davis_rollercoaster.mp4")


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="needs the Ray extra")
    pytest.importorskip("ray.data", reason="tr2m-batch needs the Ray extra")
    ray.init(address="local", num_cpus=2, object_store_memory=200 << 20, include_dashboard=False,
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def join(local_ray) -> list:
    """Options that make a command join the module's Ray instead of starting one."""
    return ["--address", local_ray.get_runtime_context().gcs_address, "--cpus-per-worker", "0.5",
            "--backend", "ort-cpu"]


@pytest.fixture(scope="module")
def videos(shared_data):
    paths = [shared_data / "videos" / v for v in VIDEOS]
    if not all(p.is_file() for p in paths):
        pytest.skip("the three shared videos are missing")
    return paths


@pytest.fixture
def damaged(videos, tmp_path) -> Path:
    """A real mp4 cut to its first third: its index is gone, so no frame can be found."""
    data = videos[1].read_bytes()
    path = tmp_path / "damaged.mp4"
    path.write_bytes(data[: len(data) // 3])
    return path


def _batch(args, **kw):
    return subprocess.run([sys.executable, "-c", BATCH, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, **kw)


def _assert_only_complete_folders(out: Path) -> list:
    assert not list(out.glob(f".*{folders.PARTIAL_MARK}*")), "a staging folder was left behind"
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    for name in names:
        assert folders.check_complete(out / name) is None, name
    return names


def test_videos_and_a_damaged_one_then_a_rerun_redoes_only_what_is_incomplete(join, tiny_bundle, videos, damaged,
                                                                             tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [*videos, damaged, "--bundle", tiny_bundle.bundle, "--out", out, "--caption", "a room", "--no-video",
            "--png16", "--max-frames", "3", "--workers", "1:2", "--cache-dir", cache, *join]
    first = _batch(args)
    assert first.returncode == 1, first.stderr[-3000:]  # 1: some video failed
    summary = json.loads((out / "batch.json").read_text())
    rows = {r["name"]: r for r in summary["videos"]}
    assert [rows[Path(v).stem]["status"] for v in VIDEOS] == ["done"] * 3
    assert all(rows[Path(v).stem]["frames"] == 3 for v in VIDEOS)
    assert rows["damaged"]["status"] == "failed" and "damaged" in rows["damaged"]["error"]
    assert "\n" not in rows["damaged"]["error"] and "damaged" in first.stdout  # the table names it
    assert _assert_only_complete_folders(out) == sorted(Path(v).stem for v in VIDEOS)
    assert len(list((out / "sam2_bedroom" / "png16").glob("*.png"))) == 3

    next((out / "sam2_bedroom" / "png16").glob("*.png")).unlink()  # a folder that is no longer complete
    second = _batch(args)
    assert second.returncode == 1, second.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads((out / "batch.json").read_text())["videos"]}
    assert rows["sam2_bedroom"]["status"] == "done"
    assert rows["sam2_04_coffee"]["status"] == rows["vda_davis_rollercoaster"]["status"] == "skipped"
    assert len(list((out / "sam2_bedroom" / "png16").glob("*.png"))) == 3
    _assert_only_complete_folders(out)


def test_ctrl_c_leaves_only_complete_folders_and_exit_130(join, tiny_bundle, videos, tmp_path):
    out = tmp_path / "out"
    args = [*videos, "--bundle", tiny_bundle.bundle, "--out", out, "--caption", "a room", "--png16",
            "--max-frames", "400", "--workers", "2", "--cache-dir", tmp_path / "cache", *join]
    process = subprocess.Popen([sys.executable, "-c", BATCH, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(out.glob(f".*{folders.PARTIAL_MARK}*/png16/*.png")):  # a video is being written
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    _assert_only_complete_folders(out)
    summary = json.loads((out / "batch.json").read_text())
    assert summary["interrupted"] and summary["counts"]["interrupted"] >= 1


def run_killing_a_worker(run, kill) -> list:
    """Run the batch in a thread; as soon as a video is being written, kill(pid of its worker)."""
    from runtime.scale.batch import clean_up, execute

    results, errors = [], []
    thread = threading.Thread(target=lambda: _collect(execute, run, results, errors), daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not (staging := list(run.out.glob(f".*{folders.PARTIAL_MARK}*/png16/*.png"))):
        assert thread.is_alive() and time.monotonic() < deadline, errors
        time.sleep(0.1)
    victim = int(staging[0].parents[1].name.rsplit("-", 2)[1])  # .NAME.partial-HOST-PID-XXXX
    kill(victim)
    thread.join(400)
    assert not errors, errors
    clean_up(run.out)
    return results, victim, staging[0].parents[1].name.split(folders.PARTIAL_MARK)[0][1:]


def _collect(execute, run, results, errors):
    try:
        results.extend(execute(run, run.jobs, lambda *a: None))
    except BaseException as e:  # noqa: BLE001 - handed to the test thread
        errors.append(e)


def batch_run(bundle, videos, out, cache, workers):
    from runtime.run_options import RunOptions
    from runtime.scale.batch import BatchRun, PoolOptions, SourceRunner
    from runtime.scale.videos import jobs

    options = RunOptions(caption="a room", video=False, png16=True, max_frames=24, backend="ort-cpu", cache_dir=cache)
    return BatchRun(jobs([str(v) for v in videos]), out, SourceRunner(str(bundle), options),
                    PoolOptions(workers, workers, cpus_per_worker=0.5))


def test_a_worker_killed_mid_video_loses_nothing(local_ray, tiny_bundle, videos, tmp_path):
    run = batch_run(tiny_bundle.bundle, videos[1:], tmp_path / "out", tmp_path / "cache", workers=2)
    results, victim, name = run_killing_a_worker(run, lambda pid: os.kill(pid, signal.SIGKILL))
    by_name = {r.name: r for r in results}
    assert sorted(by_name) == sorted(Path(v).stem for v in videos[1:])
    assert all(r.status == "done" and r.frames == 24 for r in results), results
    assert not by_name[name].worker.endswith(f":{victim}")  # retried by another (or a restarted) worker
    assert _assert_only_complete_folders(run.out) == sorted(by_name)
    assert len(list((run.out / name / "png16").glob("*.png"))) == 24
