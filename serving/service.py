"""The BentoML service of the champion detector and repairer, with its web page at `/`.

`detect` is adaptively batched: the images of concurrent requests are scored in one model
call, in the same process (a separate runner service cost a second HTTP hop per request:
half the throughput and 10x the p99 latency at concurrency 8 on 2 cores, bench/serve_load.py).
One worker per core. `gandefect build-bento` builds this file into a bento with the
champions' weights; the build arguments name the models and the upload limits.

    bentoml serve gandefect:latest            # a built bento
    gandefect serve                           # build if the champions changed, then serve
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import io
import json
import os
import re
import sys
import threading
import types
import typing as t
from pathlib import Path

import bentoml
import numpy as np
import torch
from bentoml.exceptions import BadInput
from PIL import Image
from pydantic import AfterValidator, BaseModel, Field, ValidationError
from pydantic_core import PydanticCustomError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

try:
    import gandefect  # noqa: F401 - imported only to learn whether it is installed
except ImportError:  # a bento served without gandefect installed: use the copy it carries
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# below the path tweak: these import gandefect (serving.uploads too), which may be the bento's copy
from gandefect import hardware
from gandefect.data.history import Envelope, History, read_history
from gandefect.data.images import encode_png
from gandefect.evaluate import drift
from gandefect.repair.pipeline import WHOLE_IMAGE, Repairer, repair
from serving.bentoml_adapter import parse_multipart_with
from serving.guard import RequestGuard, error
from serving.uploads import UploadError, UploadLimits, bounding_boxes, decode, mask_for, to_model_array

PAGE = Path(__file__).resolve().parent / "page" / "index.html"
DOCS = PAGE.with_name("docs.html")
IMAGE_APIS = {"/detect": "images", "/localize": "image", "/repair": "image"}
MAX_BATCH = 128  # images per model call
MAX_LATENCY_MS = 1000  # the batcher refuses (503) what it expects to finish later than this


# the served score distribution, for drift against validation (`gandefect status --traffic URL`)
P_FAKE = bentoml.metrics.Histogram(
    name=drift.METRIC,
    documentation="p_fake of every image `detect` scored",
    labelnames=["model_version"],
    buckets=list(drift.BUCKETS),
)
VERDICTS = bentoml.metrics.Counter(
    name=drift.VERDICTS, documentation="verdicts `detect` answered", labelnames=["model_version", "verdict"]
)


class BentoArgs(BaseModel):
    """Set by `gandefect build-bento` (`bentoml build --arg ...`) and stored in the bento."""

    detector: str = "gandefect-detector:latest"
    repairer: str = "gandefect-repairer:latest"  # "": no repairer champion; `repair` answers 503
    repairer_unavailable: str = ""  # ... with this reason
    max_bytes: int = UploadLimits.max_bytes
    max_pixels: int = UploadLimits.max_pixels
    max_images: int = UploadLimits.max_images
    device: str = "auto"  # the project's `device`: auto serves on a CUDA GPU where the server has one


ARGS = bentoml.use_arguments(BentoArgs)
LIMITS = UploadLimits(ARGS.max_bytes, ARGS.max_pixels, ARGS.max_images)


@functools.cache
def _detector_meta() -> dict:
    return json.loads(Path(bentoml.models.get(ARGS.detector).path_of("metadata.json")).read_text())


def _input_shape() -> tuple[int, str, str]:
    """The detector's input (size, mode, resize), from the metadata its model carries."""
    meta = _detector_meta()["input"]
    return meta["size"], meta["mode"], meta["resize"]


def _envelope() -> Envelope:
    """The conditions the detector's gate validated (defaults for a detector exported without them)."""
    return Envelope(**_detector_meta().get("envelope", {}))


# -- heavy uploads ---------------------------------------------------------------------------
# Decoding a 25-megapixel PNG takes about half a second of CPU. Uploads above HEAVY_PIXELS (read
# from the header, before anything is decoded) are decoded one at a time per worker, in a thread
# of lower CPU priority, off the event loop: requests of small images are parsed, batched and
# answered meanwhile, and get the cores first when both are busy.
HEAVY_PIXELS = 1_000_000
HEAVY_NICE = 10


