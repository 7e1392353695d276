"""What an upload's history tells: format, JPEG quality, size, scale, up-scaling; inside the envelope or not."""

import io

import numpy as np
import pytest
from PIL import Image

from gandefect.data.history import Envelope, ijg_table, jpeg_quality, read_history, upscale_factor
from serving.uploads import UploadLimits, decode

ENVELOPE = Envelope(min_jpeg_quality=50, max_downscale=2.0, max_upscale=2.0)


def digit(size: int = 28, seed: int = 0) -> Image.Image:
    """A digit-like picture with real detail at every scale: strokes plus a little texture."""
    rng = np.random.default_rng(seed)
    x = np.zeros((size, size))
    x[6:22, 12:15] = 220
    x[8:11, 8:20] = 180
    x += rng.normal(0, 20, x.shape) * (x > 0)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8), "L")


def upload(im: Image.Image, fmt: str, **kw) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return decode(buf.getvalue(), UploadLimits())  # the service's own decoding


def test_png_history():
    h = read_history(upload(digit(), "PNG"), 28, ENVELOPE)
    assert (h.format, h.mode, h.original_size, h.scale) == ("PNG", "L", (28, 28), 1.0)
    assert h.jpeg_quality is None and h.upscaled_by == 1 and h.inside and h.reasons == []


@pytest.mark.parametrize("quality", [30, 50, 61, 75, 90, 97])
def test_jpeg_quality_is_read_from_the_quantization_tables(quality):
    h = read_history(upload(digit(), "JPEG", quality=quality), 28, ENVELOPE)
    assert h.format == "JPEG" and h.jpeg_quality == quality and h.jpeg_standard_table
    assert h.inside == (quality >= 50)
    if quality < 50:
        assert h.reasons == [f"JPEG quality about {quality}, below the 50 the detector was validated on"]


def test_a_non_standard_table_gets_the_nearest_quality():
    table = (ijg_table(80) * 1.1).round().astype(int).tolist()
    im = upload(digit(), "JPEG", qtables=[table])
    quality, standard = jpeg_quality(im)
    assert not standard and 76 <= quality <= 80


def test_an_upscaled_picture_is_recognized_and_uncertain():
    small = digit().resize((7, 7), Image.Resampling.BICUBIC)
    for kernel in (
        Image.Resampling.NEAREST,
        Image.Resampling.BILINEAR,
        Image.Resampling.BICUBIC,
        Image.Resampling.LANCZOS,
    ):
        h = read_history(upload(small.resize((28, 28), kernel), "PNG"), 28, ENVELOPE)
        assert h.upscaled_by == 4 and not h.inside, kernel
        assert "enlarged about x4" in h.reasons[0] and "7x7" in h.reasons[0]


def test_a_twice_upscaled_picture_is_inside_and_a_native_one_is_not_upscaled():
    up2 = digit().resize((14, 14), Image.Resampling.BICUBIC).resize((28, 28), Image.Resampling.BICUBIC)
    assert upscale_factor(up2) == 2 and read_history(up2, 28, ENVELOPE).inside
    assert upscale_factor(digit()) == 1


def test_a_larger_upload_is_scaled_and_judged_against_the_envelope():
    big = digit().resize((56, 56), Image.Resampling.BICUBIC)
    h = read_history(upload(big, "PNG"), 28, ENVELOPE)
    assert h.original_size == (56, 56) and h.scale == 0.5 and h.upscaled_by == 2 and h.inside
    strict = Envelope(max_downscale=1.0)
    h = read_history(upload(big, "PNG"), 28, strict)
    assert not h.inside and "shrunk x2.0" in h.reasons[0]
    huge = read_history(upload(digit(300), "PNG"), 28, ENVELOPE)
    assert not huge.inside and huge.scale == pytest.approx(28 / 300, abs=1e-4)


def test_history_is_json_ready():
    d = read_history(upload(digit(), "JPEG", quality=80), 28, ENVELOPE).to_dict()
    assert d["original_size"] == [28, 28] and d["jpeg_quality"] == 80 and d["inside"] is True


def test_a_thin_strip_too_long_to_analyse_gets_a_reason_not_an_error():
    # found by the fuzz suite: a 1x5000 upload made the service answer 500
    im = Image.new("L", (1, 5000), 128)
    im.format = "PNG"
    history = read_history(im, 28, Envelope())
    assert not history.inside and "1 pixels across its short side" in history.reasons[0]
