"""Untrusted image bytes: what decodes, what is refused, and that every refusal says what to send."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from omniforge_shared.images import ImageError, ImageLimits, decode_image, to_model_input


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(w=64, h=48, colour=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (w, h), colour)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge size (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_common_formats_decode_to_rgb():
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "TIFF"):
        img = decode_image(encoded(rgb(), fmt))
        assert img.mode == "RGB" and img.size == (64, 48)
        r, g, b = img.getpixel((10, 10))
        assert r > 150 and g < 80 and b < 80, fmt


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))           # fully transparent red
    assert decode_image(encoded(rgba, "PNG")).getpixel((5, 5)) == (255, 255, 255)
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([0, 0, 255] + [0] * 765)
    pal.info["transparency"] = 0
    assert decode_image(encoded(pal, "PNG", transparency=0)).getpixel((5, 5)) == (255, 255, 255)


def test_sixteen_bit_cmyk_and_palette_are_converted():
    grey16 = Image.fromarray((np.ones((32, 32)) * 65535 // 2).astype(np.uint16))
    img = decode_image(encoded(grey16, "PNG"))
    assert img.mode == "RGB" and abs(img.getpixel((0, 0))[0] - 128) <= 1       # scaled, not clipped to white
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))                    # pure red in CMYK
    r, g, b = decode_image(encoded(cmyk, "JPEG")).getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60
    assert decode_image(encoded(rgb().convert("P"), "GIF")).mode == "RGB"


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6                                                     # rotate 90 degrees on display
    img = decode_image(encoded(rgb(64, 32), "JPEG", exif=exif.tobytes()))
    assert img.size == (32, 64)


@pytest.mark.parametrize("data, says", [
    (b"", r"empty \(0 bytes\); send PNG, JPEG"),
    (b"this is plain text, not an image", "not an image format we read"),
    (png_declaring(100_000, 100_000), "pixels; the limit is"),
])
def test_refusals_name_what_is_accepted(data, says):
    with pytest.raises(ImageError, match=says):
        decode_image(data)


def test_truncated_file_is_refused():
    data = encoded(rgb(256, 256), "PNG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])
    jpeg = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(jpeg[:600])


def test_oversized_and_animated_are_refused():
    with pytest.raises(ImageError, match="the limit is 1,000 bytes"):
        noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        decode_image(encoded(Image.fromarray(noise), "PNG"), limits=ImageLimits(max_bytes=1000))
    frames = [rgb(colour=(i * 40, 0, 0)) for i in range(3)]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(ImageError, match="animated .*3 frames.*single still image"):
        decode_image(gif)


def test_svg_is_rasterised_only_when_self_contained():
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><rect width="40" height="40" fill="#00f"/></svg>'
    img = decode_image(svg)
    assert img.mode == "RGB" and img.getpixel((20, 20))[2] > 200
    for bad in (b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd" width="9" height="9"/></svg>',
                b'<svg xmlns="http://www.w3.org/2000/svg"><image href="http://example.com/a.png"/></svg>',
                b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg>&x;</svg>',
                b'<svg xmlns="http://www.w3.org/2000/svg"><rect style="fill:url(http://x/y)"/></svg>'):
        with pytest.raises(ImageError, match="self-contained SVG"):
            decode_image(bad)


def test_model_input_is_normalised_nchw():
    x = to_model_input([rgb(80, 40, (255, 255, 255)), np.zeros((32, 32, 3), np.uint8)], 32)
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x[0], 1.0) and np.allclose(x[1], -1.0)
