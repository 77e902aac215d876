"""Frames in (image bytes -> 2-D uint8/uint16 array) and masks out (binary map -> COCO RLE).

Accepted frames:
- PNG, TIFF and JPEG, detected by their magic bytes (the Content-Type header is not trusted), read
  with ``cv2.imdecode(IMREAD_UNCHANGED)`` so 16-bit PNG/TIFF stay 16-bit;
- raw little-endian uint8/uint16 pixels, row-major, when the caller gives width and height.
Colour images (3 or 4 channels, e.g. thermal video exported as gray-in-RGB) are accepted and
converted to one channel with ``frames.preprocess.to_gray``; other pixel types (float, int16,
1-bit) are rejected with 415.

Limits are checked *before* decoding: the dimensions are read from the PNG/TIFF/JPEG header, so a
small file that claims a huge image (a decompression bomb) is rejected without allocating it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from frames.preprocess import to_gray
from service.errors import BadFrame, TooLarge, UnsupportedFormat

RawDtype = Literal["uint8", "uint16"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


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
    width, height = _header_size(body)
    _check_pixels(width, height, limits)
    return _decode_image(body, width, height)


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


def _decode_image(body: bytes, width: int, height: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(body, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadFrame("the image could not be decoded (truncated or corrupt)", code="undecodable")
    if image.shape[:2] != (height, width):
        raise BadFrame(
            f"the image decodes to {image.shape[1]}x{image.shape[0]}, its header says "
            f"{width}x{height}",
            code="undecodable",
        )
    if image.dtype not in (np.uint8, np.uint16):
        raise UnsupportedFormat(
            f"pixel type {image.dtype} is not supported; send 8- or 16-bit unsigned images",
            code="unsupported_pixel_type",
        )
    if image.ndim == 3:
        if image.shape[2] not in (3, 4):
            raise UnsupportedFormat(
                f"{image.shape[2]}-channel images are not supported", code="unsupported_channels"
            )
        image = to_gray(image)
    return np.ascontiguousarray(image)


def _header_size(body: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding any pixel."""
    if body.startswith(_PNG_MAGIC):
        return _png_size(body)
    if body[:4] in _TIFF_MAGICS:
        return _tiff_size(body)
    if body.startswith(_JPEG_MAGIC):
        return _jpeg_size(body)
    raise UnsupportedFormat(
        "the body is not a PNG, TIFF or JPEG image; for raw pixels pass width and height",
        code="unsupported_format",
    )


def _png_size(body: bytes) -> tuple[int, int]:
    # The IHDR chunk must come first: length (4), b"IHDR", width (4), height (4), big-endian.
    if len(body) < 24 or body[12:16] != b"IHDR":
        raise BadFrame("the PNG header is truncated or corrupt", code="undecodable")
    width, height = struct.unpack(">II", body[16:24])
    return width, height


def _tiff_size(body: bytes) -> tuple[int, int]:
    order = "<" if body[:2] == b"II" else ">"
    try:
        (ifd_offset,) = struct.unpack_from(order + "I", body, 4)
        (entries,) = struct.unpack_from(order + "H", body, ifd_offset)
        found: dict[int, int] = {}
        for index in range(entries):
            tag, kind, _count = struct.unpack_from(order + "HHI", body, ifd_offset + 2 + 12 * index)
            if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
                value_format = order + ("H" if kind == 3 else "I")
                (found[tag],) = struct.unpack_from(value_format, body, ifd_offset + 10 + 12 * index)
    except struct.error as exc:
        raise BadFrame("the TIFF header is truncated or corrupt", code="undecodable") from exc
    if 256 not in found or 257 not in found:
        raise BadFrame("the TIFF header names no image size", code="undecodable")
    return found[256], found[257]


def _jpeg_size(body: bytes) -> tuple[int, int]:
    position = 2
    while position + 9 <= len(body):
        if body[position] != 0xFF:
            break
        marker = body[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack_from(">HH", body, position + 5)
            return width, height
        (segment_length,) = struct.unpack_from(">H", body, position + 2)
        position += 2 + segment_length
    raise BadFrame("the JPEG header is truncated or corrupt", code="undecodable")


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
