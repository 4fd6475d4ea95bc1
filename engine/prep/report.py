"""Skip reports: one tab-separated line per input a stage could not use, with the reason.

Paths are written printable and one-line: bytes that are not UTF-8 become ``\\xNN`` and tabs or
newlines become ``\\t``/``\\n``, so every report line splits into exactly its columns.
"""

from __future__ import annotations

import os
import pathlib


def printable(path: str | bytes | os.PathLike) -> str:
    """A path as readable, single-line text, with undecodable bytes escaped as \\xNN."""
    raw = os.fsencode(path)
    text = raw.decode("utf-8", "backslashreplace")
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def one_field(text: str) -> str:
    """Any text as one TSV field (no tabs, no newlines)."""
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def read_report(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a report as dicts keyed by its header line (empty list if there is no report)."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]
