"""Uploaded image bytes -> the model's input, with the checks a public endpoint needs.

The byte-size cap is enforced before the body is read (by the service); here every upload is
checked for being a supported image, for its pixel count *before* it is decoded (so a small
file that inflates to gigapixels is refused without decoding it) and for truncation. Each
failure is an `UploadError` whose message names the field and the problem, and whose `status`
is the HTTP status the service answers with.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from gandefect.data.images import IMAGE_ERRORS, to_model_image
from gandefect.errors import BadInputError
from gandefect.repair.masks import check_mask, mask_from_image

FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF"}


class UploadError(BadInputError):
    """An upload the service refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 10 * 2**20  # per request body
    max_pixels: int = 25_000_000  # per image, width x height, checked before decoding
    max_images: int = 64  # per request


def decode(data: bytes, limits: UploadLimits, field: str = "image") -> Image.Image:
    """Decode one uploaded file (first frame of an animation), EXIF orientation applied."""
    if not data:
        raise UploadError(f"{field}: the file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past 2x its own limit refuses) about huge images; our cap comes first
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise UploadError(f"{field}: the image has more than {limits.max_pixels:,} pixels") from None
    except IMAGE_ERRORS:
        raise UploadError(f"{field}: not an image (send PNG, JPEG, WebP, BMP or GIF)") from None
    with im:
        if im.format not in FORMATS:
            raise UploadError(f"{field}: {im.format} images are not accepted (send PNG, JPEG, WebP, BMP or GIF)")
        width, height = im.size
        if width * height > limits.max_pixels:
            raise UploadError(
                f"{field}: {width}x{height} is {width * height:,} pixels, more than the "
                f"{limits.max_pixels:,} this service decodes"
            )
        try:
            im.load()
        except IMAGE_ERRORS as exc:
            raise UploadError(f"{field}: the {im.format} file is truncated or corrupt ({exc})") from None
        out = ImageOps.exif_transpose(im)
        # the file's format and JPEG tables stay readable on the copy (gandefect.data.history)
        out.format = im.format
        if hasattr(im, "quantization"):
            out.quantization = im.quantization
        return out


def to_model_array(im: Image.Image, size: int, mode: str, resize: str) -> np.ndarray:
    """The model's uint8 view of an image, exactly as images are prepared for training."""
    return np.asarray(to_model_image(im, size, mode, resize))


def mask_for(
    im: Image.Image, original_size: tuple[int, int], size: int, resize: str, field: str = "mask"
) -> np.ndarray:
    """A user mask (white = rewrite) of the original image's size or of the model's, at model size."""
    if im.size == original_size and im.size != (size, size):
        im = to_model_image(im.convert("L"), size, "L", resize)  # the image's own crop or pad
    elif im.size != (size, size):
        raise UploadError(
            f"{field}: the mask is {im.size[0]}x{im.size[1]}; it must match the image "
            f"({original_size[0]}x{original_size[1]}) or the model input ({size}x{size})"
        )
    try:
        return check_mask(mask_from_image(im), (size, size), field)
    except BadInputError as exc:
        raise UploadError(str(exc)) from None


def bounding_boxes(mask: np.ndarray) -> list[dict]:
    """One box per connected region of a boolean mask: x0, y0 inclusive, x1, y1 exclusive, and its area."""
    labels, _ = ndimage.label(mask)
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        ys, xs = region
        boxes.append(
            {
                "x0": xs.start,
                "y0": ys.start,
                "x1": xs.stop,
                "y1": ys.stop,
                "pixels": int((labels[region] == index).sum()),
            }
        )
    return sorted(boxes, key=lambda b: -b["pixels"])
