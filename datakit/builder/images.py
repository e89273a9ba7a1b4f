"""Decode one source picture into S x S RGB pixels and the JPEG bytes to store.

The common case, a complete 8-bit 3-component JPEG already S x S (ending in its EOI marker), is
recognised from its marker segments and decoded by OpenCV: the same libjpeg-turbo pixels as
Pillow (tested equal), at a fraction of the Python overhead. Everything else goes to Pillow,
which reports truncated JPEGs (OpenCV silently fills the missing rows with grey), handles CMYK
(including Adobe's inverted CMYK), grayscale, palette and 16-bit images, and recognises PNG
bytes behind a `.jpg` name. EXIF orientation is ignored by both, as keras and
tf.io.decode_jpeg ignore it.

Hostile content, and what becomes of it (a refused picture is a skip reason; the build goes on):
- Decompression bombs: a header claiming more than `max_pixels` (MAX_PIXELS, 8192 x 8192, by
  default) is refused from the header alone, before any pixel is allocated: the JPEG frame header
  on the fast path, Pillow's `Image.open` (which reads only the header) otherwise. Pillow's own
  DecompressionBombError (2 x PIL.Image.MAX_IMAGE_PIXELS) is refused the same way.
- Only the raster formats of SAFE_FORMATS are opened: never EPS (Ghostscript) or other plugins
  that run external programs.
- Animated pictures (GIF, WebP, APNG) and multi-page TIFFs: the first frame.
- 16-bit: reduced to 8 bits (I;16 gray: value / 257, rounded; 16-bit RGB PNG: Pillow keeps the
  high byte).
- Alpha (RGBA, LA, PA, palette with transparency): composited onto white.
- Palette pictures (P): converted to RGB through their palette.
- Pictures under MIN_SIDE (8) pixels a side (1x1 tracking pixels, icons): refused, since
  resizing them up carries no picture.
- Bytes after the end of the picture (a JPEG with data after its EOI marker, as phones append
  videos or a second picture): decoded without them, and the stored JPEG copy is trimmed at the
  EOI marker, so outputs hold only the picture (zero padding alone, harmless to every decoder,
  is kept as it is); other formats are re-encoded anyway."""

from __future__ import annotations

import io
import re
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

JPEG_QUALITY = 95
MAX_PIXELS = 8192 * 8192  # the default limit of a source picture's pixels (width x height)
MIN_SIDE = 8  # a source picture's smallest usable side
SAFE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO")


