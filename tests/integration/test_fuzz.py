"""The fuzz suite: generated hostile requests against the real `bentoml serve` of the champions.

Hypothesis generates the requests (fixed seed, bounded count): mutated and truncated images of
every accepted format, header-only decompression bombs, hand-framed multipart bodies (boundaries,
repeated, unknown and oversized fields, text values, odd part headers and encodings), wrong
methods, routes and content types. Each example is a burst of 8 requests sent at once, as
clients would. Every answer must be below 500, every error the service's JSON
{"error", "status"}; /readyz stays green, and a good request's answer is the same after.

Hypothesis rather than Schemathesis: the inputs that broke the service were bytes below the
schema (multipart framing, corrupt image chunks), which a generator working from the OpenAPI
document does not make; Hypothesis builds them directly, keeps a fixed seed, and shrinks a
failure to the smallest burst that shows it.

    GANDEFECT_FUZZ_REQUESTS=20000 .venv/bin/python -m pytest tests/integration/test_fuzz.py -s   # the long run
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

pytestmark = pytest.mark.slow

REQUESTS = int(os.environ.get("GANDEFECT_FUZZ_REQUESTS", "1000"))  # in CI; set higher for a longer run
BURST = 8  # requests per example, sent at once
ROUTES = ["/detect", "/localize", "/repair", "/metadata"]
IMAGE_ROUTES = ROUTES[:3]
FIELDS = {"/detect": "images", "/localize": "image", "/repair": "image", "/metadata": "images"}
FORMATS = ["PNG", "JPEG", "WEBP", "BMP", "GIF"]
MODES = ["L", "RGB", "RGBA", "P", "1"]


# -- images -----------------------------------------------------------------------------------
def _image(fmt: str, mode: str, size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    im = im.convert(mode) if not (fmt == "JPEG" and mode in ("RGBA", "P")) else im.convert("L")
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _header_bomb(fmt: str, width: int, height: int) -> bytes:
    """A file that is only a header claiming width x height pixels (the pixels never come)."""
    if fmt == "PNG":
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b"")
        )
    if fmt == "GIF":
        w, h = min(width, 65535), min(height, 65535)
        return (
            b"GIF89a"
            + struct.pack("<HHBBB", w, h, 0, 0, 0)
            + b"\x2c"
            + struct.pack("<HHHHB", 0, 0, w, h, 0)
            + b"\x02\x02\x44\x01\x00\x3b"
        )
    if fmt == "BMP":
        w, h = min(width, 2**31 - 1), min(height, 2**31 - 1)
        info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
        return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16
    if fmt == "JPEG":
        w, h = min(width, 65535), min(height, 65535)
        sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
        return b"\xff\xd8" + sof + b"\xff\xd9"
    # WEBP (VP8X: canvas sizes are 24-bit, minus one)
    w, h = min(width, 2**24) - 1, min(height, 2**24) - 1
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + w.to_bytes(3, "little") + h.to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


@st.composite
def files(draw) -> bytes:
    """An image file of an accepted format, often mutated: truncated, bit-flipped, spliced, or a bomb."""
    fmt = draw(st.sampled_from(FORMATS))
    kind = draw(st.sampled_from(["valid", "truncated", "flipped", "spliced", "bomb", "junk", "empty"]))
    if kind == "bomb":
        return _header_bomb(fmt, draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1)))
    if kind == "junk":
        return draw(st.binary(max_size=512))
    if kind == "empty":
        return b""
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    data = _image(fmt, draw(st.sampled_from(MODES)), size, draw(st.integers(0, 2**16)))
    if kind == "truncated":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "flipped":
        out = bytearray(data)
        for pos, value in draw(
            st.lists(st.tuples(st.integers(0, len(out) - 1), st.integers(0, 255)), min_size=1, max_size=8)
        ):
            out[pos] = value
        return bytes(out)
    if kind == "spliced":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    return data


# -- multipart --------------------------------------------------------------------------------
TOKEN = st.text(st.characters(codec="ascii", exclude_characters='\r\n"\x00'), min_size=0, max_size=20)
BOUNDARIES = st.one_of(
    st.just("fuzzb"),
    st.text("abcXYZ0123456789'()+_,-./:=?", min_size=1, max_size=90),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=8),
)


@st.composite
def parts(draw, field: str) -> bytes:
    """One multipart part: mostly a file under the API's field, sometimes anything else."""
    name = draw(
        st.one_of(
            st.just(field),
            st.just(field),
            st.just(field),
            st.just("mask"),
            TOKEN,
            st.just("n" * 5000),
            st.text(st.characters(codec="utf-8", exclude_characters='\r\n"'), max_size=10),
        )
    )
    filename = draw(st.one_of(st.none(), st.just("a.png"), TOKEN, st.just("../../etc/passwd"), st.just("é" * 300)))
    value = draw(st.one_of(files(), files(), files(), st.just(b"http://127.0.0.1:9/a.png"), st.binary(max_size=64)))
    headers = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        headers += f'; filename="{filename}"'
    extra = draw(
        st.sampled_from(
            [
                "",
                "",
                "",
                "\r\nContent-Type: image/png",
                "\r\nContent-Type: image/png",
                "\r\nContent-Type: text/plain; charset=utf-16",
                "\r\nContent-Transfer-Encoding: base64",
                "\r\nX-" + "h" * 3000 + ": 1",
            ]
        )
    )
    return (headers + extra).encode("utf-8", "surrogatepass") + b"\r\n\r\n" + value


