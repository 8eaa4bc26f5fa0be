"""tr2m-serve over real HTTP: answers equal the Engine's, batching, every bad request is a 4xx
and the service lives on, the README's curl line, and the one-line errors of the command."""
from __future__ import annotations

import base64
import io
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import Engine
from runtime.colormap import turbo_lut
from runtime.scale.client import DepthClient, ServiceError
from runtime.sources import read_image

from .conftest import REPO, SERVE

CAPTION = "an office"


@pytest.fixture(scope="module")
def engine(tiny_bundle, tmp_path_factory):
    return Engine.open(tiny_bundle.bundle, backend="ort-cpu", cache_dir=tmp_path_factory.mktemp("engine-cache"))


@pytest.fixture(scope="module")
def photo(shared_data) -> Path:
    return shared_data / "metric3d_nyu" / "rgb" / "rgb_00000.jpg"


@pytest.fixture(scope="module")
def client(service) -> DepthClient:
    return DepthClient(service.url)


def test_depth_equals_the_engine_and_headers_tell_sizes_and_timings(client, engine, photo):
    answer = client.request(photo, caption=CAPTION, fmt="npy")
    depth = client.depth(photo, caption=CAPTION)
    expected = engine.predict(read_image(photo), CAPTION)
    # Same graph on the same backend; a batch of several may reorder float sums: 1e-4 relative.
    np.testing.assert_allclose(depth, expected, rtol=1e-4, atol=1e-6)
    h, w = expected.shape
    assert answer.headers["X-Image-Size"] == f"{h}x{w}"
    assert answer.headers["X-Input-Size"] == "x".join(map(str, engine.input_size))
    assert {"queue", "infer", "decode", "encode"} <= set(answer.timings_ms())


def test_png16_is_millimetres_and_an_embedding_gives_the_caption_s_answer(client, engine, photo):
    png = client.depth_png16(photo, caption=CAPTION)
    mm = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    depth = client.depth(photo, caption=CAPTION)
    assert mm.dtype == np.uint16 and mm.shape == depth.shape
    assert np.abs(mm.astype(np.float64) - np.clip(depth * 1000, 1, 65535)).max() <= 0.5 + 1e-3
    embedded = client.depth(photo, text_emb=engine.embed([CAPTION])[0])
    np.testing.assert_allclose(embedded, depth, rtol=1e-4, atol=1e-6)


def test_replicas_embed_through_the_shared_disk_cache(service, client, engine, photo):
    from runtime.cache import CaptionCache

    caption = "a caption only this test uses"
    client.depth(photo, caption=caption)
    shared = CaptionCache(engine.bundle.text_encoder_id, engine.bundle.text_dim, directory=service.cache_dir)
    assert shared.path_for(caption).is_file()  # written by the replica, readable by any other process


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(client, shared_data):
    paths = [shared_data / "metric3d_nyu" / "rgb" / f"rgb_{i:05d}.jpg" for i in (0, 50)]
    singles = [client.depth(p, caption=CAPTION) for p in paths]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: client.request(paths[i % 2], caption=CAPTION), range(8)))
    assert max(int(a.headers["X-Batch-Size"]) for a in answers) > 1
    for i, answer in enumerate(answers):
        depth = np.load(io.BytesIO(answer.body))
        np.testing.assert_allclose(depth, singles[i % 2], rtol=1e-4, atol=1e-6)


