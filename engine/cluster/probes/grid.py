"""Per-host telemetry about once a second: GPUs (one long-lived nvidia-smi channel), CPU, memory,
load, disk and network (one cheap shell command reading /proc), and reachability with backoff.

    probes = ProbeSet(pool, on_event, interval=1.0)   # pool: hostpool.HostPool (shared connections)
    await probes.start()      # one task per host; a host's failure never touches the others
    ...                       # on_event gets HostSample, GpuSample, HostState events
    await probes.stop()

A host's next poll is armed only after its previous one finished, so polls never overlap and a
slow host slows down by itself. ``probe_once(pool)`` takes one sample of every host (CLI --once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.cluster.hostpool import HostPool
from engine.cluster.hosts import HostSpec
from engine.cluster.probes import nvsmi
from engine.cluster.remote_cmd import shell_path
from engine.cluster.transport.base import LineStream, Transport, TransportError
from engine.events import Event, Failure, GpuSample, HostSample, HostState

SAMPLE_TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0


def stats_command(data_path: str = "/") -> str:
    """One shell line printing marked sections of /proc (and df of the data path)."""
    return "; ".join(
        [
            "echo @uptime; cat /proc/uptime",
            "echo @stat; grep '^cpu' /proc/stat",
            "echo @mem; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo",
            "echo @load; cat /proc/loadavg",
            "echo @net; cat /proc/net/dev",
            f"echo @df; df -P -k -- {shell_path(data_path)} 2>/dev/null | tail -n 1",
            "echo @gpu; command -v nvidia-smi >/dev/null 2>&1 && echo yes || echo no",
        ]
    )


def stats_loop_command(data_path: str = "/") -> str:
    """A long-lived shell that prints one reading, ended by ``@end``, per line it reads.

    The console asks for the next reading only after the last one arrived: polls never overlap,
    and no channel is opened per sample (that cost the console most of its CPU at 64 hosts).
    """
    return f"while read -r _; do {stats_command(data_path)}; echo @end; done"


@dataclass(frozen=True)
class HostCounters:
    """Raw counters of one reading; rates come from two readings (host_sample)."""

    uptime_s: float | None = None
    cpu_busy: int | None = None  # jiffies, all CPUs
    cpu_total: int | None = None
    cpu_count: int | None = None
    mem_total: int | None = None  # bytes
    mem_available: int | None = None
    load1: float | None = None
    net_rx: int | None = None  # bytes, all interfaces but lo
    net_tx: int | None = None
    disk_total: int | None = None  # bytes
    disk_used: int | None = None
    has_gpu: bool = False


def parse_stats(text: str) -> HostCounters:
    """Parse stats_command output; a missing or garbled section leaves its fields None."""
    sections = _sections(text)
    fields: dict = {"has_gpu": sections.get("gpu", ["no"])[:1] == ["yes"]}
    for name, parser in _PARSERS.items():
        with contextlib.suppress(ValueError, IndexError):
            fields.update(parser(sections.get(name, [])))
    return HostCounters(**fields)


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("@"):
            current = sections.setdefault(line[1:].strip(), [])
        else:
            current.append(line)
    return sections


def _uptime(lines: list[str]) -> dict:
    return {"uptime_s": float(lines[0].split()[0])}


def _cpu(lines: list[str]) -> dict:
    values = [int(v) for v in lines[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    per_cpu = sum(1 for line in lines[1:] if line.startswith("cpu"))
    return {"cpu_busy": total - idle, "cpu_total": total, "cpu_count": per_cpu or None}


def _mem(lines: list[str]) -> dict:
    kib = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines}
    return {"mem_total": kib["MemTotal"], "mem_available": kib["MemAvailable"]}


def _load(lines: list[str]) -> dict:
    return {"load1": float(lines[0].split()[0])}


def _net(lines: list[str]) -> dict:
    rx = tx = 0
    for line in lines[2:]:  # two header lines
        name, _, rest = line.partition(":")
        values = rest.split()
        if name.strip() != "lo" and len(values) >= 9:
            rx += int(values[0])
            tx += int(values[8])
    return {"net_rx": rx, "net_tx": tx}


def _df(lines: list[str]) -> dict:
    values = lines[0].split()
    total, used = int(values[1]) * 1024, int(values[2]) * 1024
    return {"disk_total": total, "disk_used": used}


_PARSERS: dict[str, Callable[[list[str]], dict]] = {
    "uptime": _uptime,
    "stat": _cpu,
    "mem": _mem,
    "load": _load,
    "net": _net,
    "df": _df,
}


def host_sample(
    host: str,
    cur: HostCounters,
    prev: HostCounters | None,
    gpu_count: int | None,
    now: float | None = None,
) -> HostSample:
    """A HostSample from a reading and the one before it (CPU% and rates need both)."""
    mem_used = None
    if cur.mem_total is not None and cur.mem_available is not None:
        mem_used = cur.mem_total - cur.mem_available
    rx, tx = _rates(cur, prev)
    return HostSample(
        host=host,
        cpu_percent=_cpu_percent(cur, prev),
        cpu_count=cur.cpu_count,
        mem_used_bytes=mem_used,
        mem_total_bytes=cur.mem_total,
        load1=cur.load1,
        disk_used_bytes=cur.disk_used,
        disk_total_bytes=cur.disk_total,
        net_rx_bytes_per_s=rx,
        net_tx_bytes_per_s=tx,
        gpu_count=gpu_count,
        time=time.time() if now is None else now,
    )


def _cpu_percent(cur: HostCounters, prev: HostCounters | None) -> float | None:
    if prev is None:
        return None
    total = _delta(cur.cpu_total, prev.cpu_total)
    busy = _delta(cur.cpu_busy, prev.cpu_busy)
    if total is None or busy is None or total <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * busy / total))


def _delta(cur: int | None, prev: int | None) -> int | None:
    """cur - prev, or None when either reading lacks the counter."""
    return None if cur is None or prev is None else cur - prev


def _rates(cur: HostCounters, prev: HostCounters | None) -> tuple[float | None, float | None]:
    if prev is None or cur.uptime_s is None or prev.uptime_s is None:
        return None, None
    seconds = cur.uptime_s - prev.uptime_s
    rx, tx = _delta(cur.net_rx, prev.net_rx), _delta(cur.net_tx, prev.net_tx)
    if seconds <= 0 or rx is None or tx is None:
        return None, None
    # counters can go back when an interface is reset: report 0, never a negative rate
    return max(0.0, rx / seconds), max(0.0, tx / seconds)


def backoff(failures: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, failures - 1))


def data_path(spec: HostSpec) -> str:
    return spec.option("data") or spec.option("workdir") or "/"


class HostProbe:
    """The probe loop of one host: stats poll, the nvidia-smi channel, reachability."""

    def __init__(
        self,
        spec: HostSpec,
        transport: Transport,
        emit: Callable[[Event], None],
        interval: float = 1.0,
        sample_timeout: float = SAMPLE_TIMEOUT_S,
    ) -> None:
        self.spec, self.transport, self.emit = spec, transport, emit
        self.interval, self.sample_timeout = interval, sample_timeout
        self.failures = 0
        self.reachable: bool | None = None
        self._prev: HostCounters | None = None
        self._gpu_task: asyncio.Task | None = None
        self._grouper = nvsmi.SampleGrouper(spec.name)
        self._gpu_failure = ""
        self._command = stats_loop_command(data_path(spec))

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._poll_forever()
                except TransportError as exc:
                    await self._unreachable(exc.reason)
        finally:
            await self._stop_gpus()

    async def _poll_forever(self) -> None:
        await self.transport.connect()
        stats = self.transport.stream(self._command, stdin=True, kill_on_close=False)
        try:
            while True:
                started = time.monotonic()
                await self.sample(stats)
                # re-arm only now: polls never overlap, and a slow host backs off by itself
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            await stats.aclose()

    async def _reading(self, stats: LineStream) -> str:
        await stats.write("\n")
        lines: list[str] = []
        try:
            async with asyncio.timeout(self.sample_timeout):
                async for line in stats:
                    if line.stream != "stdout":
                        continue
                    if line.text == "@end":
                        return "\n".join(lines)
                    lines.append(line.text)
        except TimeoutError:
            raise TransportError(self.spec.name, "timed out") from None
        raise TransportError(self.spec.name, f"the probe shell ended ({stats.exit_status})")

    async def sample(self, stats: LineStream) -> HostSample:
        """Take one stats reading (and start the GPU channel the first time one is seen)."""
        cur = parse_stats(await self._reading(stats))
        self._set_reachable()
        if cur.has_gpu and self._gpu_task is None:
            self._gpu_task = asyncio.create_task(self._watch_gpus())
        gpus = (self._grouper.expected or None) if cur.has_gpu else 0
        event = host_sample(self.spec.name, cur, self._prev, gpus)
        self._prev = cur
        self.emit(event)
        return event

    def _set_reachable(self) -> None:
        self.failures = 0
        if self.reachable is not True:
            self.reachable = True
            self.emit(HostState(self.spec.name, True))

    async def _unreachable(self, reason: str) -> None:
        await self._stop_gpus()
        self.failures += 1
        delay = backoff(self.failures)
        self.reachable = False
        self._prev = None
        self.emit(HostState(self.spec.name, False, reason=reason, retry_in_s=delay))
        await asyncio.sleep(delay)

    async def _watch_gpus(self) -> None:
        """Read ``nvidia-smi -l`` on one channel; restart it (with backoff) if it ends."""
        failures = 0
        while True:
            lines = self.transport.stream(nvsmi.query_command(self.interval), kill_on_close=False)
            other: list[str] = []  # what nvidia-smi said that was not a GPU row
            try:
                async for line in lines:
                    if nvsmi.parse_line(line.text, self.spec.name) is not None:
                        failures = self._feed_gpu_line(line.text, failures)
                    elif line.text.strip():
                        other = [*other[-4:], line.text.strip()]
            except TransportError:
                pass  # the stats poll reports the host; this loop just tries again
            finally:
                await lines.aclose()
            failures += 1
            self._report_gpu_failure(lines.exit_status, other)
            await asyncio.sleep(backoff(failures))

    def _report_gpu_failure(self, status: int | None, said: list[str]) -> None:
        """nvidia-smi ended (driver not loaded, ...): say so once per distinct message."""
        if status in (0, None) and not said:
            return
        message = f"nvidia-smi exited with status {status}"
        if message + str(said) == self._gpu_failure:
            return
        self._gpu_failure = message + str(said)
        self.emit(
            Failure(
                source=f"host {self.spec.name}",
                message=message,
                diagnosis=said[-1] if said else "",
                last_lines=tuple(said),
                advice=("check the NVIDIA driver on the host (run nvidia-smi there)",),
            )
        )

    def _feed_gpu_line(self, text: str, failures: int) -> int:
        for group in self._grouper.feed(text):
            for gpu in group:
                self.emit(gpu)
            failures = 0
        return failures

    async def _stop_gpus(self) -> None:
        task, self._gpu_task = self._gpu_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self._grouper = nvsmi.SampleGrouper(self.spec.name)


class ProbeSet:
    """Probe every host of a pool until stopped; events go to ``on_event`` (never raises)."""

    def __init__(
        self,
        pool: HostPool | Sequence[HostSpec],
        on_event: Callable[[Event], None],
        interval: float = 1.0,
        sample_timeout: float = SAMPLE_TIMEOUT_S,
    ) -> None:
        self._own_pool = not isinstance(pool, HostPool)
        self.pool = pool if isinstance(pool, HostPool) else HostPool(pool)
        self.on_event = on_event
        self.interval = interval
        self.probes = [
            HostProbe(h, self.pool[h.name], self._emit, interval, sample_timeout)
            for h in self.pool.hosts
        ]
        self._tasks: list[asyncio.Task] = []

    def _emit(self, event: Event) -> None:
        if not self._tasks:  # stopping (or stopped): nothing more reaches the consumer
            return
        try:
            self.on_event(event)
        except Exception:  # a broken consumer must not stop the probes of every host
            logging.getLogger(__name__).exception("probe event consumer failed")

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(p.run(), name=f"probe {p.spec.name}") for p in self.probes
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._own_pool:
            await self.pool.close()

    async def __aenter__(self) -> ProbeSet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def probe_once(pool: HostPool, gpu_timeout: float = 5.0) -> list[Event]:
    """One reading of every host, in hosts-file order: HostState/HostSample, then its GPUs."""
    results = await asyncio.gather(*(_probe_host_once(pool, h, gpu_timeout) for h in pool.hosts))
    return [event for events in results for event in events]


async def _probe_host_once(pool: HostPool, spec: HostSpec, gpu_timeout: float) -> list[Event]:
    transport = pool[spec.name]
    try:
        await transport.connect()
        result = await transport.run(stats_command(data_path(spec)), timeout=SAMPLE_TIMEOUT_S)
    except TransportError as exc:
        return [HostState(spec.name, False, reason=exc.reason)]
    cur = parse_stats(result.stdout)
    gpus: list[GpuSample] = []
    if cur.has_gpu:
        gpus = await _gpus_once(transport, spec.name, gpu_timeout)
    return [
        HostState(spec.name, True),
        host_sample(spec.name, cur, None, len(gpus) if cur.has_gpu else 0),
        *gpus,
    ]


async def _gpus_once(transport: Transport, host: str, timeout: float) -> list[GpuSample]:
    try:
        result = await transport.run(nvsmi.query_command(None), timeout=timeout)
    except TransportError:
        return []
    return nvsmi.parse_output(result.stdout + "\n" + result.stderr, host)
