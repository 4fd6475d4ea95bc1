"""Pure parser of ``nvidia-smi --query-gpu=… --format=csv,noheader,nounits`` output.

Nothing here raises on odd input: ``[N/A]``, ``[Not Supported]`` and other bracketed values become
None; a GPU that has fallen off the bus ("Unable to determine the device handle for GPU …: GPU is
lost") becomes a sample with ``lost=True``; lines that are neither are ignored.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

from engine.events import GpuSample

QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "power.limit",
)
LOST_WORDS = ("gpu is lost", "fallen off the bus", "unknown error", "unable to determine")
HANDLE_ERROR = re.compile(
    r"unable to determine the device handle for gpu\s*([0-9a-f:.]+)", re.IGNORECASE
)


def query_command(loop_seconds: float | None = 1.0) -> str:
    """The nvidia-smi command line the probes run (one long-lived channel with ``-l``)."""
    line = f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits"
    if not loop_seconds:
        return line
    return f"{line} -l {max(1, round(loop_seconds))}"  # nvidia-smi -l takes whole seconds


def parse_line(line: str, host: str, now: float | None = None) -> GpuSample | None:
    """One CSV row -> GpuSample; a device-handle error line -> a lost GPU (index -1); else None."""
    now = time.time() if now is None else now
    text = line.strip()
    if not text:
        return None
    if HANDLE_ERROR.search(text):
        return GpuSample(host=host, index=-1, lost=True, time=now)
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != len(QUERY_FIELDS) or not fields[0].isdigit():
        return None  # a header, a warning or a truncated row
    return _sample(fields, host, now)


def _sample(fields: list[str], host: str, now: float) -> GpuSample:
    index, name, uuid, util, used, total, temp, power, limit = fields
    return GpuSample(
        host=host,
        index=int(index),
        name=_text(name),
        uuid=_text(uuid),
        util_percent=_number(util),
        mem_used_mib=_number(used),
        mem_total_mib=_number(total),
        temperature_c=_number(temp),
        power_w=_number(power),
        power_limit_w=_number(limit),
        lost=any(_is_lost(f) for f in fields),
        time=now,
    )


def _is_lost(value: str) -> bool:
    lowered = value.lower()
    return value.startswith("[") and any(w in lowered for w in LOST_WORDS)


def _text(value: str) -> str | None:
    return None if not value or value.startswith("[") else value


def _number(value: str) -> float | None:
    """``[N/A]``, ``[Not Supported]``, ``[GPU is lost]``, "" or junk -> None."""
    try:
        return float(value)
    except ValueError:
        return None


def parse_output(text: str, host: str, now: float | None = None) -> list[GpuSample]:
    """One full sample (every GPU once), with lost GPUs given the indices missing from the rows."""
    parsed = [parse_line(line, host, now) for line in text.splitlines()]
    samples = [s for s in parsed if s is not None]
    return assign_lost_indices(samples)


def assign_lost_indices(samples: list[GpuSample]) -> list[GpuSample]:
    """A device-handle error carries no index: give each one the first index no row used."""
    rows = [s for s in samples if s.index >= 0]
    used = {s.index for s in rows}
    free = (i for i in range(len(samples) + max(used, default=0) + 1) if i not in used)
    lost = [replace(s, index=next(free)) for s in samples if s.index < 0]
    return sorted(rows + lost, key=lambda s: s.index)


class SampleGrouper:
    """Groups the rows of ``nvidia-smi -l`` into whole samples (every GPU once).

    A sample is complete when it has as many entries as the previous one had, or when a row's
    index does not increase (a new sample began). ``feed`` returns the completed samples.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self.expected = 0  # GPUs in the last complete sample (0 until one was seen)
        self._current: list[GpuSample] = []
        self._last_index = -1

    def feed(self, line: str, now: float | None = None) -> list[list[GpuSample]]:
        sample = parse_line(line, self.host, now)
        if sample is None:
            return []
        done = []
        if self._starts_new(sample):
            done.append(self.flush())
        self._current.append(sample)
        self._last_index = max(self._last_index, sample.index)
        if self.expected and len(self._current) >= self.expected:
            done.append(self.flush())
        return [d for d in done if d]

    def _starts_new(self, sample: GpuSample) -> bool:
        if sample.index >= 0:
            return sample.index <= self._last_index
        return any(s.index >= 0 for s in self._current)  # error lines come before the rows

    def flush(self) -> list[GpuSample]:
        current, self._current, self._last_index = self._current, [], -1
        if current:
            self.expected = len(current)
        return assign_lost_indices(current)