def _png_declaring(width: int, height: int) -> bytes:
    ok, png = cv2.imencode(".png", np.zeros((2, 2), np.uint8))
    data = bytearray(png.tobytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


def _bad_requests(photo: Path, dim: int):
    good = photo.read_bytes()
    wrong = base64.b64encode(np.zeros(dim + 1, np.float32).tobytes()).decode()
    return [  # (body, query, headers, status, words in the message)
        (b"", {"caption": CAPTION}, {}, 400, "empty"),
        (b"hello, not an image", {"caption": CAPTION}, {}, 415, "not a PNG or JPEG"),
        (good[: len(good) // 3], {"caption": CAPTION}, {}, 400, "not a readable image"),
        (_png_declaring(100_000, 100_000), {"caption": CAPTION}, {}, 413, "downscale"),
        (b"\xff\xd8\xff" + bytes(2 << 20), {"caption": CAPTION}, {}, 413, "at most"),
        (good, {}, {}, 400, "caption"),
        (good, {"caption": "   "}, {}, 400, "empty"),
        (good, {"caption": CAPTION}, {"X-Text-Embedding": wrong}, 400, "exactly one"),
        (good, {}, {"X-Text-Embedding": wrong}, 400, f"float32 [{dim}]"),
        (good, {}, {"X-Text-Embedding": "%%%"}, 400, "base64"),
        (good, {"caption": CAPTION, "format": "tiff"}, {}, 400, "png16, npy, json"),
    ]


def test_bad_requests_get_a_4xx_with_a_clear_message_and_the_service_lives_on(service, client, engine, photo):
    import urllib.error
    import urllib.parse
    import urllib.request

    for body, query, headers, status, words in _bad_requests(photo, engine.bundle.text_dim):
        request = urllib.request.Request(f"{service.url}/depth?{urllib.parse.urlencode(query)}", data=body,
                                         headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        message = caught.value.read().decode()
        assert caught.value.code == status, (query, headers, message)
        assert words in message and "\n" not in message and "Traceback" not in message
    assert client.healthy() and client.ready()
    assert client.depth(photo, caption=CAPTION).shape == read_image(photo).shape[:2]


def test_health_readiness_and_info(client, engine):
    assert client.healthy() and client.ready()
    info = client.info()
    assert info["input_size"] == list(engine.input_size) and info["max_batch"] == 4
    assert info["backend"] == engine.backend_name and info["backend_details"] == engine.describe_backend()
    assert np.array_equal(np.array(info["colormap"], np.uint8), turbo_lut())


def test_the_readme_curl_line_gets_a_png16(service, photo, tmp_path):
    readme = (REPO / "README.md").read_text()
    line = next(s.strip() for s in readme.splitlines() if s.strip().startswith("curl ") and "/depth" in s)
    args = [a.replace("127.0.0.1:8000", f"127.0.0.1:{service.port}") for a in shlex.split(line)]
    upload = next(a for a in args if a.startswith("@"))
    (tmp_path / upload[1:]).write_bytes(photo.read_bytes())
    subprocess.run(args, cwd=tmp_path, check=True, timeout=60, capture_output=True)
    out = tmp_path / args[args.index("-o") + 1]
    mm = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert mm.dtype == np.uint16 and mm.shape == read_image(photo).shape[:2] and mm.max() > 0


def test_unreachable_service_is_one_line():
    with pytest.raises(ServiceError, match="cannot reach") as caught:
        DepthClient("http://127.0.0.1:9", timeout_s=2).info()
    assert caught.value.status == 0


@pytest.mark.parametrize("prelude, args, words", [
    ("sys.modules['ray'] = None", ["--bundle", "."], 'pip install "tr2m[ray]"'),
    ("", ["--bundle", "/nonexistent/bundle"], "/nonexistent/bundle"),
    ("", ["--bundle", ".", "--backend", "openvno"], "'openvino'"),  # tr2m-run's backends, refused before Ray starts
    ("", ["--bundle", ".", "--backend", "ort-cpu", "--ov-precision", "f32"], "apply to the openvino backend"),
])
def test_command_errors_are_one_line_exit_2(prelude, args, words):
    code = f"import sys; {prelude}\n" + SERVE
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr


def test_batch_without_ray_is_one_line_naming_the_extra(tiny_bundle, shared_data, tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from runtime.scale.entry import batch_main; sys.exit(batch_main())")
    video = shared_data / "videos" / "sam2_bedroom.mp4"
    result = subprocess.run([sys.executable, "-c", code, str(video), "--bundle", str(tiny_bundle.bundle),
                             "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and 'pip install "tr2m[ray]"' in result.stderr


def test_scale_modules_never_import_torch():
    modules = ["runtime.scale.client", "runtime.scale.depth_api", "runtime.scale.service", "runtime.scale.batch_cli",
               "runtime.scale.batch", "runtime.scale.folders", "runtime.scale.videos"]
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
