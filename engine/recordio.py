"""MXNet RecordIO in pure Python: dmlc framing, the image-record header and the text .idx, byte-compatible.

A record on disk is one or more parts, each ``magic, lrec, data, zero padding to 4 bytes`` where
``lrec = cflag << 29 | length``. dmlc-core's writer cuts a payload wherever the magic word occurs at a
4-byte-aligned offset inside it (the magic itself is dropped and restored by the reader), flagging the
parts 1 (first), 2 (middle) and 3 (last); a payload in one part has flag 0. The writer here produces the
same bytes as ``mxnet.recordio.MXRecordIO`` for the same payloads, and the reader reads either's files.
"""

from __future__ import annotations

import numbers
import os
import struct
from collections import namedtuple
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, BinaryIO, Self, cast

if TYPE_CHECKING:  # numpy is imported lazily: `import engine` stays light
    from numpy import ndarray

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
MAX_RECORD_BYTES = (1 << 29) - 1  # the length field has 29 bits
_LREC = struct.Struct("<II")
_LENGTH_MASK = MAX_RECORD_BYTES  # lrec = cflag << 29 | length

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])
_IR = struct.Struct("<IfQQ")  # same layout as mxnet's native 'IfQQ' on little-endian hosts
IR_SIZE = _IR.size


class RecordIOError(ValueError):
    """The file is not valid RecordIO (bad magic, torn record, bad index line)."""


def _part(cflag: int, data: bytes | memoryview) -> list[bytes | memoryview]:
    length = len(data)
    pieces: list[bytes | memoryview] = [_LREC.pack(MAGIC, (cflag << 29) | length)]
    if length:
        pieces.append(data)
    if length % 4:
        pieces.append(b"\0" * (4 - length % 4))
    return pieces


def frame(payload: bytes) -> bytes:
    """The exact bytes dmlc's RecordIOWriter writes for one record."""
    if len(payload) > MAX_RECORD_BYTES:
        raise RecordIOError(
            f"record of {len(payload)} bytes is over RecordIO's limit of 2^29 bytes"
        )
    view = memoryview(payload)
    pieces: list[bytes | memoryview] = []
    start = 0
    for cut in _aligned_magic(payload):
        pieces += _part(1 if start == 0 else 2, view[start:cut])
        start = cut + 4
    pieces += _part(3 if start else 0, view[start:])
    return b"".join(pieces)


