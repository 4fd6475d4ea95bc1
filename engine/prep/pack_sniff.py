"""Cheap image checks from the file bytes alone: format, size and truncation, without decoding pixels.

OpenCV decodes a truncated JPEG without complaint (the missing rows come out grey), so a JPEG is
checked for its end-of-image marker after the scan data, and for holding at least the few bits per
block that its claimed size needs (a header edited to 65500x65500 over 73 KB of data); a PNG for its
IEND chunk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}
# Huffman-coded baseline, extended and progressive frames: every 8x8 block costs at least one bit
# (its DC code) in some component; half a bit per block of the image is a bound no whole file is under.
HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2}
MIN_BLOCKS_PER_BYTE = 16
OTHER_SIGNATURES = (
    (b"BM", "bmp"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\0", "tiff"),
    (b"MM\0*", "tiff"),
    (b"P5", "pnm"),
    (b"P6", "pnm"),
)


@dataclass(frozen=True)
class ImageInfo:
    """What the header says; ``problem`` is a reason to skip the file ('' when it looks whole)."""

    format: str = ""  # jpeg | png | bmp | gif | tiff | pnm | webp | "" (unknown)
    width: int = 0
    height: int = 0
    components: int = 0
    precision: int = 0  # bits per sample
    problem: str = ""
    orientation: int = 1  # EXIF orientation (OpenCV turns the pixels by it); 0: unreadable EXIF
    frame: int = 0  # a JPEG's start-of-frame marker (0xC0 baseline, 0xC2 progressive …)


def sniff(data: bytes) -> ImageInfo:
    """Identify the image format and size; say what is wrong when the bytes cannot be a whole image."""
    if not data:
        return ImageInfo(problem="empty file (0 bytes)")
    if data.startswith(JPEG_SOI):
        return _sniff_jpeg(data)
    if data.startswith(PNG_SIGNATURE):
        return _sniff_png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageInfo(format="webp")
    for signature, name in OTHER_SIGNATURES:
        if data.startswith(signature):
            return ImageInfo(format=name)
    return ImageInfo(problem=f"not an image: no known image signature (starts with {data[:8]!r})")


def _sniff_jpeg(data: bytes) -> ImageInfo:
    pos, size, frame, orientation = 2, len(data), None, 1
    while True:
        pos = data.find(b"\xff", pos)
        while 0 <= pos < size - 1 and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos < 0 or pos + 4 > size:
            return ImageInfo(
                format="jpeg", problem="truncated JPEG: header ends before the image data"
            )
        marker = data[pos + 1]
        if marker in STANDALONE_MARKERS:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in SOF_MARKERS and pos + 10 <= size:
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            frame = (width, height, components, precision, marker)
        if marker == 0xE1 and data.startswith(b"Exif\0\0", pos + 4):
            orientation = exif_orientation(data[pos + 10 : pos + 2 + length])
        if marker == 0xDA:  # start of scan: pixels follow
            break
        if marker == 0xD9 or length < 2:
            return ImageInfo(
                format="jpeg", problem="corrupt JPEG: no image data before the end marker"
            )
        pos += 2 + length
    if frame is None:
        return ImageInfo(format="jpeg", problem="corrupt JPEG: no frame header (size unknown)")
    width, height, components, precision, marker = frame
    # Searched from the end, where it sits: a forward search stops at every 0xFF of the scan data.
    end = data.rfind(JPEG_EOI, pos + 2)
    problem = "truncated JPEG: no end-of-image marker" if end < 0 else ""
    if not problem and marker in HUFFMAN_FRAMES:
        problem = too_little_data(width, height, end - pos)
    return ImageInfo("jpeg", width, height, components, precision, problem, orientation, marker)


def too_little_data(width: int, height: int, scan_bytes: int) -> str:
    """Why a Huffman-coded JPEG of width x height cannot be whole with scan_bytes of image data ('' if it can)."""
    need = -(-width // 8) * -(-height // 8) // MIN_BLOCKS_PER_BYTE
    if scan_bytes >= need:
        return ""
    return (
        f"corrupt JPEG: the header says {width}x{height} pixels, which needs at least {need:,} bytes "
        f"of image data; the file holds {scan_bytes:,} (most of the image would be grey)"
    )


def exif_orientation(tiff: bytes) -> int:
    """The orientation tag (0x0112) of IFD0 in an EXIF TIFF block: 1 when absent, 0 when unreadable."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 0
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind, _n, value = struct.unpack_from(order + "HHIH", tiff, entry)
            if tag == 0x0112:
                return value if kind == 3 else 0
    except struct.error:
        return 0
    return 1


def _sniff_png(data: bytes) -> ImageInfo:
    if len(data) < 33 or data[12:16] != b"IHDR":
        return ImageInfo(format="png", problem="truncated PNG: no complete IHDR header")
    width, height, depth, color_type = struct.unpack_from(">IIBB", data, 16)
    components = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color_type, 0)
    if data.rfind(b"IEND", max(0, len(data) - 64)) < 0:
        return ImageInfo("png", width, height, components, depth, "truncated PNG: no IEND chunk")
    return ImageInfo("png", width, height, components, depth)
