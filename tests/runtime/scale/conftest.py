"""A real `tr2m-serve` process on 127.0.0.1, started once per session (Ray start-up costs ~20 s)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SERVE = ("import sys; from runtime.scale.entry import serve_main; sys.exit(serve_main())")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`tr2m-serve` in a subprocess; ``url`` once /readyz says 200."""

    def __init__(self, bundle: Path, cache_dir: Path, *extra: str) -> None:
        pytest.importorskip("ray.serve", reason="tr2m-serve needs the Ray extra")
        self.port, self.cache_dir = free_port(), cache_dir
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-c", SERVE, "--bundle", str(bundle), "--port", str(self.port), "--num-cpus", "2",
                "--cpus-per-replica", "0.5", "--backend", "ort-cpu", "--cache-dir", str(cache_dir), *extra]
        self.process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)

    def wait_ready(self, timeout_s: float = 120.0) -> "ServeProcess":
        from runtime.scale.client import DepthClient

        client = DepthClient(self.url, timeout_s=5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tr2m-serve exited {self.process.returncode}: {self.process.stderr.read()[-3000:]}")
            if client.ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise AssertionError("tr2m-serve was not ready in time")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (a graceful stop), then the exit code; killed if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="session")
def service(tiny_bundle, tmp_path_factory):
    """tr2m-serve with batching (max batch 4, 50 ms wait, 1 MB bodies) on the tiny bundle; at the end it must
    stop gracefully on SIGTERM (exit 0)."""
    server = ServeProcess(tiny_bundle.bundle, tmp_path_factory.mktemp("serve-cache"),
                          "--max-batch", "4", "--batch-wait-ms", "50", "--max-image-mb", "1").wait_ready()
    yield server
    code = server.stop()
    assert code == 0, f"tr2m-serve did not stop cleanly on SIGTERM (exit {code}): {server.process.stderr.read()[-2000:]}"
