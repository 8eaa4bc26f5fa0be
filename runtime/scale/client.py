"""A small client for `tr2m-serve` (standard library + numpy; no Ray needed).

    from runtime.scale.client import DepthClient
    client = DepthClient("http://127.0.0.1:8000")
    depth = client.depth("room.jpg", caption="an office")      # float32 [H, W], metres
    png = client.depth_png16(open("room.jpg", "rb").read(), caption="an office")  # bytes, mm
"""
from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np

from ..errors import Tr2mRuntimeError
from .depth_api import EMBEDDING_HEADER

Image = Union[bytes, str, Path]


class ServiceError(Tr2mRuntimeError):
    """The service answered with an error (``status`` is the HTTP status, 0 if unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Answer:
    """The raw answer: body bytes and the headers (X-Input-Size, Server-Timing, ...; names are
    case-insensitive)."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def timings_ms(self) -> Dict[str, float]:
        """Server-Timing as {stage: milliseconds}."""
        out = {}
        for part in self.headers.get("Server-Timing", "").split(","):
            name, _, dur = part.strip().partition(";dur=")
            if dur:
                out[name] = float(dur)
        return out


class DepthClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", *, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def depth(self, image: Image, *, caption: Optional[str] = None,
              text_emb: Optional[np.ndarray] = None) -> np.ndarray:
        """image (file path or PNG/JPEG bytes) -> depth float32 [H, W] in metres."""
        answer = self.request(image, caption=caption, text_emb=text_emb, fmt="npy")
        return np.load(io.BytesIO(answer.body), allow_pickle=False)

    def depth_png16(self, image: Image, *, caption: Optional[str] = None,
                    text_emb: Optional[np.ndarray] = None) -> bytes:
        """-> a 16-bit PNG file's bytes, depth in millimetres (0 = invalid)."""
        return self.request(image, caption=caption, text_emb=text_emb, fmt="png16").body

    def request(self, image: Image, *, caption: Optional[str] = None, text_emb: Optional[np.ndarray] = None,
                fmt: str = "npy") -> Answer:
        """One POST /depth; ServiceError with the service's one-line message on a 4xx/5xx."""
        body = image if isinstance(image, bytes) else Path(image).read_bytes()
        query = {"format": fmt}
        headers = {"Content-Type": "application/octet-stream"}
        if caption is not None:
            query["caption"] = caption
        if text_emb is not None:
            raw = np.ascontiguousarray(text_emb, dtype="<f4").tobytes()
            headers[EMBEDDING_HEADER] = base64.b64encode(raw).decode("ascii")
        return self._call("POST", "/depth?" + urllib.parse.urlencode(query), body, headers)

    def healthy(self) -> bool:
        return self._status("/healthz") == 200

    def ready(self) -> bool:
        return self._status("/readyz") == 200

    def info(self) -> dict:
        return json.loads(self._call("GET", "/info").body)

    def _status(self, path: str) -> int:
        try:
            self._call("GET", path)
        except ServiceError as e:
            return e.status
        return 200

    def _call(self, method: str, path: str, body: Optional[bytes] = None,
              headers: Optional[Dict[str, str]] = None) -> Answer:
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return Answer(response.read(), response.headers)
        except urllib.error.HTTPError as e:
            raise ServiceError(e.code, f"{e.code}: {_message(e.read())}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ServiceError(0, f"cannot reach {self.url} ({getattr(e, 'reason', e)})") from None


def _message(body: bytes) -> str:
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:200]