@st.composite
def multipart(draw, field: str) -> tuple[bytes, str]:
    """A hand-framed multipart body and its Content-Type (whose boundary may not match)."""
    boundary = draw(BOUNDARIES)
    declared = boundary if draw(st.integers(0, 3)) else draw(BOUNDARIES)
    newline = draw(st.sampled_from([b"\r\n"] * 9 + [b"\n"]))
    body = b""
    for part in draw(st.lists(parts(field), min_size=0 if draw(st.integers(0, 9)) == 0 else 1, max_size=4)):
        body += b"--" + boundary.encode("utf-8", "surrogatepass") + newline + part + newline
    if draw(st.integers(0, 3)):  # the closing delimiter, usually
        body += b"--" + boundary.encode("utf-8", "surrogatepass") + b"--" + newline
    ctype = draw(
        st.sampled_from(
            ["multipart/form-data; boundary={b}"] * 6
            + [
                'multipart/form-data; boundary="{b}"',
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "multipart/mixed; boundary={b}",
            ]
        )
    )
    return body, ctype.replace("{b}", declared)


@st.composite
def uploads(draw, route: str) -> tuple[bytes, str]:
    """A well-framed upload (as an HTTP library frames it) of generated, often broken, files."""
    field = FIELDS[route]
    names = [field] * draw(st.integers(1, 3 if route == "/detect" else 1))
    if route == "/repair" and draw(st.booleans()):
        names.append("mask")
    body = b""
    for name in names:
        ext = draw(st.sampled_from(["png", "jpg", "webp", "bmp", "gif", "bin"]))
        body += (
            b'--fuzzb\r\nContent-Disposition: form-data; name="'
            + name.encode()
            + b'"; filename="f.'
            + ext.encode()
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
            + draw(files())
            + b"\r\n"
        )
    return body + b"--fuzzb--\r\n", "multipart/form-data; boundary=fuzzb"


