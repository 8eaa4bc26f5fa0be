"""`tr2m-serve`: metric depth over HTTP on Ray Serve (a local Ray, or a cluster with --address).

    tr2m-serve --bundle bundles/paper                       # http://127.0.0.1:8000/
    curl --data-binary @room.jpg "http://127.0.0.1:8000/depth?caption=an%20office" -o depth_mm.png

Runs until Ctrl-C or SIGTERM, then drains: requests in flight are answered, new ones refused.
Exit codes: 0 stopped cleanly; 2 bad options, bundle or port (one line ``error: ...``).
"""
from __future__ import annotations

import signal
import socket
import threading
import click

from ..cli import command as run_command
from .cluster import ClusterOptions, RayCluster, require
from .depth_api import Limits

# tr2m-run's --backend and --ov-* as they are (choices and help), so the two commands never differ.
BACKEND = next(p for p in run_command.params if p.name == "backend")
OPENVINO = [p for p in run_command.params if p.name.startswith("ov_")]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--bundle", required=True, type=click.Path(), help="Exported bundle folder (tr2m-export onnx).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the service to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(1),
              help="Model replicas; each holds one Engine and its own caption cache.")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1),
              help="Largest dynamic batch; 1 turns batching off.")
@click.option("--batch-wait-ms", default=10.0, show_default=True, type=click.FloatRange(0),
              help="How long a request waits for others to join its batch.")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "int8"]))
@click.option("--cache-dir", type=click.Path(), default=None,
              help="Caption-embedding cache folder shared by the replicas (default: the user cache).")
@click.option("--cpus-per-replica", default=1.0, show_default=True, type=click.FloatRange(0))
@click.option("--gpus-per-replica", default=0.0, show_default=True, type=click.FloatRange(0))
@click.option("--max-image-mb", default=32, show_default=True, type=click.IntRange(1),
              help="Larger request bodies get 413.")
@click.option("--address", default=None,
              help="Ray cluster to join: auto, or ray://HOST:10001. Default: start a local Ray.")
@click.option("--num-cpus", default=None, type=click.IntRange(1), help="CPUs of the local Ray (default: all).")
def command(**o) -> int:
    """Serve metric depth over HTTP: POST an image and a caption, get depth in metres.

    The page at http://HOST:PORT/ lets a person try it in a browser. Endpoints: POST /depth
    (?caption=...&format=png16|npy|json, or header X-Text-Embedding), GET /healthz, /readyz, /info.

    Runs until Ctrl-C or SIGTERM, then drains the requests in flight. Exit codes: 0 stopped;
    2 bad options, bundle or port.
    """
    from ..bundle import Bundle
    from ..run_options import OptionsError, RunOptions

    try:  # backend, precision and --ov-*, checked as tr2m-run checks them
        engine_options = RunOptions.from_params(o)
    except OptionsError as e:
        raise click.UsageError(str(e)) from None
    require("ray.serve", "fastapi")
    Bundle.open(o["bundle"], verify=True)  # a bad bundle is a one-line error here, not a replica crash
    _check_port(o["host"], o["port"])
    from ray import serve

    from .service import ServiceOptions, build

    options = ServiceOptions(bundle=str(o["bundle"]), backend=o["backend"], precision=o["precision"],
                             cache_dir=o["cache_dir"], max_batch=o["max_batch"], batch_wait_ms=o["batch_wait_ms"],
                             limits=Limits(max_bytes=o["max_image_mb"] << 20),
                             backend_options=engine_options.openvino_options())
    with RayCluster(ClusterOptions(address=o["address"], num_cpus=o["num_cpus"])):
        serve.start(http_options={"host": o["host"], "port": o["port"]})
        try:
            serve.run(build(options, replicas=o["replicas"], cpus_per_replica=o["cpus_per_replica"],
                            gpus_per_replica=o["gpus_per_replica"]), name="tr2m", route_prefix="/")
            click.echo(f"serving on http://{o['host']}:{o['port']}/  (Ctrl-C stops)", err=True)
            _wait_for_stop()
        finally:
            serve.shutdown()  # drains replicas: requests in flight still get their answer
    return 0


_at = next(i for i, p in enumerate(command.params) if p.name == "precision")
command.params[_at:_at + 1] = [BACKEND, command.params[_at], *OPENVINO]


def _check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise click.UsageError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port") from None


def _wait_for_stop() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    click.echo("stopping: draining requests in flight", err=True)