class BadImage(ValueError):
    """The file is not a usable picture; the message is the reason."""


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L"):  # 16 bits by definition: value / 257
        arr = np.asarray(im).astype(np.uint32)
        im = Image.fromarray(((arr + 128) // 257).astype(np.uint8))
    elif im.mode in ("I", "F"):  # 32-bit: 16-bit values if any exceeds 255, else 8-bit ones
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() or 1.0
        im = Image.fromarray(np.clip(arr * (255.0 / (65535.0 if hi > 255 else 255.0)), 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGB", im.size, (255, 255, 255))
        white.paste(im, mask=im.getchannel("A"))
        return white
    return im.convert("RGB")


_SOF_PLAIN = (0xC0, 0xC1, 0xC2)  # baseline, extended, progressive Huffman: what libjpeg-turbo decodes
_NO_LENGTH = frozenset((0x01, *range(0xD0, 0xD8)))  # markers without a length field


def _frame_header(data: bytes) -> tuple[int, int] | None:
    """(marker, offset) of a JPEG's frame header (SOFn), followed through the marker segments
    without decoding; None when the bytes are not a JPEG or its scan comes first."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data) - 10
    while pos < end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker, pos  # frame header: length(2) precision(1) height(2) width(2) components(1)
        if marker == 0xDA:
            return None
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, without decoding; None for anything else."""
    frame = _frame_header(data)
    if frame is None:
        return None
    pos = frame[1]
    return int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")


def plain_jpeg(data: bytes, size: int) -> bool:
    """True for a complete 8-bit 3-component JPEG of size x size (the common UTKFace file, and most photo folders).

    Reads the marker segments up to the frame header: a few microseconds, where opening the file
    with Pillow costs ~0.1 ms. Anything else (or anything odd, or a coding process other than
    baseline, extended or progressive Huffman) goes through Pillow."""
    if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return False
    frame = _frame_header(data)
    if frame is None or frame[0] not in _SOF_PLAIN:
        return False
    pos = frame[1]
    height = int.from_bytes(data[pos + 5:pos + 7], "big")
    width = int.from_bytes(data[pos + 7:pos + 9], "big")
    return data[pos + 4] == 8 and data[pos + 9] == 3 and height == width == size


def jpeg_end(data: bytes) -> int | None:
    """The offset just past the EOI marker that ends the first picture of a JPEG, or None when its
    structure cannot be followed (not a JPEG, truncated). Segments are followed by their lengths;
    inside entropy-coded data a marker is 0xFF followed by neither 0x00 (a stuffed byte) nor a
    restart marker, so an EOI inside an EXIF thumbnail or in appended bytes is never taken."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, n = 2, len(data)
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if pos + 4 > n:
            return None
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker != 0xDA:
            continue
        while True:  # entropy-coded data of the scan, up to the next marker
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= n:
                return None
            following = data[pos + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                pos += 2
            elif following == 0xFF:
                pos += 1
            else:
                break
    return None


def _stored(data: bytes, end: int) -> bytes:
    """A JPEG's bytes to store: up to its EOI marker, unless only zero padding follows it."""
    return data if len(data.rstrip(b"\x00")) <= end else data[:end]


def too_many(width: int, height: int, max_pixels: int) -> str | None:
    """The reason to refuse a picture whose header claims width x height, or None."""
    if width * height > max_pixels:
        return (f"too many pixels: the header claims {width} x {height} = {width * height:,}, over the limit "
                f"of {max_pixels:,} (max_pixels; a decompression bomb?)")
    return None


def claims_too_many(data: bytes, max_pixels: int = MAX_PIXELS) -> bool:
    """True when the picture's header claims more than max_pixels (read without decoding), for a
    caller that decodes with something else than `decode` (OpenCV has no limit of its own below
    2**30 pixels)."""
    side = jpeg_size(data)
    if side is not None:
        return side[0] * side[1] > max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data), formats=SAFE_FORMATS).size
    except Image.DecompressionBombError:
        return True
    except Exception:  # noqa: BLE001 - not a picture Pillow reads: the caller's decoder decides
        return False
    return width * height > max_pixels


def _bomb(exc: Exception) -> str:
    claimed = re.search(r"\((\d+) pixels\)", str(exc))
    what = f"the header claims {int(claimed.group(1)):,}" if claimed else "the header claims too many"
    return f"too many pixels: {what}, over Pillow's limit (a decompression bomb?)"


def decode(data: bytes, size: int | None, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, bytes]:
    """(pixels uint8 (size, size, 3) RGB, JPEG bytes) for one file's bytes; raises BadImage.
    size None: the picture's own size. What becomes of odd pictures: the module doc.

    The source bytes are kept as they are (up to their EOI marker) when they already are an RGB
    JPEG of size x size; anything else is converted to RGB, resized and re-encoded (quality 95, no
    chroma subsampling).
    """
    if not data:
        raise BadImage("empty file")
    if size is not None and plain_jpeg(data, size):
        end = jpeg_end(data)
        if end is not None and not too_many(size, size, max_pixels):
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
            if pixels is not None and pixels.shape == (size, size, 3):
                return pixels, _stored(data, end)
    try:
        with warnings.catch_warnings():  # the limit is max_pixels: Pillow's warning below its error is noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=SAFE_FORMATS)  # reads the header only
    except Image.DecompressionBombError as exc:
        raise BadImage(_bomb(exc)) from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised content, or a format outside "
                       f"{', '.join(SAFE_FORMATS)})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the file
        reason = "truncated image" if "truncated" in str(exc).lower() else "cannot open image"
        raise BadImage(f"{reason} ({exc})") from None
    fmt = im.format
    refused = too_many(im.width, im.height, max_pixels)
    if refused:
        raise BadImage(refused)  # before im.load(): nothing of the pixels is allocated
    if min(im.size) < MIN_SIDE:
        raise BadImage(f"too small: {im.width} x {im.height} (at least {MIN_SIDE} pixels a side)")
    size = size or None
    end = jpeg_end(data) if fmt == "JPEG" else None
    plain = end is not None and im.mode == "RGB" and (size is None or im.size == (size, size))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()  # the first frame of an animated picture
            rgb = _to_rgb(im)
    except Image.DecompressionBombError as exc:
        raise BadImage(_bomb(exc)) from None
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        reason = "truncated image" if "truncated" in text.lower() else "cannot decode image"
        raise BadImage(f"{reason} ({fmt}: {text})") from None
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(rgb)
    if plain:
        return pixels, _stored(data, end)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)  # 4:4:4 keeps colour edges
    return pixels, buf.getvalue()
