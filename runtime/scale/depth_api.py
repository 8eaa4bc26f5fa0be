"""The depth service's HTTP contract, free of Ray and of any web framework.

    POST /depth?caption=an%20office&format=png16      body: the PNG or JPEG file's bytes
    POST /depth?format=npy   header X-Text-Embedding: base64 of float32 little-endian [D]

format: ``png16`` (depth in millimetres, 16-bit PNG, 0 = invalid), ``npy`` (float32 [H, W]
metres) or ``json`` (both of those base64-encoded, plus sizes, timings and the display range).
Every answer carries the headers X-Input-Size (the model's HxW), X-Image-Size, X-Batch-Size,
X-Display-Range-M and Server-Timing. A bad request raises RequestError with its HTTP status.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from ..colormap import nice_ticks
from ..errors import SourceError, Tr2mRuntimeError
from ..sinks import png16_bytes
from ..sources import _JPEG_MAGIC, decode_image

FORMATS = {"png16": "image/png", "npy": "application/x-npy", "json": "application/json"}
EMBEDDING_HEADER = "x-text-embedding"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they carry the size); C4, C8 and CC are other segments.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class RequestError(Tr2mRuntimeError):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may hold. The pixel limit is checked on the file's header, before
    decoding, so a small file that declares a huge image costs nothing."""

    max_bytes: int = 32 << 20
    max_pixels: int = 40_000_000
    max_caption_chars: int = 1000


@dataclass
class DepthRequest:
    """One parsed request: image uint8/uint16 [H, W, 3] RGB, a caption or an embedding float32 [D]."""

    image: np.ndarray
    caption: Optional[str]
    text_emb: Optional[np.ndarray]
    fmt: str


def parse_request(body: bytes, query: Mapping[str, str], headers: Mapping[str, str], *,
                  text_dim: int, limits: Limits = Limits()) -> DepthRequest:
    """Check and decode one request; RequestError (4xx) for anything the service cannot use."""
    fmt = query.get("format", "png16")
    if fmt not in FORMATS:
        raise RequestError(400, f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    caption, text_emb = _text(query, headers, text_dim, limits)
    return DepthRequest(image=_image(body, limits), caption=caption, text_emb=text_emb, fmt=fmt)


def _text(query, headers, text_dim: int, limits: Limits) -> Tuple[Optional[str], Optional[np.ndarray]]:
    caption, encoded = query.get("caption"), headers.get(EMBEDDING_HEADER)
    if (caption is None) == (encoded is None):
        raise RequestError(400, "give exactly one of: a caption (?caption=an%20office) or a text "
                                f"embedding (header X-Text-Embedding: base64 float32 [{text_dim}])")
    if caption is not None:
        if not caption.strip():
            raise RequestError(400, "the caption is empty: describe the scene in a few words (e.g. 'an office')")
        if len(caption) > limits.max_caption_chars:
            raise RequestError(400, f"the caption has {len(caption)} characters; at most {limits.max_caption_chars}")
        return caption, None
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "X-Text-Embedding is not valid base64") from None
    if len(raw) != 4 * text_dim:
        raise RequestError(400, f"X-Text-Embedding holds {len(raw)} bytes; this model needs float32 "
                                f"[{text_dim}] ({4 * text_dim} bytes)")
    emb = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(emb).all():
        raise RequestError(400, "X-Text-Embedding contains NaN or infinite values")
    return None, emb


def _image(body: bytes, limits: Limits) -> np.ndarray:
    if not body:
        raise RequestError(400, "the request body is empty: POST the bytes of a PNG or JPEG image")
    if len(body) > limits.max_bytes:
        raise RequestError(413, f"the image is {len(body)} bytes; at most {limits.max_bytes}")
    size = declared_size(body)
    if size is None:
        raise RequestError(415, "the body is not a PNG or JPEG image")
    if size[0] * size[1] > limits.max_pixels:
        raise RequestError(413, f"the image is {size[1]}x{size[0]} pixels; at most {limits.max_pixels} "
                                "pixels: downscale it first")
    try:
        return decode_image(np.frombuffer(body, np.uint8), "the request body")
    except SourceError as e:
        raise RequestError(400, str(e)) from None


def declared_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) as a PNG or JPEG header declares it; None for anything else."""
    if data.startswith(_PNG_MAGIC) and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if not data.startswith(_JPEG_MAGIC):
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


# ------------------------------------------------------------------------------ answers
@dataclass
class DepthAnswer:
    """What the service computed for one request (depth float32 [H, W] metres)."""

    depth: np.ndarray
    input_size: Tuple[int, int]
    batch_size: int
    range_m: Tuple[float, float]
    timings_ms: Dict[str, float]


def npy_bytes(depth: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(depth, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def encode_answer(answer: DepthAnswer, fmt: str) -> Tuple[bytes, str, Dict[str, str]]:
    """-> (body, media type, headers) for the format the client asked for."""
    if fmt == "png16":
        body = png16_bytes(answer.depth)
    elif fmt == "npy":
        body = npy_bytes(answer.depth)
    else:
        body = json.dumps(_json_answer(answer)).encode()
    return body, FORMATS[fmt], answer_headers(answer)


def _json_answer(answer: DepthAnswer) -> dict:
    return {
        "image_size": list(answer.depth.shape[:2]),
        "input_size": list(answer.input_size),
        "batch_size": answer.batch_size,
        "display_range_m": list(answer.range_m),
        "legend_ticks_m": nice_ticks(*answer.range_m),
        "timings_ms": answer.timings_ms,
        "npy_base64": base64.b64encode(npy_bytes(answer.depth)).decode("ascii"),
        "png16_base64": base64.b64encode(png16_bytes(answer.depth)).decode("ascii"),
    }


def answer_headers(answer: DepthAnswer) -> Dict[str, str]:
    h, w = answer.depth.shape[:2]
    timing = ", ".join(f"{name};dur={ms:.2f}" for name, ms in answer.timings_ms.items())
    return {
        "X-Input-Size": f"{answer.input_size[0]}x{answer.input_size[1]}",
        "X-Image-Size": f"{h}x{w}",
        "X-Batch-Size": str(answer.batch_size),
        "X-Display-Range-M": f"{answer.range_m[0]:g},{answer.range_m[1]:g}",
        "Server-Timing": timing,
    }
