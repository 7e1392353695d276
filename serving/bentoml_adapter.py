"""Every touch of BentoML's private modules, in one place.

Written against bentoml 1.4.40 (`WRITTEN_AGAINST`; pyproject pins `bentoml>=1.4,<1.5`).
tests/serving/test_adapter.py checks the version and each assumption below, and drives a toy
service through them, so an upgrade that changes one fails there instead of in production.

BentoML 1.4's public API has no hook for how a request body becomes an API's input: an API
names its input model (`input_spec`), and the server picks the parser by the request's media
type. The service has to replace that parser for multipart/form-data, because BentoML's own:

- answers a body that is not valid multipart with 500 (Starlette's 400 is caught as an
  unexpected error);
- downloads a URL given as a text value in a file field (a public endpoint must not fetch
  URLs for its callers);
- validates the input on the event loop, where a heavy upload blocks every other request.

What that takes, all in `parse_multipart_with`:

- `_bentoml_impl.serde.ALL_SERDE`: the registry, media type -> Serde class, that the server
  consults per request (`ServiceAppFactory.api_endpoint`); the service's parser is registered
  under "multipart/form-data".
- `_bentoml_impl.serde.MultipartSerde`: subclassed, so the parser replaces only its
  `async parse_request(request, cls)` and answers are serialized as before (the same serde
  instance writes the response).
- `IODescriptor.multipart_fields`: the names of an input model's file fields, as BentoML
  computed them from the annotations (BentoML converts exactly those from uploaded files).
"""

from __future__ import annotations

import typing as t

from _bentoml_impl import serde as _serde
from pydantic import BaseModel
from starlette.requests import Request

WRITTEN_AGAINST = "1.4.40"
SUPPORTED = ">=1.4,<1.5"
MULTIPART = "multipart/form-data"

FormParser = t.Callable[[Request, type[BaseModel], frozenset[str]], t.Awaitable[BaseModel]]


def parse_multipart_with(parse: FormParser) -> None:
    """Make `parse(request, input_model, file_fields)` the parser of every multipart/form-data
    request to an API of this process's services."""

    class Multipart(_serde.MultipartSerde):
        async def parse_request(self, request: Request, cls: type[BaseModel]) -> BaseModel:
            return await parse(request, cls, frozenset(cls.multipart_fields))

    _serde.ALL_SERDE[MULTIPART] = Multipart
