"""`imgscale hosts check` and `imgscale probe`: is every host reachable, and what is it doing."""

from __future__ import annotations

import argparse
import asyncio

from engine.cluster.hostpool import HostPool
from engine.cluster.hosts import HostSpec, read_hosts
from engine.cluster.probes.export import GRID_FIELDS, grid_rows, to_csv, to_json
from engine.cluster.probes.grid import ProbeSet, probe_once
from engine.cluster.process import jobs
from engine.cluster.remote_cmd import join_argv
from engine.cluster.slurm.job import node_specs
from engine.cluster.transport.base import TransportError
from engine.errors import UserError
from engine.events import Event, GpuSample, HostSample, HostState


def register(sub: argparse._SubParsersAction) -> None:
    hosts = sub.add_parser("hosts", help="check a hosts file: parse it and reach every host")
    hosts_sub = hosts.add_subparsers(dest="hosts_command", metavar="ACTION")
    check = hosts_sub.add_parser("check", help="parse the hosts file, connect, report each host")
    check.add_argument("--hosts", "-H", required=True, metavar="FILE", help="hosts file")
    check.set_defaults(func=cmd_hosts_check)
    hosts.set_defaults(func=lambda args: (hosts.print_help(), 2)[1])

    probe = sub.add_parser("probe", help="print GPU/CPU/memory/disk/network of every host")
    probe.add_argument("--hosts", "-H", metavar="FILE", help="hosts file (default: this machine)")
    probe.add_argument(
        "--job",
        help="a SLURM job launched from here: probe its allocated nodes (through srun --overlap)",
    )
    probe.add_argument("--once", action="store_true", help="one reading of every host, then exit")
    out = probe.add_mutually_exclusive_group()
    out.add_argument(
        "--json", action="store_true", help="one reading of every host as a JSON list (the grid)"
    )
    out.add_argument("--csv", action="store_true", help="one reading of every host as CSV")
    probe.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    probe.add_argument(
        "--count",
        type=int,
        default=0,
        help="stop after this many readings per host (default: until Ctrl-C)",
    )
    probe.set_defaults(func=cmd_probe)


def _pool(path: str | None) -> HostPool:
    return HostPool(read_hosts(path)) if path else HostPool.local()


def _job_pool(job: str) -> HostPool:
    return HostPool(node_specs(jobs.load(jobs.check_job_name(job))))


# ---- hosts check --------------------------------------------------------------------------
def cmd_hosts_check(args: argparse.Namespace) -> int:
    pool = _pool(args.hosts)
    lines = asyncio.run(_check_all(pool))
    for line in lines:
        print(line)
    bad = sum(1 for line in lines if " FAILED: " in line)
    print(f"{len(lines) - bad} of {len(lines)} hosts reachable")
    return 1 if bad else 0


async def _check_all(pool: HostPool) -> list[str]:
    try:
        return list(await asyncio.gather(*(_check(pool, h) for h in pool.hosts)))
    finally:
        await pool.close()


async def _check(pool: HostPool, spec: HostSpec) -> str:
    where = _where(spec)
    command = join_argv([spec.python, "-c", "import platform; print(platform.python_version())"])
    try:
        await pool[spec.name].connect()
        result = await pool[spec.name].run(command, timeout=20)
    except TransportError as exc:
        return f"{spec.name:12} {where}  FAILED: {exc.reason}"
    if result.exit_status != 0:
        return f"{spec.name:12} {where}  FAILED: no python at {spec.python} (set python= for it)"
    return f"{spec.name:12} {where}  ok  python {result.stdout.strip()}{_extras(spec)}"


def _where(spec: HostSpec) -> str:
    if spec.is_local:
        return "(this machine)"
    user = f"{spec.user}@" if spec.user else ""
    address = f"[{spec.address}]" if ":" in spec.address else spec.address
    port = f":{spec.port}" if spec.port else ""
    return f"{user}{address}{port}"


def _extras(spec: HostSpec) -> str:
    parts = []
    if spec.slots is not None:
        parts.append(f"slots {spec.slots}")
    if spec.gpus is not None:
        parts.append("gpus " + (",".join(map(str, spec.gpus)) or "none"))
    if spec.flag("insecure_host_key"):
        parts.append("HOST KEY NOT VERIFIED")
    return ("  (" + ", ".join(parts) + ")") if parts else ""


