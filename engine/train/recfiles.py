"""The .rec files a --data-train/--data-val path names, checked for RecordIO magic; both engines read these."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from engine.errors import UserError
from engine.recordio import MAGIC_BYTES, RecordIOError, RecordReader, framing_problem, unpack

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
