"""The service's multipart parser (serving.service.parse_uploads) on a toy BentoML service served
in-process: bad bodies and fields are 400s naming the problem, file names are reduced to their
extension, and heavy uploads are validated off the event loop."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image
from pydantic import BaseModel

from serving import service

MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}


@pytest.fixture(autouse=True)
def _the_services_parser(install_parser):
    install_parser(service.parse_uploads)


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, "PNG")
    return buf.getvalue()


def test_uploads_reach_the_api_under_safe_names(toy):
    r = toy.post(
        "/files",
        files=[
            ("images", ("a.png", b"abc")),
            ("images", ("../../etc/passwd", b"de")),
            ("images", ("\u00e9" * 300 + ".png", b"f")),
        ],
        data={"note": '"hi"'},
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["sizes"] == [3, 2, 1] and answer["note"] == "hi"
    assert [n.endswith(end) for n, end in zip(answer["names"], ("upload.png", "upload", "upload.png"))] == [True] * 3
    assert toy.post("/one", files={"image": ("a.png", b"abcd")}).json() == {"size": 4}


def test_a_heavy_upload_is_validated_off_the_event_loop(toy, monkeypatch):
    validate = BaseModel.model_validate.__func__
    on_the_loop: list[bool] = []

    def spy(cls, data, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_the_loop.append(True)
        except RuntimeError:
            on_the_loop.append(False)
        return validate(cls, data, *args, **kwargs)

    monkeypatch.setattr(BaseModel, "model_validate", classmethod(spy))
    small, big = _png((20, 20)), _png((1200, 1000))
    assert not service.is_heavy(small) and service.is_heavy(big)
    for png in (small, big):
        r = toy.post("/one", files={"image": ("a.png", png)})
        assert r.status_code == 200 and r.json() == {"size": len(png)}
    assert on_the_loop == [True, False]


@pytest.mark.parametrize(
    ("name", "body", "says"),
    [
        (
            "a body that does not match its boundary",
            b"--other\r\n\r\nx\r\n--other--\r\n",
            "not valid multipart/form-data",
        ),
        (
            "a text value (a URL) as a file",
            b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nhttp://127.0.0.1:9/a.png\r\n--b--\r\n',
            "uploaded file, not a text value",
        ),
        (
            "a field the API does not take",
            b'--b\r\nContent-Disposition: form-data; name="picture"; filename="a.png"\r\n\r\nx\r\n--b--\r\n',
            "unknown field; this API takes `image`",
        ),
    ],
)
def test_bad_multipart_is_a_400_naming_the_problem(toy, name, body, says):
    r = toy.post("/one", content=body, headers=MULTIPART)
    assert r.status_code == 400 and says in r.text, (name, r.status_code, r.text)
