"""Image decoding and preprocessing that the serving path and training share.

`decode_image` turns untrusted bytes into an RGB Pillow image or raises `ImageError` with a
message that names what is accepted. It reads the declared size before decoding pixels (so a
decompression bomb never allocates), applies EXIF orientation, composites alpha on white and
converts CMYK, palette, greyscale and 16-bit images to 8-bit RGB. SVG is rasterised by
cairosvg only when it references nothing outside itself.

`to_model_input` resizes and centre-crops to a model's square input and normalises to the
model's mean/std, as float32 NCHW: the one preprocessing that training, export and every
service apply, so that a model sees the same pixels everywhere.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
ACCEPTED = "PNG, JPEG, WebP, BMP, TIFF, a still GIF or a self-contained SVG"
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000          # e.g. 8000 x 5000; Pillow's own bomb limit is ~89M
MIN_SIDE = 8


class ImageError(ValueError):
    """The bytes are not an image we accept; the message says what to send instead."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS

    def describe(self) -> str:
        return f"{ACCEPTED}, at most {self.max_bytes // (1024 * 1024)} MB and {self.max_pixels:,} pixels"


_SVG_START = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*(<!DOCTYPE[^>]*>\s*)?<svg[\s>]", re.S | re.I)
# any reference that leaves the document: a URL, a file, or an entity declaration
_SVG_EXTERNAL = re.compile(rb"(?:href|src)\s*=\s*[\"']\s*(?!#|data:)[^\"']+|<!ENTITY|url\(\s*[\"']?\s*(?!#|data:)",
                           re.I)


def is_svg(data: bytes) -> bool:
    return bool(_SVG_START.match(data[:4096]))


def decode_image(data: bytes, *, limits: ImageLimits = ImageLimits()):
    """Untrusted bytes -> an RGB `PIL.Image` (alpha composited on white), or ImageError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"expected image bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError(f"the image is empty (0 bytes); send {limits.describe()}")
    if len(data) > limits.max_bytes:
        raise ImageError(f"the image is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes")
    if is_svg(data):
        return _decode_svg(data, limits)
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"the bytes are not an image format we read; send {limits.describe()}") from None
    except Image.DecompressionBombError:
        raise ImageError(f"the image declares more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels; "
                         f"the limit is {limits.max_pixels:,} pixels") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"the file is truncated or corrupt ({e}); send a complete image ({ACCEPTED})") from None
    # 1. the declared size, checked before a single pixel is decoded
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ImageError(f"the image declares {w}x{h} = {w * h:,} pixels; the limit is {limits.max_pixels:,} pixels")
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"the image is {w}x{h}; each side must be at least {MIN_SIDE} pixels")
    if img.format not in FORMATS:
        raise ImageError(f"{img.format} images are not accepted; send {limits.describe()}")
    if getattr(img, "n_frames", 1) > 1:
        raise ImageError(f"the {img.format} is animated ({img.n_frames} frames); send a single still image "
                         f"({ACCEPTED})")
    # 2. decode; a truncated or corrupt file fails here
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"the {img.format} file is truncated or corrupt ({e}); send a complete image") from None


def to_rgb(img):
    """Any Pillow mode -> 8-bit RGB; transparency is composited on white."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit greyscale: scale the real range to 0..255 rather than clipping at 255
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")


def _decode_svg(data: bytes, limits: ImageLimits, size: int = 256):
    from PIL import Image

    if _SVG_EXTERNAL.search(data):
        raise ImageError("the SVG references external files or URLs (href, src, url() or an entity); "
                         "send a self-contained SVG or a raster image")
    try:
        import cairosvg
    except ImportError:
        raise ImageError(f"SVG is not available on this server; send a raster image ({', '.join(FORMATS)})") from None
    try:
        png = cairosvg.svg2png(bytestring=data, output_width=size, output_height=size, unsafe=False)
    except Exception as e:  # noqa: BLE001 - cairosvg raises many kinds on malformed XML
        raise ImageError(f"the SVG could not be rendered ({type(e).__name__}: {e}); send valid SVG") from None
    img = Image.open(io.BytesIO(png))
    img.load()
    return to_rgb(img)


# ---- preprocessing shared by training, export and serving -------------------------------------

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def fit_square(img, size: int):
    """Resize so the short side is `size`, then centre-crop to size x size (bicubic, antialiased)."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_model_input(images, size: int, mean=MEAN, std=STD) -> np.ndarray:
    """RGB images (PIL) or uint8 (H, W, 3) arrays -> float32 (B, 3, size, size), normalised."""
    from PIL import Image

    batch = []
    for im in images:
        if isinstance(im, np.ndarray):
            im = Image.fromarray(im)
        if im.size != (size, size):
            im = fit_square(im, size)
        batch.append(np.asarray(im, dtype=np.uint8))
    return normalise(np.stack(batch), mean, std)


def normalise(pixels: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in the model's normalised range."""
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