def _lower_priority() -> None:
    try:  # Linux: a thread's nice value is its own
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEAVY_NICE)
    except (AttributeError, OSError):  # elsewhere it is only a queue of one
        pass


HEAVY = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="heavy-upload", initializer=_lower_priority)


def is_heavy(data: bytes | t.BinaryIO) -> bool:
    """Whether an upload's header claims more than HEAVY_PIXELS (within the cap: beyond it, the
    upload is refused before decoding). Unreadable files are not heavy: refusing them is cheap."""
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    start = file.tell()
    try:
        with Image.open(file) as im:
            return HEAVY_PIXELS < im.size[0] * im.size[1] <= LIMITS.max_pixels
    except Exception:  # noqa: BLE001 - anything PIL cannot open is refused by decode()
        return False
    finally:
        file.seek(start)


def read_upload_fairly(data: bytes, field: str = "image") -> tuple[t.Any, Upload]:
    """read_upload, through the low-priority queue when the upload is heavy (call off the event loop)."""
    if is_heavy(data):
        return HEAVY.submit(read_upload, data, field).result()
    return read_upload(data, field)


class Upload(t.NamedTuple):
    pixels: np.ndarray  # the model's uint8 input
    history: History  # what can be read of the file's history, and whether it is inside the envelope


def read_upload(data: bytes, field: str = "image") -> tuple[t.Any, Upload]:
    """Uploaded bytes -> (decoded image, Upload); an UploadError for a bad file."""
    im = decode(data, LIMITS, field)
    size, mode, resize = _input_shape()
    return im, Upload(to_model_array(im, size, mode, resize), read_history(im, size, _envelope()))


def _model_input(path: Path) -> Upload:
    """An uploaded file (saved by BentoML) -> the model's input and its history; a bad one fails validation (400)."""
    try:
        return read_upload_fairly(Path(path).read_bytes())[1]
    except UploadError as exc:
        raise PydanticCustomError("bad_image", "{reason}", {"reason": str(exc).removeprefix("image: ")}) from None


# checked and converted while the request is parsed, so one bad upload fails only its own
# request, never the batch it would have joined
ImageUpload = t.Annotated[Path, AfterValidator(_model_input)]


def verdict(p: float, threshold: float, history: History) -> dict:
    """The answer for one image: `uncertain` (with the reasons) outside the validated envelope,
    else `fake` or `real` at the served threshold."""
    if not history.inside:
        return {"verdict": "uncertain", "is_fake": None, "reasons": history.reasons}
    fake = p >= threshold
    return {"verdict": "fake" if fake else "real", "is_fake": bool(fake), "reasons": []}


def map_regions(verdict_name: str) -> str:
    """What the map's regions above the map threshold are, given the image's verdict: defects only
    when the image as a whole is called fake."""
    return {
        "fake": "defects",
        "real": "highest-scoring: the image as a whole is called real, so no region is a defect",
        "uncertain": "highest-scoring: the verdict is uncertain, so no region is called a defect",
    }[verdict_name]


def _load(model, role: str):
    return torch.load(model.path_of(f"{role}.pt"), weights_only=False, map_location="cpu")