# ---- probe --------------------------------------------------------------------------------
def cmd_probe(args: argparse.Namespace) -> int:
    if not args.interval > 0:  # 0 would spin the probes as fast as SSH answers
        raise UserError(f"--interval {args.interval}: give seconds above 0, e.g. 2")
    if args.count < 0:
        raise UserError(f"--count {args.count}: give 1 or more readings (0 or none: until Ctrl-C)")
    if args.job and args.hosts:
        raise UserError("give -H FILE or --job JOB, not both")
    pool = _job_pool(args.job) if args.job else _pool(args.hosts)
    if args.once or args.json or args.csv:
        return asyncio.run(_probe_once(pool, "json" if args.json else "csv" if args.csv else ""))
    try:
        asyncio.run(_probe_loop(pool, args.interval, args.count))
    except KeyboardInterrupt:
        pass
    return 0


async def _probe_once(pool: HostPool, form: str = "") -> int:
    try:
        events = await probe_once(pool)
    finally:
        await pool.close()
    if form:
        rows = grid_rows(events)
        print(to_json(rows) if form == "json" else to_csv(rows, GRID_FIELDS), end="\n")
    for event in events if not form else ():
        text = describe(event)
        if text:
            print(text)
    return 1 if any(isinstance(e, HostState) and not e.reachable for e in events) else 0


async def _probe_loop(pool: HostPool, interval: float, count: int) -> None:
    seen: dict[str, int] = {}
    done = asyncio.Event()

    def on_event(event: Event) -> None:
        text = describe(event)
        if text:
            print(text, flush=True)
        if not count or not isinstance(event, (HostSample, HostState)):
            return
        if isinstance(event, HostState) and event.reachable:
            return  # a reading or a failure counts as the host's answer, not "reachable" alone
        seen[event.host] = seen.get(event.host, 0) + 1
        if len(seen) == len(pool) and min(seen.values()) >= count:
            done.set()

    probes = ProbeSet(pool, on_event, interval=interval)
    await probes.start()
    try:
        await done.wait()
    finally:
        await probes.stop()
        await pool.close()


def describe(event: Event) -> str:
    """One line per host reading, GPU or reachability change."""
    if isinstance(event, HostState):
        if event.reachable:
            return ""
        retry = f" (retry in {event.retry_in_s:g} s)" if event.retry_in_s else ""
        return f"{event.host:12} UNREACHABLE: {event.reason}{retry}"
    if isinstance(event, HostSample):
        return _host_line(event)
    if isinstance(event, GpuSample):
        return _gpu_line(event)
    return ""


def _host_line(s: HostSample) -> str:
    gpus = {0: "no GPU", None: "GPUs: first reading pending"}.get(s.gpu_count, f"{s.gpu_count} GPU")
    return (
        f"{s.host:12} cpu {_pct(s.cpu_percent)} of {_na(s.cpu_count)}  "
        f"mem {_gib(s.mem_used_bytes)}/{_gib(s.mem_total_bytes)} GiB  load {_na(s.load1)}  "
        f"disk {_gib(s.disk_used_bytes)}/{_gib(s.disk_total_bytes)} GiB  "
        f"net rx {_rate(s.net_rx_bytes_per_s)} tx {_rate(s.net_tx_bytes_per_s)}  {gpus}"
    )


def _gpu_line(g: GpuSample) -> str:
    if g.lost:
        return f"{g.host:12}   gpu{g.index} LOST (fallen off the bus; the host needs a reboot)"
    return (
        f"{g.host:12}   gpu{g.index} {g.name or 'N/A'}  util {_pct(g.util_percent)}  "
        f"mem {_na(g.mem_used_mib)}/{_na(g.mem_total_mib)} MiB  {_na(g.temperature_c)} C  "
        f"{_na(g.power_w)}/{_na(g.power_limit_w)} W"
    )


def _na(value: float | None) -> str:
    if value is None:
        return "N/A"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pct(value: float | None) -> str:
    return "N/A" if value is None else f"{value:.0f}%"


def _gib(value: int | None) -> str:
    return "N/A" if value is None else f"{value / 2**30:.1f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "N/A"
    for unit in ("B/s", "kB/s", "MB/s"):
        if value < 1000:
            return f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.1f} GB/s"
