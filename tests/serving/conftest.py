"""A toy BentoML service served in-process, for the tests of how requests reach an API: one per
session (BentoML registers its server metrics once per process), with a multipart parser that
each test may replace."""

from __future__ import annotations

from pathlib import Path

import bentoml
import pytest
from _bentoml_impl import serde
from starlette.testclient import TestClient

from serving.bentoml_adapter import MULTIPART, parse_multipart_with


@bentoml.service(name="serving-toy")
class Toy:
    @bentoml.api
    def files(self, images: list[Path], note: str = "") -> dict:
        return {"sizes": [p.stat().st_size for p in images], "names": [p.name for p in images], "note": note}

    @bentoml.api
    def one(self, image: Path = None) -> dict:  # noqa: RUF013 - as the service declares its optional files
        return {"size": None if image is None else image.stat().st_size}


@pytest.fixture(scope="session")
def toy_service() -> bentoml.Service:
    return Toy


@pytest.fixture(scope="session")
def toy(toy_service, tmp_path_factory) -> TestClient:
    """A client of the toy service; its server's errors are answers (500), not exceptions."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml")))
        mp.setenv("BENTOML_DO_NOT_TRACK", "true")
        with TestClient(toy_service.to_asgi(), raise_server_exceptions=False) as client:
            yield client


@pytest.fixture
def install_parser(monkeypatch):
    """`parse_multipart_with`, undone after the test (the service registers its parser on import)."""
    monkeypatch.setitem(serde.ALL_SERDE, MULTIPART, serde.ALL_SERDE[MULTIPART])
    return parse_multipart_with
