"""Benchmark: probing many SSH hosts - full-refresh time and the console's CPU at 1 Hz.

A separate server process (so its CPU is not counted as the console's) runs one asyncssh server
listening on --hosts ports on 127.0.0.9, with a generated host key and known_hosts, answering
the probes' commands: the /proc stats command with a reading of this machine, and the
``nvidia-smi -l 1`` channel with a recorded 8-GPU sample every second. The console side is the
real engine code (HostPool + SshTransport + ProbeSet / probe_once) over real SSH connections.

Prints: connect + first refresh time, warm full-refresh time (median of --refreshes; goal < 1 s),
and the console's CPU (user+sys from getrusage) at 1 Hz over --seconds (goal < 10 % of a core).
Not a test: the figures depend on the machine and its load.

    python benchmarks/bench_probe.py [--hosts 64] [--seconds 20] [--refreshes 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ADDRESS = "127.0.0.9"  # loopback only
GPU_ROWS = "".join(
    f"{i}, Tesla V100-SXM2-32GB, GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd, {90 + i % 7}, "
    f"{30000 + i}, 32510, {65 + i}, {250.5 + i}, 300.00\n"
    for i in range(8)
)


# ---- the server process ---------------------------------------------------------------------
def serve(workdir: Path, count: int) -> None:
    import asyncssh

    from engine.cluster.probes.grid import stats_command

    reading = subprocess.run(
        ["/bin/sh", "-c", stats_command("/")], capture_output=True, text=True
    ).stdout
    reading = reading.replace("@gpu\nno", "@gpu\nyes")  # every host has (recorded) GPUs
    host_key = asyncssh.read_private_key(str(workdir / "host_key"))

    async def handle(process) -> None:
        command = process.command or ""
        process.stderr.write("imgscale-pgid:4242\n")  # what the real shell line prints first
        if "while read -r _; do" in command:
            async for _request in process.stdin:  # the probes' stats loop: one reading per line
                process.stdout.write(reading + "@end\n")
        elif "@uptime" in command:
            process.stdout.write(reading)
        elif "nvidia-smi --query-gpu" in command and " -l " in command:
            while not process.channel.is_closing():
                process.stdout.write(GPU_ROWS)
                await asyncio.sleep(1.0)  # nvidia-smi -l 1's own period
        elif "nvidia-smi --query-gpu" in command:
            process.stdout.write(GPU_ROWS)
        process.exit(0)

    async def main() -> None:
        ports = []
        for _ in range(count):
            server = await asyncssh.listen(
                ADDRESS,
                0,
                server_host_keys=[host_key],
                authorized_client_keys=str(workdir / "id_client.pub"),
                process_factory=handle,
                keepalive_interval=0,
            )
            ports.append(server.sockets[0].getsockname()[1])
        (workdir / "ports.tmp").write_text("\n".join(map(str, ports)))
        (workdir / "ports.tmp").rename(workdir / "ports")
        await asyncio.Event().wait()

    asyncio.run(main())


# ---- the console side -----------------------------------------------------------------------
def make_keys(workdir: Path) -> None:
    for name in ("host_key", "id_client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / name)], check=True
        )


def start_server(workdir: Path, count: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(workdir), "--hosts", str(count)], env=env
    )
    deadline = time.monotonic() + 60
    while not (workdir / "ports").exists():  # poll for the ready file, with a deadline
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit("the benchmark's SSH server did not start")
        time.sleep(0.05)
    return server


def write_hosts(workdir: Path) -> Path:
    ports = [int(p) for p in (workdir / "ports").read_text().split()]
    key = (workdir / "host_key.pub").read_text().split()
    (workdir / "known_hosts").write_text(
        "".join(f"[{ADDRESS}]:{p} {key[0]} {key[1]}\n" for p in ports)
    )
    lines = [f"* identity={workdir / 'id_client'} known_hosts={workdir / 'known_hosts'}"]
    lines += [f"root@{ADDRESS}:{p} name=h{i:02d}" for i, p in enumerate(ports)]
    (workdir / "hosts").write_text("\n".join(lines) + "\n")
    return workdir / "hosts"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(hosts_file: Path, refreshes: int, seconds: float) -> dict:
    from engine.cluster.hostpool import HostPool
    from engine.cluster.hosts import read_hosts
    from engine.cluster.probes.grid import ProbeSet, probe_once
    from engine.events import GpuSample, HostSample, HostState

    pool = HostPool(read_hosts(hosts_file))
    figures: dict = {"hosts": len(pool)}
    started = time.perf_counter()
    first = await probe_once(pool)
    figures["cold_s"] = time.perf_counter() - started
    print(f"first refresh done in {figures['cold_s']:.2f} s", file=sys.stderr, flush=True)
    unreachable = [e for e in first if isinstance(e, HostState) and not e.reachable]
    if unreachable:
        raise SystemExit(f"unreachable: {unreachable[:3]}")
    times = []
    for _ in range(refreshes):
        started = time.perf_counter()
        events = await probe_once(pool)
        times.append(time.perf_counter() - started)
    figures["warm_s"] = statistics.median(times)
    figures["gpus_per_refresh"] = sum(isinstance(e, GpuSample) for e in events)

    counts = {"host": 0, "gpu": 0, "down": 0}

    def on_event(event) -> None:
        if isinstance(event, HostSample):
            counts["host"] += 1
        elif isinstance(event, GpuSample):
            counts["gpu"] += 1
        elif isinstance(event, HostState) and not event.reachable:
            counts["down"] += 1
            print(f"  {event.host} unreachable: {event.reason}", file=sys.stderr)

    async with ProbeSet(pool, on_event, interval=1.0):
        await asyncio.sleep(3)  # let every host's GPU channel open before measuring
        counts.update(host=0, gpu=0, down=0)
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        await asyncio.sleep(seconds)  # the measuring window itself
        cpu1, wall1 = cpu_seconds(), time.perf_counter()
    figures["cpu_percent"] = 100 * (cpu1 - cpu0) / (wall1 - wall0)
    figures["host_samples_per_s"] = counts["host"] / (wall1 - wall0)
    figures["gpu_samples_per_s"] = counts["gpu"] / (wall1 - wall0)
    figures["unreachable_events"] = counts["down"]
    await pool.close()
    return figures


def report(f: dict) -> None:
    print(f"hosts probed:                       {f['hosts']} (SSH, one connection each)")
    print(f"connect + first full refresh:       {f['cold_s']:.2f} s")
    print(
        f"warm full refresh (median):         {f['warm_s']:.3f} s   (goal < 1 s)   "
        f"{'OK' if f['warm_s'] < 1 else 'MISSED'}"
    )
    print(f"GPU samples per refresh:            {f['gpus_per_refresh']}")
    print(
        f"console CPU at 1 Hz:                {f['cpu_percent']:.1f} % of one core   "
        f"(goal < 10 %)   {'OK' if f['cpu_percent'] < 10 else 'MISSED'}"
    )
    print(
        f"host samples/s, GPU samples/s:      {f['host_samples_per_s']:.1f}, "
        f"{f['gpu_samples_per_s']:.1f}"
    )
    print(f"unreachable reports while measuring: {f['unreachable_events']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--refreshes", type=int, default=5)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.hosts)
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        workdir = Path(tmp)
        make_keys(workdir)
        server = start_server(workdir, args.hosts)
        try:
            report(asyncio.run(measure(write_hosts(workdir), args.refreshes, args.seconds)))
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