def _aligned_magic(payload: bytes) -> list[int]:
    """Offsets where the magic word sits at a 4-byte-aligned offset: where dmlc cuts a record.

    Compared word by word, as dmlc does: 5 times faster than searching the bytes (measured on
    188 MB of JPEGs: 29 ms against 140 ms, a few percent of a pack's CPU).
    """
    import numpy as np  # here, not at the top: `import engine` stays light; a packer has it loaded

    words = np.frombuffer(payload, dtype="<u4", count=len(payload) // 4)
    return [4 * int(i) for i in (words == MAGIC).nonzero()[0]]


def pack(header: IRHeader | tuple, payload: bytes) -> bytes:
    """Prefix ``payload`` with an image-record header, as ``mxnet.recordio.pack`` does.

    A numeric label is stored in the header (flag forced to 0); a sequence of labels is stored as
    float32 values before the payload, with flag = their count and the header label 0.
    """
    header = IRHeader(*header)
    if isinstance(header.label, numbers.Number):
        header = header._replace(flag=0)
    else:
        import numpy as np

        labels = np.asarray(header.label, dtype=np.float32)
        header = header._replace(flag=labels.size, label=0)
        payload = labels.tobytes() + payload
    return _IR.pack(*header) + payload


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """Split a record into its header and payload; multi-labels come back as a float32 array."""
    if len(record) < IR_SIZE:
        raise RecordIOError(
            f"record of {len(record)} bytes is shorter than the {IR_SIZE}-byte header"
        )
    header = IRHeader(*_IR.unpack_from(record))
    body = record[IR_SIZE:]
    if header.flag > 0:
        import numpy as np

        header = header._replace(label=np.frombuffer(body, np.float32, header.flag))
        body = body[header.flag * 4 :]
    return header, body


def pack_img(
    header: IRHeader | tuple, img: ndarray, quality: int = 95, img_fmt: str = ".jpg"
) -> bytes:
    """Encode an image with OpenCV and pack it, as ``mxnet.recordio.pack_img`` does."""
    import cv2

    params: list[int] = []  # OpenCV treats an empty list like no parameters
    if img_fmt.upper() in (".JPG", ".JPEG"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif img_fmt.upper() == ".PNG":
        params = [cv2.IMWRITE_PNG_COMPRESSION, quality]
    ok, buf = cv2.imencode(img_fmt, img, params)
    if not ok:
        raise RecordIOError(f"OpenCV could not encode the image as {img_fmt}")
    return pack(header, buf.tobytes())


def unpack_img(record: bytes, iscolor: int = -1) -> tuple[IRHeader, ndarray | None]:
    """Unpack a record and decode its image with OpenCV."""
    import cv2
    import numpy as np

    header, body = unpack(record)
    return header, cv2.imdecode(np.frombuffer(body, dtype=np.uint8), iscolor)


def index_line(key: int | str, offset: int) -> str:
    """One line of a .idx file, as MXIndexedRecordIO writes it."""
    return f"{key}\t{offset}\n"


def read_index(path: str | os.PathLike, key_type: Callable[[str], Hashable] = int) -> list[tuple]:
    """(key, offset) pairs of a .idx file, in file order."""
    pairs = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            fields = line.strip().split("\t")
            if fields == [""]:
                continue
            try:
                pairs.append((key_type(fields[0]), int(fields[1])))
            except (ValueError, IndexError):
                raise RecordIOError(
                    f"{path}:{number}: not a 'key<TAB>offset' index line: {line!r}"
                ) from None
    return pairs


class _RecordFile:
    """One open .rec file: what the reader and the writer share (path, tell, close, with)."""

    def __init__(self, path: str | os.PathLike, mode: str) -> None:
        self.path = os.fspath(path)
        # MODE is always a binary one ("rb", "wb", "ab"), which typeshed cannot see from a str
        self.file = cast(BinaryIO, open(self.path, mode))  # noqa: SIM115 - closed by close()

    def tell(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class RecordWriter(_RecordFile):
    """Sequential writer: ``write(payload)`` appends one record and returns its offset."""

    def __init__(self, path: str | os.PathLike, mode: str = "wb") -> None:
        super().__init__(path, mode)

    def write(self, payload: bytes) -> int:
        offset = self.file.tell()
        self.file.write(frame(payload))
        return offset


class IndexedRecordWriter(RecordWriter):
    """Writer that also records ``key<TAB>offset`` for each record in a .idx file."""

    def __init__(self, idx_path: str | os.PathLike, rec_path: str | os.PathLike) -> None:
        super().__init__(rec_path)
        self.idx_file = open(idx_path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write_idx(self, key: int | str, payload: bytes) -> int:
        offset = self.write(payload)
        self.idx_file.write(index_line(key, offset))
        return offset

    def close(self) -> None:
        super().close()
        self.idx_file.close()


class RecordReader(_RecordFile):
    """Sequential reader; iterating yields each record's payload (with split magics restored)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, "rb")

    def seek(self, offset: int) -> None:
        self.file.seek(offset)

    def read(self) -> bytes | None:
        """The next record, or None at the end of the file."""
        parts: list[bytes] = []
        while True:
            head = self.file.read(8)
            if not head and not parts:
                return None
            if len(head) < 8:
                raise RecordIOError(
                    f"{self.path}: torn record header at offset {self.tell() - len(head)}"
                )
            magic, lrec = _LREC.unpack(head)
            if magic != MAGIC:
                raise RecordIOError(f"{self.path}: bad magic at offset {self.tell() - 8}")
            cflag, length = lrec >> 29, lrec & _LENGTH_MASK
            padded = (length + 3) & ~3
            data = self.file.read(padded)
            if len(data) < padded:
                raise RecordIOError(
                    f"{self.path}: record at offset {self.tell() - 8 - len(data)} is cut short"
                )
            parts.append(data[:length])
            if cflag in (0, 3):
                return MAGIC_BYTES.join(parts)

    def __iter__(self) -> Iterator[bytes]:
        while (record := self.read()) is not None:
            yield record


class IndexedRecordReader(RecordReader):
    """Random access by key through a .idx file, like MXIndexedRecordIO in 'r' mode.

    Without ``rec_path`` the records are read from the .rec beside the .idx (same name)."""

    def __init__(
        self,
        idx_path: str | os.PathLike,
        rec_path: str | os.PathLike | None = None,
        key_type: Callable[[str], Hashable] = int,
    ) -> None:
        pairs = read_index(idx_path, key_type)
        if rec_path is None:  # the usual layout: NAME.idx beside NAME.rec
            rec_path = os.path.splitext(os.fspath(idx_path))[0] + ".rec"
        super().__init__(rec_path)
        self.keys = [key for key, _ in pairs]
        self.idx = dict(pairs)

    def read_idx(self, key: Hashable) -> bytes:
        self.seek(self.idx[key])
        record = self.read()
        if record is None:
            raise RecordIOError(f"{self.path}: index points past the end of the file for key {key}")
        return record


# ---- framing checks: find a cut or damaged .rec before a training run dies on it ------------------
TAIL_WINDOW = 16 << 20  # the last record is looked for in the file's last 16 MiB
SYNC_WINDOW = 1 << 20


def framing_problem(path: str | os.PathLike, samples: int = 4) -> str | None:
    """None when the first record, records at ``samples`` evenly spaced places and the last record
    are whole; else one line naming the file and the offset. Every 4-byte-aligned magic in a .rec
    starts a record (writers split payloads at aligned magics), so a reader can start anywhere."""
    size = os.path.getsize(path)
    with RecordReader(path) as reader:
        try:
            for start in _sample_starts(reader.file, size, samples):
                reader.seek(start)
                reader.read()
                after = reader.tell()
                if reader.file.read(4) not in (b"", MAGIC_BYTES):  # a wrong length field
                    return f"{reader.path}: the record at offset {start} is not followed by another (offset {after})"
        except RecordIOError as exc:
            return str(exc)
        return _tail_problem(reader, size)


def _sample_starts(f: BinaryIO, size: int, samples: int) -> list[int]:
    starts = [0]
    for k in range(1, samples):
        found = _next_magic(f, size * k // samples & ~3)
        if found is not None and found not in starts:
            starts.append(found)
    return starts


def _next_magic(f: BinaryIO, at: int) -> int | None:
    f.seek(at)
    chunk = f.read(SYNC_WINDOW)
    pos = chunk.find(MAGIC_BYTES)
    while pos >= 0 and (at + pos) % 4:
        pos = chunk.find(MAGIC_BYTES, pos + 1)
    return None if pos < 0 else at + pos


def _tail_problem(reader: RecordReader, size: int) -> str | None:
    """The last aligned magic must start a record (part) that ends exactly at the end of the file."""
    start = max(0, size - TAIL_WINDOW) & ~3
    reader.file.seek(start)
    window = reader.file.read()
    pos = window.rfind(MAGIC_BYTES)
    while pos >= 0 and (start + pos) % 4:
        pos = window.rfind(MAGIC_BYTES, 0, pos)
    if pos < 0:
        return None if start else f"{reader.path}: no record found"
    if size - (start + pos) < 8:
        return f"{reader.path}: torn record header at offset {start + pos}"
    _magic, lrec = _LREC.unpack_from(window, pos)
    end = start + pos + 8 + (((lrec & _LENGTH_MASK) + 3) & ~3)
    if end > size:
        return f"{reader.path}: record at offset {start + pos} is cut short (the file is truncated)"
    if end < size:
        return f"{reader.path}: {size - end} stray bytes after the last record, at offset {end}"
    return None


def first_damage(paths: list[str]) -> str | None:
    """Read every record of ``paths`` (slow: only once something failed) and name the first damage."""
    for path in paths:
        try:
            with RecordReader(path) as reader:
                for _record in reader:
                    pass
        except RecordIOError as exc:
            return str(exc)
    return None