async def parse_uploads(request: Request, model: type[BaseModel], file_fields: frozenset[str]) -> BaseModel:
    """The input of a multipart/form-data request, parsed as a public endpoint needs:

    - a body that is not valid multipart (no or wrong boundary, garbage, a header past the
      parser's limits) is a 400 naming the problem, not an unexpected error;
    - an image field must be an uploaded file part: BentoML would treat a text value as a URL
      and download it (a public endpoint should not fetch URLs for its callers);
    - fields the API does not take are refused by name;
    - the uploads are checked and decoded off the event loop when one of them is heavy."""
    try:
        form = await request.form()
    except Exception as exc:  # noqa: BLE001 - whatever the parser refuses is the client's body
        cause = exc.__cause__ or exc
        detail = getattr(cause, "detail", None) or getattr(cause, "message", None) or str(cause) or type(cause).__name__
        raise BadInput(f"the request body is not valid multipart/form-data ({detail})") from None
    unknown = sorted(k for k in form if k not in model.model_fields)
    if unknown:
        shown = [k if len(k) <= 40 else f"{k[:40]}... ({len(k)} characters)" for k in unknown[:5]]
        raise ValidationError.from_exception_data(
            "Input",
            [
                {
                    "type": PydanticCustomError(
                        "unknown_field",
                        "unknown field; this API takes {known}",
                        {"known": ", ".join(f"`{k}`" for k in model.model_fields) or "no fields"},
                    ),
                    "loc": (k,),
                    "input": "field",
                }
                for k in shown
            ],
        )
    data: dict[str, t.Any] = {}
    heavy = False
    for k in form:
        if k in file_fields:
            files = [_uploaded_file(v) for v in form.getlist(k)]
            for f in files:  # BentoML names its temporary copy after the client's file name
                f.filename = _safe_name(f.filename)
            heavy = heavy or any(is_heavy(f.file) for f in files)
            data[k] = files if _is_list(model.model_fields[k].annotation) else files[0]
        else:
            v = form[k]
            if isinstance(v, UploadFile):
                v = await v.read()
            try:
                data[k] = json.loads(v)
            except ValueError:
                data[k] = v
    if heavy:  # the event loop keeps serving while a thread waits for the heavy queue
        # to_thread carries the context variables: BentoML keeps the request (its temp dir) in one
        return await asyncio.to_thread(model.model_validate, data)
    return model.model_validate(data)


def _uploaded_file(value: str | UploadFile) -> UploadFile:
    if isinstance(value, UploadFile):
        return value
    raise ValidationError.from_exception_data(
        "Input",
        [
            {
                "type": PydanticCustomError("not_a_file", "image fields take an uploaded file, not a text value"),
                "loc": ("form",),
                "input": "text",
            }
        ],
    )


