"""The .rec files a --data-train/--data-val path names, checked for RecordIO magic; both engines read these."""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from engine.errors import UserError
from engine.recordio import (
    IR_SIZE,
    MAGIC,
    MAGIC_BYTES,
    RecordIOError,
    RecordReader,
    framing_problem,
    read_index,
    unpack,
)

log = logging.getLogger("imgscale.train")


def rec_files(
    path: str, flag: str = "--data-train", warn: Callable[[str], None] = log.warning
) -> list[str]:
    """The .rec files a --data-train/--data-val path names: the file itself, or the .rec files of a directory.

    MXNet reads every non-empty file of a directory as data, so a stray .idx or .lst there is decoded as
    images; we read only *.rec and say which files we ignored.
    """
    if os.path.isfile(path):
        if not path.endswith(".rec"):
            raise UserError(
                f"{flag} {path}: not a .rec file; pass a .rec file or a directory of .rec chunks"
            )
        return [check_magic(path, flag)]
    if not os.path.isdir(path):
        raise UserError(f"{flag} {path}: no such file or directory")
    names = sorted(os.listdir(path))
    recs = [
        os.path.join(path, n)
        for n in names
        if n.endswith(".rec") and os.path.isfile(os.path.join(path, n))
    ]
    stray = [n for n in names if not n.endswith(".rec")]
    if stray:
        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        warn(f"{flag} {path}: ignoring {len(stray)} non-.rec file(s): {shown}")
    if not recs:
        raise UserError(
            f"{flag} {path}: no .rec files in this directory; pack the data first (imgscale pack)"
        )
    return [check_magic(r, flag) for r in recs]


def check_magic(path: str, flag: str) -> str:
    """MXNet's iterator dies with a bare StopIteration on an empty or foreign file, and with a
    traceback on a cut or damaged one: name the file (and the offset) before it starts."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != MAGIC_BYTES:
        what = "is empty" if not head else "is not a RecordIO file (no record magic at its start)"
        raise UserError(f"{flag} {path} {what}; pack it again with `imgscale pack`")
    problem = framing_problem(path)
    if problem is not None:
        raise UserError(f"{flag} {problem}; pack it again with `imgscale pack`".lstrip())
    return path


def first_undecodable(paths: list[str]) -> str | None:
    """The first record of ``paths`` whose image OpenCV cannot decode, as file and offset (slow:
    every image is decoded, at 1/8 scale; only once a reader has failed on one)."""
    import cv2
    import numpy as np

    for path in paths:
        try:
            with RecordReader(path) as reader:
                while True:
                    offset = reader.tell()
                    record = reader.read()
                    if record is None:
                        break
                    _header, image = unpack(record)
                    buf = np.frombuffer(image, dtype=np.uint8)
                    if not buf.size or cv2.imdecode(buf, cv2.IMREAD_REDUCED_COLOR_8) is None:
                        return f"{path}: the image at offset {offset} does not decode"
        except (RecordIOError, ValueError) as exc:
            return str(exc)
    return None


# ---- what a reader will meet: every record's framing, header and label, and the .idx against them ----
# Records walked one by one (a read of 36 bytes each, about 0.1 s); a bigger file is checked at
# SAMPLES places and at its index's end, so the console's plan stays quick on ImageNet's chunks.
WALK_LIMIT = 50_000
SAMPLES = 4_096


@dataclass
class Survey:
    """What `check` learns of one .rec (and the .idx beside it) without decoding an image."""

    rec: str
    idx: str | None  # None: no .idx beside it (the torch engine reads by index)
    records: int | None = None  # None: sampled, not counted
    low: float | None = None  # smallest and largest label met
    high: float | None = None
    problems: list[str] = field(default_factory=list)
    images: int = 0  # records whose image's first bytes were looked at
    undecodable: int = 0  # of those, images OpenCV does not read (a GIF stored by --pass-through)
    first_undecodable: int | None = None  # its offset

    def label(self, value: float) -> None:
        if not math.isfinite(value):
            self.problems.append(f"{self.rec}: a record's label is {value}, not a number")
            return
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)


HEAD_BYTES = 72  # of a payload after its header: up to 14 labels and the image's first 8 bytes
# What OpenCV's imdecode reads (both engines decode with it): JPEG, PNG, BMP, TIFF, WebP, PNM,
# JPEG 2000, Sun raster, OpenEXR, Radiance HDR. A GIF or anything else is trained as black or stops.
IMAGE_MAGICS = (
    b"\xff\xd8", b"\x89PNG", b"BM", b"II*\x00", b"MM\x00*", b"RIFF", b"P1", b"P2", b"P3",
    b"P4", b"P5", b"P6", b"P7", b"\x00\x00\x00\x0cjP", b"\xffO\xffQ", b"\x59\xa6\x6a\x95",
    b"v/1\x01", b"#?RADIANCE", b"#?RGBE",
)  # fmt: skip


def survey(rec: str) -> Survey:
    """Walk ``rec``'s records (or sample them, for a big file) and hold its .idx against them:
    short records, labels, offsets that start no record, an index that lists fewer records."""
    idx = os.path.splitext(rec)[0] + ".idx"
    found = Survey(rec, idx if os.path.isfile(idx) else None)
    offsets: list[int] = []
    if found.idx:
        try:
            offsets = [offset for _, offset in read_index(found.idx)]
        except (RecordIOError, OSError, ValueError) as exc:
            found.problems.append(str(exc))
            found.idx = None
    with open(rec, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if found.idx is None or len(offsets) <= WALK_LIMIT:
            _walk(f, size, found, offsets)
        else:
            _sample(f, size, found, offsets)
    return found


def _head(f: BinaryIO, offset: int, size: int) -> tuple[int, int, bytes] | None:
    """(payload length, cflag, the first bytes of the payload) of the record part at ``offset``."""
    if offset < 0 or offset + 8 > size:
        return None
    head = os.pread(f.fileno(), 8 + IR_SIZE + HEAD_BYTES, offset)
    magic, lrec = struct.unpack_from("<II", head)
    if magic != MAGIC:
        return None
    return lrec & ((1 << 29) - 1), lrec >> 29, head[8:]


def _record(found: Survey, offset: int, length: int, cflag: int, payload: bytes) -> None:
    """One record's header: long enough for an image record with an image, and its label."""
    if cflag == 0 and length <= IR_SIZE:
        found.problems.append(
            f"{found.rec}: the record at offset {offset} holds {length} bytes, not an image record "
            f"(its header alone is {IR_SIZE} bytes)"
        )
        return
    if len(payload) >= IR_SIZE:
        flag, label = struct.unpack_from("<If", payload)
        if flag > 0 and len(payload) >= IR_SIZE + 4:
            label = struct.unpack_from("<f", payload, IR_SIZE)[0]
        found.label(label)
        image = payload[IR_SIZE + 4 * flag : IR_SIZE + 4 * flag + 8]
        if len(image) == 8 or (cflag == 0 and len(image) == length - IR_SIZE - 4 * flag):
            found.images += 1
            if not image.startswith(IMAGE_MAGICS):
                found.undecodable += 1
                if found.first_undecodable is None:
                    found.first_undecodable = offset


