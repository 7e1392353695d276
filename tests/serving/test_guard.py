"""The service's HTTP edge on its own: a plain Starlette app behind RequestGuard, driven over ASGI."""

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from serving.guard import RETRY_AFTER_S, RequestGuard, error


async def _overloaded(_request):
    # what BentoML answers when its adaptive batcher sheds load
    return JSONResponse({"error": "An unexpected error has occurred, please check the server log."}, status_code=503)


async def _validation(_request):
    return JSONResponse(
        {"error": "1 validation error for Input", "detail": [{"loc": ["images", 0], "msg": "not an image"}]},
        status_code=400,
    )


async def _unavailable(_request):
    return error(503, "repair is unavailable: gandefect-repairer has no `champion`")


async def _echo(request):
    return PlainTextResponse(str(len(await request.body())))


APP = RequestGuard(
    Starlette(
        routes=[
            Route("/detect", _overloaded, methods=["POST"]),
            Route("/bad", _validation, methods=["POST"]),
            Route("/localize", _echo, methods=["POST"]),
            Route("/repair", _unavailable, methods=["POST"]),
        ]
    ),
    max_bytes=1000,
    image_apis={"/detect": "images", "/localize": "image"},
)


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def client():
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://guard")


MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "says"),
    [
        ("POST", "/detect", MULTIPART, b"x", 503, "the service is busy"),
        ("POST", "/bad", {}, b"", 400, "images.0: not an image"),
        ("GET", "/detect", {}, b"", 405, "GET is not allowed on /detect"),
        ("POST", "/nowhere", {}, b"", 404, "no route /nowhere"),
        ("POST", "/localize", {"Content-Type": "multipart/form-data"}, b"x", 400, "needs a boundary"),
        ("POST", "/localize", {"Content-Type": "multipart/form-data; boundary=" + "b" * 71}, b"x", 400, "1 to 70"),
        ("POST", "/localize", {"Content-Type": "multipart/form-data; boundary=a\x7fb"}, b"x", 400, "does not allow"),
        ("POST", "/localize", MULTIPART, b"x" * 1001, 413, "limit of 1,000 bytes"),
        ("POST", "/localize", {"Content-Type": "application/json"}, b"{}", 400, "multipart/form-data field `image`"),
    ],
)
async def test_every_error_is_the_services_json_naming_the_problem(client, method, path, headers, body, status, says):
    r = await client.request(method, path, headers=headers, content=body)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert says in r.json()["error"] and r.json()["status"] == status
    assert "unexpected error" not in r.text
    assert (r.headers.get("retry-after") == str(RETRY_AFTER_S)) == (status == 503)


async def test_a_good_upload_passes_untouched(client):
    r = await client.post("/localize", headers=MULTIPART, content=b"--b\r\n\r\n--b--\r\n")
    assert r.status_code == 200 and r.text == "14"  # the whole body reached the app


async def test_the_services_own_503_keeps_its_reason_and_is_not_a_retry(client):
    r = await client.post("/repair", headers=MULTIPART, content=b"x")
    assert r.status_code == 503 and r.json() == {
        "error": "repair is unavailable: gandefect-repairer has no `champion`",
        "status": 503,
    }
    assert "retry-after" not in r.headers and "x-gandefect-error" not in r.headers
