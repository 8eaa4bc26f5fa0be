"""`DepthService`: the Ray Serve deployment behind `tr2m-serve` (one Engine per replica).

    POST /depth      image + caption (or text embedding) -> depth (see depth_api for the contract)
    GET  /healthz    200 while the replica answers
    GET  /readyz     200 once the Engine is open and warmed up, else 503
    GET  /info       the model: input size, text width, batching, display range
    GET  /           a page for people (pick an image, type a caption, read depth in metres)

Requests are grouped by Serve's dynamic batching (a max batch and a wait budget) and run through
`Engine.predict_batch` in a worker thread, so the replica keeps answering health checks while
the model runs. Each replica has its own caption cache in memory over the shared disk cache.

No `from __future__ import annotations` here: FastAPI reads the endpoint annotations as types.
"""
import asyncio
import time
from dataclasses import asdict, dataclass
from importlib import resources
from typing import List, Optional, Union

import numpy as np

from .cluster import require

require("ray.serve", "fastapi")

from fastapi import FastAPI, Request  # noqa: E402 - after the one-line check above
from fastapi.responses import HTMLResponse, JSONResponse, Response  # noqa: E402
from ray import serve  # noqa: E402

from ..colormap import turbo_lut  # noqa: E402
from ..display_range import auto_range, default_range  # noqa: E402
from ..engine import Engine  # noqa: E402
from ..errors import Tr2mRuntimeError  # noqa: E402
from .depth_api import DepthAnswer, DepthRequest, Limits, RequestError, encode_answer, parse_request  # noqa: E402

PAGE_FILES = {"page.js": "text/javascript", "page.css": "text/css"}


@dataclass(frozen=True)
class ServiceOptions:
    """One replica's model and batching. max_batch 1 turns batching off; batch_wait_ms is how
    long a first request waits for others to join its batch."""

    bundle: str
    backend: str = "auto"
    precision: str = "fp32"
    cache_dir: Optional[str] = None
    max_batch: int = 8
    batch_wait_ms: float = 10.0
    limits: Limits = Limits()
    backend_options: Optional[object] = None  # e.g. OpenVINOOptions (RunOptions.openvino_options)

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.batch_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and batch_wait_ms >= 0, got {self.max_batch}, {self.batch_wait_ms}")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (never read whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is {declared} bytes; at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _page_file(name: str) -> bytes:
    return resources.files("runtime.scale").joinpath("page", name).read_bytes()


# Serve pickles the ingress class when it is decorated: what it uses must be defined above it.
app = FastAPI(title="tr2m depth service", docs_url=None, redoc_url=None)


@serve.deployment(graceful_shutdown_wait_loop_s=1.0, graceful_shutdown_timeout_s=20.0,
                  health_check_period_s=10.0)
@serve.ingress(app)
class DepthService:
    def __init__(self, options: ServiceOptions) -> None:
        self.options = options
        self.ready = False
        self.engine = Engine.open(options.bundle, backend=options.backend, precision=options.precision,
                                  cache_dir=options.cache_dir, backend_options=options.backend_options)
        self._predict.set_max_batch_size(options.max_batch)
        self._predict.set_batch_wait_timeout_s(options.batch_wait_ms / 1e3)
        # Warm-up: the first run of a graph allocates; do it before saying "ready".
        self.engine.predict(np.zeros((*self.engine.input_size, 3), np.uint8),
                            text_emb=np.zeros(self.engine.bundle.text_dim, np.float32))
        self.ready = True

    def check_health(self) -> None:  # Serve calls this; raising restarts the replica
        if self.engine is None:
            raise RuntimeError("the Engine is gone")

    # --------------------------------------------------------------------- endpoints
    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    @app.get("/info")
    async def info(self) -> dict:
        bundle = self.engine.bundle
        return {"input_size": list(self.engine.input_size), "text_dim": bundle.text_dim,
                "preset": bundle.manifest.get("preset"), "untrained": bundle.untrained,
                "backend": self.engine.backend_name, "precision": self.engine.precision,
                "backend_details": self.engine.describe_backend(),
                "max_batch": self.options.max_batch, "batch_wait_ms": self.options.batch_wait_ms,
                "display_range_m": default_range(bundle.manifest), "limits": asdict(self.options.limits),
                "colormap": turbo_lut().tolist()}  # the page colours depth exactly as tr2m-run does

    @app.post("/depth")
    async def depth(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await _read_body(request, self.options.limits.max_bytes)
            parsed = parse_request(body, request.query_params, request.headers,
                                   text_dim=self.engine.bundle.text_dim, limits=self.options.limits)
        except RequestError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        decoded = time.perf_counter()
        answer = await self._predict((parsed, decoded))
        if isinstance(answer, Tr2mRuntimeError):
            return JSONResponse({"error": str(answer)}, status_code=400)
        answer.timings_ms["decode"] = (decoded - started) * 1e3
        encoding = time.perf_counter()
        body, media, headers = encode_answer(answer, parsed.fmt)
        answer.timings_ms["encode"] = (time.perf_counter() - encoding) * 1e3
        headers["Server-Timing"] += f", encode;dur={answer.timings_ms['encode']:.2f}"
        return Response(body, media_type=media, headers=headers)

    @app.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(_page_file("index.html"))

    @app.get("/page/{name}")
    async def page_file(self, name: str) -> Response:
        if name not in PAGE_FILES:
            return JSONResponse({"error": f"no page file {name!r}"}, status_code=404)
        return Response(_page_file(name), media_type=PAGE_FILES[name])

    # --------------------------------------------------------------------- batching
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _predict(self, items: List[tuple]) -> List[Union[DepthAnswer, Tr2mRuntimeError]]:
        """B (DepthRequest, queued-at) pairs -> B answers; the max batch and wait are set per replica."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._run_batch, items)

    def _run_batch(self, items: List[tuple]) -> List[Union[DepthAnswer, Tr2mRuntimeError]]:
        started = time.perf_counter()
        requests = [r for r, _ in items]
        try:
            depths = self._depths(requests)
        except Tr2mRuntimeError as e:
            if len(requests) == 1:
                return [e]
            return [a for item in items for a in self._run_batch([item])]  # isolate the bad one
        infer_ms = (time.perf_counter() - started) * 1e3
        manifest_range = default_range(self.engine.bundle.manifest)
        return [DepthAnswer(depth=d, input_size=tuple(self.engine.input_size), batch_size=len(items),
                            range_m=manifest_range or auto_range(d),
                            timings_ms={"queue": (started - queued) * 1e3, "infer": infer_ms})
                for d, (_, queued) in zip(depths, items)]

    def _depths(self, requests: List[DepthRequest]) -> List[np.ndarray]:
        """Captions are embedded together (cache first), then one image-graph run for the batch."""
        captions = [r.caption for r in requests if r.caption is not None]
        embedded = iter(self.engine.embed(captions)) if captions else iter(())
        text_emb = np.stack([r.text_emb if r.text_emb is not None else next(embedded) for r in requests])
        return self.engine.predict_batch([r.image for r in requests], text_emb=text_emb)


def build(options: ServiceOptions, *, replicas: int = 1, cpus_per_replica: float = 1.0,
          gpus_per_replica: float = 0.0):
    """The Serve application to pass to `serve.run`."""
    actor = {"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica}
    # Requests a replica may hold at once: a few batches' worth, so batches can fill.
    ongoing = max(4, 4 * options.max_batch)
    return DepthService.options(num_replicas=replicas, ray_actor_options=actor,
                                max_ongoing_requests=ongoing).bind(options)
