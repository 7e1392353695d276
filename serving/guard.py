"""The service's HTTP edge, in front of every route: one JSON error shape, explicit load
shedding, and the checks an upload gets before anything reads it. Plain ASGI (no BentoML), so
it is tested on its own (tests/serving/test_guard.py) as well as served."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

OWN = b"x-gandefect-error"  # marks an error answer this service wrote itself: its message is kept


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers={OWN.decode(): "1"})


def _error_message(body: bytes) -> str | None:
    """BentoML's own error bodies ({"error", "detail": [pydantic errors]} or [{"error"}]) as one message."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    if not isinstance(data, dict) or "error" not in data:
        return None
    details = data.get("detail")
    if isinstance(details, list) and details:
        return "; ".join(
            f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg', '')}".lstrip(": ")
            for d in details
            if isinstance(d, dict)
        )
    return str(data["error"])


RETRY_AFTER_S = 1  # what a refused (503) request is told to wait
ROUTES = (
    "POST /detect, /localize, /repair (multipart/form-data) and /metadata; "
    "GET / (the web page), /docs, /docs.json, /metrics, /readyz, /livez"
)
BOUNDARY_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")


def _boundary_problem(content_type: bytes) -> str | None:
    """What is wrong with a multipart Content-Type's boundary (RFC 2046: 1-70 characters of a
    small alphabet), or None."""
    boundary = None
    for param in content_type.split(b";")[1:]:
        key, _, value = param.strip().partition(b"=")
        if key.strip().lower() == b"boundary":
            boundary = value.strip().strip(b'"')
    if boundary is None:
        return "multipart/form-data needs a boundary parameter in its Content-Type"
    if not 1 <= len(boundary) <= 70:
        return f"the multipart boundary is {len(boundary)} characters long; RFC 2046 allows 1 to 70"
    if not set(boundary) <= BOUNDARY_CHARS or boundary.endswith(b" "):
        return "the multipart boundary has characters RFC 2046 does not allow"
    return None


class RequestGuard:
    """ASGI middleware in front of every route.

    - Every error answer (4xx, and the 5xx that should never happen) is this service's JSON
      {"error", "status"}, whatever produced it (BentoML, Starlette's routing, this service).
    - A 503 (the adaptive batcher sheds load it cannot finish within its latency budget) says
      the service is busy and carries Retry-After.
    - Image uploads that are oversized, empty, not multipart or carry a bad boundary are
      refused before anything reads them."""

    def __init__(self, app, max_bytes: int, image_apis: dict[str, str]) -> None:
        self.app, self.max_bytes, self.image_apis = app, max_bytes, image_apis  # route -> its image field

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _uniform_errors(send, scope)
        if scope["method"] != "POST" or scope["path"] not in self.image_apis:
            return await self.app(scope, receive, send)
        field = self.image_apis[scope["path"]]
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"")
        ctype = content_type.split(b";")[0].strip().lower()
        length = headers.get(b"content-length")
        too_large = f"the upload is larger than this service's limit of {self.max_bytes:,} bytes"
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return await error(400, "invalid Content-Length header")(scope, receive, send)
            if size > self.max_bytes:
                return await error(413, f"{too_large} ({size:,} bytes sent)")(scope, receive, send)
            if size == 0:
                return await error(400, f"empty request: send the image as multipart/form-data field `{field}`")(
                    scope, receive, send
                )
        if ctype != b"multipart/form-data" and not length:
            return await error(400, f"empty request: send the image as multipart/form-data field `{field}`")(
                scope, receive, send
            )
        if ctype != b"multipart/form-data":
            shown = ctype.decode("latin-1")[:60] or "none"
            return await error(
                400, f"send the image as multipart/form-data field `{field}` (got Content-Type {shown})"
            )(scope, receive, send)
        problem = _boundary_problem(content_type)
        if problem:
            return await error(400, problem)(scope, receive, send)
        if length is not None:
            return await self.app(scope, receive, send)
        # a chunked body has no length: read it up to the limit, then hand it on
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await error(413, too_large)(scope, receive, send)
            if not message.get("more_body"):
                break
        if not body:
            return await error(400, f"empty request: send the image as multipart/form-data field `{field}`")(
                scope, receive, send
            )
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await self.app(scope, replay, send)


def _message_for(status: int, body: bytes, scope) -> str:
    """The message of an error answer, in words a client can act on."""
    path, method = scope["path"], scope["method"]
    if status == 503:
        if path in ("/readyz", "/livez"):
            return "the service is not ready yet (its models are loading); retry shortly"
        return (
            f"the service is busy: more requests are waiting for the model than it can answer in time; "
            f"retry after {RETRY_AFTER_S} s"
        )
    if status == 404:
        return f"no route {path}: this service answers {ROUTES}"
    if status == 405:
        return f"{method} is not allowed on {path}: this service answers {ROUTES}"
    if status >= 500:
        return "the service failed on this request (a bug: its log has the details)"
    text = _error_message(body)
    if text is None:
        text = body.decode("utf-8", "replace").strip()[:300] or f"HTTP {status}"
    return text


def _uniform_errors(send, scope):
    """Rewrite every error answer (BentoML's, Starlette's) to this service's {"error", "status"}."""
    held: dict = {}

    async def wrapped(message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held["start"], held["body"] = message, b""
            return
        if "start" not in held:
            return await send(message)
        held["body"] += message.get("body", b"")
        if message.get("more_body"):
            return
        start, body = held.pop("start"), held.pop("body")
        status = start["status"]
        own = any(k.lower() == OWN for k, _ in start["headers"])  # e.g. 503: no repairer, with the reason
        message = _error_message(body) if own else _message_for(status, body, scope)
        body = json.dumps({"error": message, "status": status}).encode()
        drop = (b"content-length", b"content-type", b"retry-after", OWN)
        headers = [(k, v) for k, v in start["headers"] if k.lower() not in drop]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 503 and not own:  # busy: worth retrying soon
            headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return wrapped
