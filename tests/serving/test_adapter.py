"""What serving/bentoml_adapter.py assumes of BentoML's private modules, checked against the
installed BentoML: its version, the names and their shapes, and a toy service served in-process
whose multipart requests reach the installed parser (and which serves the files the service's
/docs page loads). A failure here means BentoML changed underneath the adapter: read its
docstring, then adapt it (or drop it, if BentoML now does the job)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

from _bentoml_impl import serde
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from pydantic import BaseModel
from starlette.requests import Request

from serving.bentoml_adapter import MULTIPART, SUPPORTED, WRITTEN_AGAINST

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"


def test_the_installed_bentoml_is_the_one_the_adapter_was_written_for():
    supported = SpecifierSet(SUPPORTED)
    assert Version(importlib.metadata.version("bentoml")) in supported
    assert Version(WRITTEN_AGAINST) in supported
    pins = [Requirement(d) for d in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    assert [r.specifier for r in pins if r.name == "bentoml"] == [supported], (
        "pyproject's bentoml pin moved: check the adapter against the new range, then update SUPPORTED"
    )


def test_the_private_names_have_the_shapes_the_adapter_assumes(toy_service):
    assert isinstance(serde.ALL_SERDE, dict)
    assert issubclass(serde.ALL_SERDE[MULTIPART], serde.MultipartSerde)
    assert serde.MultipartSerde.media_type == MULTIPART
    assert issubclass(serde.MultipartSerde, serde.JSONSerde)  # answers are serialized as JSON
    parse = serde.MultipartSerde.parse_request
    assert inspect.iscoroutinefunction(parse)
    assert list(inspect.signature(parse).parameters) == ["self", "request", "cls"]
    spec = toy_service.apis["files"].input_spec
    assert spec.multipart_fields == ["images"] and set(spec.model_fields) == {"images", "note"}


def test_the_server_parses_every_multipart_request_with_the_installed_parser(toy, toy_service, install_parser):
    calls: list[tuple[type[BaseModel], frozenset[str]]] = []

    async def parse(request: Request, model: type[BaseModel], file_fields: frozenset[str]) -> BaseModel:
        calls.append((model, file_fields))
        form = await request.form()
        data = {k: form.getlist(k) if k == "images" else form[k] for k in form}
        # validated off the event loop, as the service does with heavy uploads: the file fields
        # are saved to BentoML's per-request temporary folder, found through a context variable
        return await asyncio.to_thread(model.model_validate, data)

    install_parser(parse)
    r = toy.post("/files", files=[("images", ("a.png", b"abc")), ("images", ("b.png", b"de"))], data={"note": "hi"})
    assert r.status_code == 200 and r.json()["sizes"] == [3, 2] and r.json()["note"] == "hi"
    r = toy.post("/one", files={"image": ("a.png", b"abcd")})
    assert r.status_code == 200 and r.json() == {"size": 4}
    assert toy.post("/one", json={}).json() == {"size": None}  # JSON bodies keep BentoML's parser
    assert [fields for _, fields in calls] == [frozenset({"images"}), frozenset({"image"})]
    assert calls[0][0] is toy_service.apis["files"].input_spec


def test_bentoml_still_fails_bad_multipart_with_500_so_the_parser_is_still_needed(toy, monkeypatch):
    monkeypatch.setitem(serde.ALL_SERDE, MULTIPART, serde.MultipartSerde)
    r = toy.post("/one", content=b"garbage", headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 500, "BentoML now refuses bad multipart itself: the adapter may no longer be needed"


def test_bentoml_serves_the_files_the_docs_page_loads(toy):
    page = (REPO / "serving" / "page" / "docs.html").read_text()
    files = re.findall(r'"\./(static_content/[\w.-]+)"', page)
    assert len(files) == 7
    for path in [*files, "docs.json"]:
        assert toy.get(f"/{path}").status_code == 200, path