def _safe_name(name: str | None) -> str:
    """A client's file name reduced to what is safe in a temporary file's name: its extension."""
    suffix = Path(name or "").suffix
    return "upload" + (suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", suffix) else "")


def _is_list(annotation: t.Any) -> bool:
    """Whether a field takes several files: `list[...]`, or `list[...] | None`."""
    if t.get_origin(annotation) in (t.Union, types.UnionType):
        annotation = t.get_args(annotation)[0]
    return t.get_origin(annotation) is list


parse_multipart_with(parse_uploads)


async def _page(_request: Request) -> Response:
    return HTMLResponse(PAGE.read_text())


async def _swagger(_request: Request) -> Response:
    """BentoML's Swagger UI of /docs.json, at /docs because the web page takes /."""
    return FileResponse(DOCS)


pages = Starlette(routes=[Route("/", _page), Route("/docs", _swagger)])


@bentoml.asgi_app(pages, path="/")
@bentoml.service(name="gandefect", traffic={"timeout": 60}, workers="cpu_count")
class GanDefect:
    """Detect, localize and repair defects in generated images (the champion models)."""

    detector_model = bentoml.models.BentoModel(ARGS.detector)
    if ARGS.repairer:  # a bento built while the repairer has no champion carries none
        repairer_model = bentoml.models.BentoModel(ARGS.repairer)

    def __init__(self) -> None:
        torch.set_num_threads(1)
        device = hardware.resolve(ARGS.device)
        self.detector = _load(self.detector_model, "detector").on(device)
        served = {"detector": self.detector_model}
        self.repairer = None
        if ARGS.repairer:
            self.repairer = Repairer(_load(self.repairer_model, "repairer"), device)
            served["repairer"] = self.repairer_model
        self.meta = {role: json.loads(Path(m.path_of("metadata.json")).read_text()) for role, m in served.items()}
        shape = self.meta["detector"]["input"]
        self.size, self.mode, self.resize = shape["size"], shape["mode"], shape["resize"]

    # -- input --------------------------------------------------------------------------------
    def _read(self, path: Path | None, field: str):
        """(decoded image, Upload, the file's bytes)"""
        if path is None:
            raise UploadError(f"no `{field}` field: send the image as multipart/form-data field `{field}`")
        data = Path(path).read_bytes()
        return (*read_upload_fairly(data, field), data)

    def _version_headers(self) -> dict[str, str]:
        headers = {"X-Detector-Version": self.meta["detector"]["version"]}
        if self.repairer is not None:
            headers["X-Repairer-Version"] = self.meta["repairer"]["version"]
        return headers

    # -- APIs ------------------------------------------------------------------------------------
    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def detect(self, images: list[ImageUpload] = Field(min_length=1, max_length=LIMITS.max_images)) -> list[dict]:
        """Probability that each image is generated, the verdict (`fake`, `real`, or `uncertain`
        with the reasons when the file lies outside the conditions the gate validated) and what
        could be read of its history (format, JPEG quality, original size, scale, up-scaling).

        Adaptive batching: the images of concurrent requests are scored as one batch. Each
        upload was checked and converted to the model's input when the request was parsed."""
        p = self.detector.score(np.stack([u.pixels for u in images]))
        threshold = float(self.detector.threshold)
        version = self.meta["detector"]["version"]
        answers = [
            {
                "p_fake": float(v),
                **verdict(float(v), threshold, u.history),
                "threshold": threshold,
                "history": u.history.to_dict(),
                "model_version": version,
            }
            for v, u in zip(p, images)
        ]
        for a in answers:
            P_FAKE.labels(model_version=version).observe(a["p_fake"])
            VERDICTS.labels(model_version=version, verdict=a["verdict"]).inc()
        return answers

    @bentoml.api
    def localize(self, image: Path = None) -> t.Annotated[Path, bentoml.validators.ContentType("image/png")]:  # noqa: RUF013 - as the service declares its optional files
        """The defect map as a PNG (white = likely generated) and what its regions are, agreeing
        with the verdict: an image called fake has its defects (the map at the map threshold) in
        X-Defect-Area / X-Defect-Boxes; an image called real or uncertain has none, and the same
        regions come as X-Top-Area / X-Top-Boxes, the parts that score highest, with X-Regions
        saying which it is."""
        try:
            _, upload, _ = self._read(image, "image")
        except UploadError as exc:
            return error(exc.status, str(exc))
        batch = upload.pixels[None]
        heat = self.detector.defect_map(batch)[0]
        above = heat >= getattr(self.detector, "map_threshold", 0.5)
        p = float(self.detector.score(batch)[0])
        png = encode_png(_gray(heat))
        answer = verdict(p, self.detector.threshold, upload.history)
        defects = above if answer["verdict"] == "fake" else np.zeros_like(above)
        return Response(
            png,
            media_type="image/png",
            headers={
                **self._version_headers(),
                "X-P-Fake": f"{p:.6f}",
                "X-Is-Fake": str(p >= self.detector.threshold).lower(),
                "X-Verdict": answer["verdict"],
                "X-Reason": "; ".join(answer["reasons"]),
                "X-Regions": map_regions(answer["verdict"]),
                "X-Defect-Area": f"{defects.mean():.6f}",
                "X-Defect-Boxes": json.dumps(bounding_boxes(defects)),
                "X-Top-Area": f"{above.mean():.6f}",
                "X-Top-Boxes": json.dumps(bounding_boxes(above)),
                "X-Map-Threshold": f"{self.detector.map_threshold:.6f}",
                "X-Threshold": f"{self.detector.threshold:.6f}",
                "X-Image-Size": f"{self.size}x{self.size}",
            },
        )

    @bentoml.api
    def repair(
        self,
        image: Path = None,  # noqa: RUF013 - as the service declares its optional files
        mask: Path = None,  # noqa: RUF013 - as the service declares its optional files
    ) -> t.Annotated[Path, bentoml.validators.ContentType("image/png")]:
        """The repaired image as a PNG; scores before/after and the rewritten area in X-* headers.

        Without `mask`, the detector finds the defects (detect -> mask -> inpaint, up to k passes);
        an image it does not call fake (verdict `real`, or `uncertain` outside the validated
        conditions) comes back byte for byte as sent, with the reason in `X-Stopped` / `X-Reason`.
        With a mask (white = rewrite; the image's size or the model's), exactly that region is rewritten.
        503 with the reason when the service carries no repairer (none has passed its gate)."""
        if self.repairer is None:
            return error(503, f"repair is unavailable: {ARGS.repairer_unavailable or 'no repairer champion'}")
        try:
            im, upload, data = self._read(image, "image")
            x = upload.pixels
            masks = None
            if mask is not None:
                m = decode(Path(mask).read_bytes(), LIMITS, "mask")
                masks = mask_for(m, im.size, self.size, self.resize)[None]
        except UploadError as exc:
            return error(exc.status, str(exc))
        if masks is None:
            p = float(self.detector.score(x[None])[0])
            answer = verdict(p, self.detector.threshold, upload.history)
            if answer["verdict"] != "fake":
                stopped = "not-fake" if answer["verdict"] == "real" else "uncertain"
                reason = (
                    "; ".join(answer["reasons"])
                    or f"p_fake {p:.4f} is below the threshold {self.detector.threshold:.4f}"
                )
                return Response(
                    data,
                    media_type=f"image/{(im.format or 'png').lower()}",
                    headers={
                        **self._version_headers(),
                        "X-Score-Before": f"{p:.6f}",
                        "X-Score-After": f"{p:.6f}",
                        "X-Mask-Area": "0",
                        "X-Iterations": "0",
                        "X-Stopped": stopped,
                        "X-Verdict": answer["verdict"],
                        "X-Reason": reason,
                        "X-Threshold": f"{self.detector.threshold:.6f}",
                    },
                )
        settings = self.meta["repairer"]["repair"]
        result = repair(
            x[None],
            self.detector,
            self.repairer,
            settings["iterations"],
            settings["max_area"],
            settings["dilate"],
            masks,
            settings.get("local_max_area", 1.0),
        )  # a bento built before the rule: none
        if result.stopped[0] == "whole-image":  # nothing rewritten: the image comes back as sent, with the reason
            return Response(
                data,
                media_type=f"image/{(im.format or 'png').lower()}",
                headers={
                    **self._version_headers(),
                    "X-Score-Before": f"{result.score_before[0]:.6f}",
                    "X-Score-After": f"{result.score_after[0]:.6f}",
                    "X-Mask-Area": "0",
                    "X-Iterations": "0",
                    "X-Stopped": "whole-image",
                    "X-Verdict": "fake",
                    "X-Reason": WHOLE_IMAGE,
                    "X-Threshold": f"{self.detector.threshold:.6f}",
                },
            )
        out = result.images[0]
        png = encode_png(Image.fromarray(out, "L" if out.ndim == 2 else "RGB"))
        return Response(
            png,
            media_type="image/png",
            headers={
                **self._version_headers(),
                "X-Score-Before": f"{result.score_before[0]:.6f}",
                "X-Score-After": f"{result.score_after[0]:.6f}",
                "X-Mask-Area": f"{result.masks[0].mean():.6f}",
                "X-Iterations": str(int(result.iterations[0])),
                "X-Stopped": result.stopped[0],
                "X-Verdict": "fake",
                "X-Threshold": f"{self.detector.threshold:.6f}",
            },
        )

    @bentoml.api
    def metadata(self) -> dict:
        """The served models: names, versions, thresholds, data versions and their promotion metrics."""
        det, rep = self.meta["detector"], self.meta.get("repairer")
        repairer = (
            {**_describe(rep), **rep.get("repair", {}), "available": True}
            if rep
            else {"available": False, "reason": ARGS.repairer_unavailable or "no repairer champion"}
        )
        return {
            "detector": {
                **_describe(det),
                "family": det["tags"].get("family"),
                "threshold": float(self.detector.threshold),
                "map_threshold": float(self.detector.map_threshold),
                "trained_on": list(self.detector.trained_on),
            },
            "repairer": repairer,
            "input": det["input"],
            "envelope": _envelope().to_dict(),
            "limits": {"max_bytes": LIMITS.max_bytes, "max_pixels": LIMITS.max_pixels, "max_images": LIMITS.max_images},
        }


def _describe(meta: dict) -> dict:
    return {
        "name": meta["registered_model"],
        "version": meta["version"],
        "alias": "champion",
        "run_id": meta["run_id"],
        "data_version": meta["tags"].get("data_version"),
        "metrics": meta["metrics"],
    }


def _gray(values: np.ndarray):
    return Image.fromarray(np.clip(np.round(values * 255), 0, 255).astype(np.uint8), "L")


GanDefect.add_asgi_middleware(RequestGuard, max_bytes=LIMITS.max_bytes, image_apis=IMAGE_APIS)
