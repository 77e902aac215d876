"""Frames in (image bytes -> 2-D uint8/uint16 array) and masks out (binary map -> COCO RLE).

Accepted frames:
- PNG, TIFF and JPEG, told apart by their magic bytes (the Content-Type header is not trusted) and
  read with Pillow, so 16-bit gray PNG/TIFF stay 16-bit;
- raw little-endian uint8/uint16 pixels, row-major, when the caller gives width and height.
Colour images (3 or 4 channels, e.g. thermal video exported as gray-in-RGB, read at 8 bits per
channel) are converted to one channel with ``frames.preprocess.to_gray``; other pixel types
(float, 32-bit integers, 1-bit) are rejected with 415.

Limits are checked *before* decoding, on the size the decoder itself will allocate: Pillow's
``Image.open`` reads the header (the same parse that later sizes the pixel buffer) and decodes
nothing until ``load``. A separate header sniffer would be a second parser that an attacker can
make disagree with the decoder (a TIFF naming its width twice, a JPEG with a restart marker before
its frame header): a small file would then be decoded at a size no limit was checked against.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from frames.preprocess import to_gray
from service.errors import BadFrame, TooLarge, UnsupportedFormat

RawDtype = Literal["uint8", "uint16"]

# Magic bytes -> the one Pillow plugin allowed to read the body (a JPEG never reaches TIFF code).
_FORMATS = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"\xff\xd8\xff": "JPEG",
}
_GRAY_16_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_UNSUPPORTED_MODES = {"1": "1-bit", "I": "32-bit integer", "F": "floating-point"}
# Everything Pillow raises for a body it cannot parse or decode (truncated, corrupt, inconsistent).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError)


@dataclass(frozen=True)
class FrameLimits:
    """What a single frame may cost: body bytes and pixels (width * height)."""

    max_body_bytes: int
    max_frame_pixels: int


@dataclass(frozen=True)
class RawLayout:
    """How to read a raw body: its size and little-endian pixel type."""

    width: int
    height: int
    dtype: RawDtype = "uint8"


def decode_frame(body: bytes, limits: FrameLimits, raw: RawLayout | None = None) -> np.ndarray:
    """Decode one frame to a 2-D uint8 or uint16 array, or raise the ServiceError that says why."""
    if not body:
        raise BadFrame("the frame body is empty", code="empty_body")
    if len(body) > limits.max_body_bytes:
        raise TooLarge(
            f"the frame body has {len(body)} bytes, more than the limit {limits.max_body_bytes}",
            code="body_too_large",
        )
    if raw is not None:
        _check_pixels(raw.width, raw.height, limits)
        return _decode_raw(body, raw)
    return _decode_image(body, limits)


def _check_pixels(width: int, height: int, limits: FrameLimits) -> None:
    if width <= 0 or height <= 0:
        raise BadFrame(f"the frame claims an empty size {width}x{height}", code="bad_dimensions")
    if width * height > limits.max_frame_pixels:
        raise TooLarge(
            f"a {width}x{height} frame has more pixels than the limit {limits.max_frame_pixels}",
            code="frame_too_large",
        )


def _decode_raw(body: bytes, raw: RawLayout) -> np.ndarray:
    itemsize = np.dtype(raw.dtype).itemsize
    expected = raw.width * raw.height * itemsize
    if len(body) != expected:
        raise BadFrame(
            f"a raw {raw.width}x{raw.height} {raw.dtype} frame has {expected} bytes, "
            f"the body has {len(body)}",
            code="raw_size_mismatch",
        )
    little_endian = np.dtype(raw.dtype).newbyteorder("<")
    pixels = np.frombuffer(body, dtype=little_endian).reshape(raw.height, raw.width)
    return pixels.astype(raw.dtype)  # native byte order, and a writable copy of the body


def _decode_image(body: bytes, limits: FrameLimits) -> np.ndarray:
    image_format = next((name for magic, name in _FORMATS.items() if body.startswith(magic)), None)
    if image_format is None:
        raise UnsupportedFormat(
            "the body is not a PNG, TIFF or JPEG image; for raw pixels pass width and height",
            code="unsupported_format",
        )
    try:
        image = Image.open(io.BytesIO(body), formats=[image_format])  # the header only
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, far above ours
        raise TooLarge(str(exc), code="frame_too_large") from None
    except _DECODE_ERRORS as exc:
        raise BadFrame(
            f"the {image_format} header is truncated or corrupt ({exc})", code="undecodable"
        ) from None
    with image:
        _check_pixels(image.width, image.height, limits)  # the size the decoder will allocate
        if image.mode in _UNSUPPORTED_MODES:
            raise UnsupportedFormat(
                f"{_UNSUPPORTED_MODES[image.mode]} pixels are not supported; send 8- or 16-bit "
                "unsigned images",
                code="unsupported_pixel_type",
            )
        try:
            image.load()
        except _DECODE_ERRORS as exc:
            raise BadFrame(
                f"the {image_format} image could not be decoded (truncated or corrupt: {exc})",
                code="undecodable",
            ) from None
        return _gray_pixels(image)


def _gray_pixels(image: Image.Image) -> np.ndarray:
    """A loaded image as (H, W) uint8 or uint16 in native byte order."""
    if image.mode == "L":
        return np.array(image)
    if image.mode in _GRAY_16_BIT_MODES:
        return np.asarray(image).astype(np.uint16)
    if image.mode not in ("RGB", "RGBA"):  # palette, gray + alpha, CMYK, YCbCr...
        has_alpha = "A" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    return to_gray(np.asarray(image), channel_order="rgb")


def encode_rle(mask: np.ndarray) -> dict[str, list[int]]:
    """Uncompressed COCO RLE of a 2-D binary mask: column-major runs, the first run is zeros.

    ``{"size": [h, w], "counts": [...]}`` is what ``pycocotools.mask.frPyObjects`` reads.
    """
    height, width = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], changes, [flat.size])))
    if flat.size and flat[0]:
        counts = np.concatenate(([0], counts))
    return {"size": [height, width], "counts": [int(c) for c in counts]}


def decode_rle(rle: dict[str, list[int]]) -> np.ndarray:
    """The inverse of :func:`encode_rle`: a (h, w) bool mask."""
    height, width = rle["size"]
    values = np.arange(len(rle["counts"])) % 2 == 1  # runs alternate zeros, ones, zeros, ...
    flat = np.repeat(values, rle["counts"])
    return flat.reshape((height, width), order="F")