def _walk(f: BinaryIO, size: int, found: Survey, offsets: list[int]) -> None:
    starts, pos = [], 0
    while pos < size:
        head = _head(f, pos, size)
        if head is None:
            found.problems.append(f"{found.rec}: no record starts at offset {pos}")
            return
        length, cflag, payload = head
        if cflag in (0, 1):  # a whole record, or the first part of one
            starts.append(pos)
            _record(found, pos, length, cflag, payload)
        pos += 8 + ((length + 3) & ~3)
    found.records = len(starts)
    if found.idx:
        _match_index(found, offsets, set(starts))


def _match_index(found: Survey, offsets: list[int], starts: set[int]) -> None:
    stray = [o for o in offsets if o not in starts]
    if stray:
        found.problems.append(
            f"{found.idx}: {len(stray)} offset(s) start no record of {found.rec} (first: "
            f"{stray[0]}); it is not this .rec's index"
        )
    if len(offsets) != len(starts):
        found.problems.append(
            f"{found.idx} lists {len(offsets)} records but {found.rec} holds {len(starts)}: "
            "training would read only what the index lists"
        )


def _sample(f: BinaryIO, size: int, found: Survey, offsets: list[int]) -> None:
    step = max(1, len(offsets) // SAMPLES)
    for i in [*range(0, len(offsets), step), len(offsets) - 1]:
        head = _head(f, offsets[i], size)
        if head is None or head[1] not in (0, 1):
            found.problems.append(
                f"{found.idx}: offset {offsets[i]} (line {i + 1}) starts no record of {found.rec}"
            )
            return
        _record(found, offsets[i], *head)
    last = offsets[-1]
    end = last + 8 + (((_head(f, last, size) or (0, 0, b""))[0] + 3) & ~3)
    after = _head(f, end, size)
    if after is not None and after[1] in (0, 1):  # another record starts where the index stops
        found.problems.append(
            f"{found.idx} ends at offset {last} but {found.rec} goes on to {size}: "
            "training would read only what the index lists"
        )
