"""Upload checks of the service, without a server: formats, caps before decoding, masks, boxes."""

import io

import numpy as np
import pytest
from PIL import Image

from serving.uploads import UploadError, UploadLimits, bounding_boxes, decode, mask_for, to_model_array


def _bytes(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def test_every_accepted_format_decodes_to_the_models_input():
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF"):
        x = to_model_array(decode(_bytes(rgb, fmt), UploadLimits()), 28, "L", "crop")
        assert x.shape == (28, 28) and x.dtype == np.uint8, fmt


def test_the_pixel_cap_is_checked_before_decoding():
    bomb = _bytes(Image.new("L", (3000, 3000)), "PNG")  # 9 M pixels in a few KB
    assert len(bomb) < 100_000
    with pytest.raises(UploadError, match="9,000,000 pixels") as exc:
        decode(bomb, UploadLimits(max_pixels=1_000_000))
    assert exc.value.status == 400


@pytest.mark.parametrize(
    "data, message", [(b"", "empty"), (b"GIF89a not really", "not an image"), (b"plain text", "not an image")]
)
def test_unreadable_uploads_name_the_problem(data, message):
    with pytest.raises(UploadError, match=message):
        decode(data, UploadLimits())


def test_a_truncated_file_is_refused_and_other_formats_are_named():
    png = _bytes(Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40), dtype=np.uint8)), "PNG")
    with pytest.raises(UploadError, match="truncated"):
        decode(png[: len(png) // 2], UploadLimits())
    with pytest.raises(UploadError, match="TIFF"):
        decode(_bytes(Image.new("RGB", (8, 8)), "TIFF"), UploadLimits())


def test_a_mask_of_the_original_size_follows_the_images_crop():
    mask = Image.new("L", (56, 28), 0)
    mask.paste(255, (14, 0, 28, 28))  # the left half of the centre square
    m = mask_for(mask, (56, 28), 28, "crop")
    assert m.shape == (28, 28) and m[:, :14].all() and not m[:, 14:].any()
    with pytest.raises(UploadError, match="must match"):
        mask_for(Image.new("L", (10, 10), 255), (56, 28), 28, "crop")
    with pytest.raises(UploadError, match="empty"):
        mask_for(Image.new("L", (28, 28), 0), (56, 28), 28, "crop")


def test_bounding_boxes_cover_each_region_largest_first():
    mask = np.zeros((10, 10), bool)
    mask[1:3, 1:4] = True  # 6 pixels
    mask[5:9, 6:8] = True  # 8 pixels
    boxes = bounding_boxes(mask)
    assert boxes == [
        {"x0": 6, "y0": 5, "x1": 8, "y1": 9, "pixels": 8},
        {"x0": 1, "y0": 1, "x1": 4, "y1": 3, "pixels": 6},
    ]
    assert bounding_boxes(np.zeros((4, 4), bool)) == []
