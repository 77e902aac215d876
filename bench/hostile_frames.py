"""Frames built to hurt a decoder: small bodies whose images are huge (decompression bombs), some
shaped so that a header parser other than the decoder's own reads a harmless size.

Used by the codec tests and by ``irtrack bench fuzz``; each builder says which trick it plays.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

TIFF_SHORT, TIFF_LONG = 3, 4
DEFLATE_CHUNK = 1 << 20


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed 8-bit gray PNG whose header claims ``width`` x ``height`` and whose pixel
    data is a few bytes: what a decoder would allocate is the header's size."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def _deflated_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9)
    zeros = bytes(min(size, DEFLATE_CHUNK))
    parts = [
        compressor.compress(zeros[: min(len(zeros), size - done)])
        for done in range(0, size, len(zeros))
    ]
    return b"".join(parts) + compressor.flush()


def tiff_with_repeated_size_tags(real: int = 16384, decoy: int = 16) -> bytes:
    """A deflate-compressed 8-bit TIFF of ``real`` x ``real`` zeros (~1 KiB per MiB of pixels)
    whose ImageWidth and ImageLength tags appear twice: first the real size (what libtiff and
    Pillow use), then ``decoy`` (what a parser keeping the last value reads)."""
    pixels = _deflated_zeros(real * real)
    entries = [
        (256, TIFF_LONG, real),  # ImageWidth
        (256, TIFF_LONG, decoy),
        (257, TIFF_LONG, real),  # ImageLength
        (257, TIFF_LONG, decoy),
        (258, TIFF_SHORT, 8),  # BitsPerSample
        (259, TIFF_SHORT, 8),  # Compression: deflate
        (262, TIFF_SHORT, 1),  # PhotometricInterpretation: black is zero
        (273, TIFF_LONG, 0),  # StripOffsets: filled in below
        (277, TIFF_SHORT, 1),  # SamplesPerPixel
        (278, TIFF_LONG, real),  # RowsPerStrip: one strip
        (279, TIFF_LONG, len(pixels)),  # StripByteCounts
    ]
    ifd_offset = 8
    pixels_offset = ifd_offset + 2 + 12 * len(entries) + 4
    body = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries)))
    for tag, kind, value in entries:
        value = pixels_offset if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == TIFF_SHORT else struct.pack("<I", value)
        body += struct.pack("<HHI", tag, kind, 1) + packed
    body += struct.pack("<I", 0)  # no next IFD
    return bytes(body + pixels)


def jpeg_with_restart_marker_after_soi(real: int = 16384, decoy: int = 16) -> bytes:
    """A baseline JPEG whose frame header says ``real`` x ``real`` (its scan holds a few bytes:
    libjpeg fills the rest), with an RST0 marker right after SOI. RST markers have no length;
    a parser that reads one as a segment takes the next marker's bytes (FF E0) as a length,
    jumps 64 KiB ahead and lands on a fake ``decoy`` x ``decoy`` frame header placed there."""
    ok, encoded = cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    image = bytearray(encoded.tobytes())
    frame_header = image.find(b"\xff\xc0")
    struct.pack_into(">HH", image, frame_header + 5, real, real)
    if image[2:4] != b"\xff\xe0":
        raise RuntimeError("expected an APP0 segment after SOI")
    body = bytearray(b"\xff\xd8\xff\xd0") + image[2:]  # SOI, RST0, then the image after SOI
    landing = 4 + 0xFFE0  # where a parser reading RST0 as a segment of length FF E0 lands
    body += b"\x00" * max(0, landing - len(body))
    fake_frame = b"\xff\xc0\x00\x0b\x08" + struct.pack(">HH", decoy, decoy) + b"\x01\x01\x11\x00"
    body[landing:landing] = fake_frame
    return bytes(body)