@st.composite
def requests(draw) -> dict:
    """One request: a route, a method, a content type and a body, mostly multipart."""
    route = draw(st.sampled_from(ROUTES * 6 + ["/", "/docs", "/nope", "/detect/x", "/metrics"]))
    method = draw(st.sampled_from(["POST"] * 20 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    kind = draw(st.sampled_from(["multipart"] * 12 + ["json", "text", "none", "garbage-type"]))
    if route in IMAGE_ROUTES and method == "POST" and draw(st.booleans()):
        body, ctype = draw(uploads(route))  # half the image requests reach the decoder
    elif kind == "multipart":
        body, ctype = draw(multipart(FIELDS.get(route, "images")))
    else:
        body = draw(st.one_of(st.binary(max_size=256), st.sampled_from([b"null", b"[]", b"{}", b'{"images": 1}'])))
        ctype = {
            "json": "application/json",
            "text": "text/plain",
            "none": None,
            "garbage-type": draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)),
        }[kind]
    return {"method": method, "route": route, "body": body, "content_type": ctype}


# -- the suite --------------------------------------------------------------------------------
def _send(client: httpx.Client, url: str, request: dict) -> tuple[int, str, dict | None]:
    # header values go out as UTF-8 bytes, as a careless client would send them (trimmed: HTTP forbids the edges)
    headers = {"Content-Type": request["content_type"].strip().encode()} if request["content_type"] is not None else {}
    r = client.request(request["method"], f"{url}{request['route']}", content=request["body"], headers=headers)
    body = None
    if r.status_code >= 400 and request["method"] != "HEAD":
        try:
            body = r.json()
        except ValueError:
            body = {"unparsed": r.text[:200]}
    return r.status_code, r.headers.get("retry-after", ""), body


def _good(url: str, image: bytes) -> list[dict]:
    r = httpx.post(f"{url}/detect", files={"images": ("good.png", image, "image/png")}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_generated_hostile_requests_get_json_4xx_never_5xx_and_the_service_stays_ready(served):
    url = served["url"]
    good = min((served["root"] / "data" / "fakes").glob("*/images/*.png")).read_bytes()
    before = _good(url, good)
    statuses: Counter[int] = Counter()
    messages: Counter[str] = Counter()  # what the errors said (their first words), for the summary
    failures: list[str] = []
    started = time.perf_counter()
    with (
        httpx.Client(timeout=60, limits=httpx.Limits(max_connections=BURST)) as client,
        ThreadPoolExecutor(BURST) as pool,
    ):

        @settings(
            max_examples=-(-REQUESTS // BURST),
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(requests(), min_size=BURST, max_size=BURST))
        def burst(batch: list[dict]) -> None:
            answers = list(pool.map(lambda r: _send(client, url, r), batch))
            for request, (status, retry_after, body) in zip(batch, answers):
                statuses[status] += 1
                if body and isinstance(body.get("error"), str):
                    messages[" ".join(body["error"].split()[:6])] += 1
                what = f"{request['method']} {request['route']} {request['content_type']!r} {request['body'][:80]!r}"
                if status >= 500 and not (status == 503 and retry_after):
                    failures.append(f"{status} for {what}: {body}")
                elif (
                    status >= 400
                    and body is not None
                    and not (isinstance(body.get("error"), str) and body.get("status") == status)
                ):
                    failures.append(f"{status} without the service's JSON for {what}: {body}")
            assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
            assert not failures, "\n".join(failures[:5])

        burst()
    sent = sum(statuses.values())
    print(
        f"\nfuzz: {sent} generated requests in {time.perf_counter() - started:.0f} s; "
        f"statuses {dict(sorted(statuses.items()))}; {sum(n for s, n in statuses.items() if s >= 500)} answers >= 500; "
        f"{len(messages)} distinct errors, the most common:"
    )
    for text, n in messages.most_common(int(os.environ.get("GANDEFECT_FUZZ_SHOW", "15"))):
        print(f"  {n:6d}  {text}")
    assert sent >= REQUESTS
    assert sum(n for s, n in statuses.items() if s >= 500) == 0
    assert _good(url, good) == before  # the good request's answer is unchanged
    assert statuses[400] > sent / 4 and statuses[200] > 0  # the generator reached past the first checks
