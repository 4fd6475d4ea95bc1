"""Pre-flight across hosts: reach every host, compare versions, data and GPUs, time an all-reduce.

``imgscale check -H HOSTS`` (and the console before a launch) runs ``engine.train.launch.hostreport`` on
every host over its SSH connection, compares the answers with the first host's (the master's), and
for an engine that all-reduces (torch) launches a two-second all-reduce over every slot (engine.train.launch.allreduce_probe).
Each finding names the host and what to do. The comparisons are pure functions of the answers.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from engine.cluster.hostpool import HostPool
from engine.cluster.hosts import HostSpec, read_hosts
from engine.cluster.remote_cmd import join_argv
from engine.cluster.transport.base import TransportError
from engine.errors import UserError
from engine.events import LogLine
from engine.train.check import ERROR, INFO, WARNING, Finding

from . import registry
from .allreduce_probe import TAG
from .engines import Engine
from .launch import LaunchSpec, launch
from .torch_engine import TorchEngine

REPORT_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class HostAnswer:
    """One host's report (engine.train.launch.hostreport's JSON), or why there is none."""

    host: str
    slots: int | None
    facts: dict | None = None
    error: str | None = None


@dataclass(frozen=True)
class AcrossHosts:
    """What the cross-host pre-flight is asked: the hosts file ("": none, nothing to check), the
    job's engine, its data paths, whether it wants GPUs, the scheduler port to check (None: none)
    and its processes (None: a slot each)."""

    hosts: str
    engine: str
    data_train: str | None
    data_val: str | None
    gpus: Sequence[int]
    port: int | None
    num_workers: int | None


# ---- comparing the answers ------------------------------------------------------------------------
def compare(answers: Sequence[HostAnswer], engine: Engine, gpus_wanted: bool) -> list[Finding]:
    """Findings over every host's answer; the first reached host is the reference."""
    out = [_unreached(a) for a in answers if a.facts is None]
    reached = [a for a in answers if a.facts is not None]
    if not reached:
        return out
    out += [Finding(INFO, f"{len(reached)} of {len(answers)} host(s) reached")]
    out += versions(reached, engine)
    out += data(reached)
    if engine.times_allreduce and gpus_wanted:  # its host report lists the GPUs it sees
        out += gpus(reached)
    return out


def _unreached(answer: HostAnswer) -> Finding:
    return Finding(
        ERROR,
        f"{answer.host}: not reached or no report ({answer.error})",
        "check it with `imgscale hosts check -H FILE`; imgscale must be installed for its python=",
    )


def versions(reached: Sequence[HostAnswer], engine: Engine) -> list[Finding]:
    """imgscale, Python and the engine's package: the same on every host as on the first."""
    first = reached[0]
    out = []
    for key in ("imgscale", "python", engine.package):
        want = first.facts.get(key) if first.facts else None
        for answer in reached:
            have = answer.facts.get(key) if answer.facts else None
            if have is None and key == engine.package:
                out.append(_engine_missing(answer.host, engine, want))
            elif have != want and answer is not first:
                out.append(
                    Finding(
                        ERROR,
                        f"{answer.host}: {key} {have} but {first.host} has {want}",
                        f"install {key} {want} on {answer.host} (every host runs the same code)",
                    )
                )
    return out


def _engine_missing(host: str, engine: Engine, want: str | None) -> Finding:
    return Finding(ERROR, f"{host}: {engine.name} is not installed", engine.install_advice(want))


def data(reached: Sequence[HostAnswer]) -> list[Finding]:
    """The same .rec files, sizes and .idx checksums on every host as on the first."""
    first = reached[0]
    ref: dict = (first.facts or {}).get("data", {})
    out = []
    for path, entries in ref.items():
        if not entries:
            out.append(
                Finding(
                    ERROR,
                    f"{first.host}: {path} holds no .rec files",
                    "pack and place the data there first, or fix the path",
                )
            )
            continue
        out += [_no_index(first.host, path, e[0]) for e in entries if e[3] is None]
        for answer in reached[1:]:
            out += _data_on(answer, path, entries, first.host)
    if ref and not any(f.level == ERROR for f in out):
        files = sum(len(v) for v in ref.values())
        out.append(Finding(INFO, f"data: the same {files} .rec/.idx file(s) on every host"))
    return out


def _no_index(host: str, path: str, name: str) -> Finding:
    return Finding(
        WARNING,
        f"{host}: no .idx found for {path}/{name}",
        "keep each chunk's .idx beside it or in the lists folder (`imgscale place` does)",
    )


def _data_on(answer: HostAnswer, path: str, ref_entries: list, ref_host: str) -> list[Finding]:
    have = {e[0]: e for e in (answer.facts or {}).get("data", {}).get(path, [])}
    fix = (
        f"copy the data from {ref_host} to the same path on {answer.host} "
        "(or put it on a file system every host mounts)"
    )
    if not have:
        return [Finding(ERROR, f"{answer.host}: {path} holds no .rec files", fix)]
    out = []
    for name, size, idx_size, digest in ref_entries:
        mine = have.get(name)
        if mine is None:
            out.append(Finding(ERROR, f"{answer.host}: {path}/{name} is missing", fix))
        elif mine[1] != size:
            what = f"{mine[1]} bytes, {ref_host} {size}"
            out.append(Finding(ERROR, f"{answer.host}: {path}/{name} differs ({what})", fix))
        elif (mine[2], mine[3]) != (idx_size, digest):
            what = "its .idx differs (size or SHA-256)"
            out.append(
                Finding(ERROR, f"{answer.host}: {path}/{name}: {what} from {ref_host}'s", fix)
            )
    return out


def gpus(reached: Sequence[HostAnswer]) -> list[Finding]:
    """Each host's GPUs, as torch sees them, against the processes its ``slots=`` asks for."""
    out = []
    for answer in reached:
        seen = (answer.facts or {}).get("gpus")
        want = answer.slots or 1
        if seen is not None and seen < want:
            out.append(
                Finding(
                    ERROR,
                    f"{answer.host}: slots={want} (one process per GPU) but torch sees {seen} GPU(s)",
                    f"set slots={seen} for {answer.host}"
                    if seen
                    else f"install a CUDA build of torch on {answer.host}, or leave --gpus empty (CPU)",
                )
            )
    return out


def port_finding(host: str, port: int, free: bool | None) -> list[Finding]:
    if free is None or free:
        return []
    return [
        Finding(
            ERROR,
            f"{host}: port {port} (MASTER_PORT / DMLC_PS_ROOT_PORT) is in use there",
            "pick another --port/--root-port, or leave it out for a free one",
        )
    ]


# ---- the all-reduce probe -------------------------------------------------------------------------
def bandwidth_findings(results: Sequence[dict], world: int) -> list[Finding]:
    """One line per host (its slowest rank), and a warning for a host well below the others."""
    per_host: dict[str, float] = {}
    for r in results:
        per_host[r["host"]] = min(per_host.get(r["host"], r["MBps"]), r["MBps"])
    if not per_host:
        return []
    typical = statistics.median(per_host.values())
    out = []
    for host, speed in per_host.items():
        out.append(Finding(INFO, f"{host}: all-reduce over {world} processes: {speed:.0f} MB/s"))
        if speed < 0.5 * typical:
            out.append(
                Finding(
                    WARNING,
                    f"{host}: all-reduce {speed:.0f} MB/s, under half the others' {typical:.0f}",
                    f"check {host}'s link and which interface it uses (launch --interface NIC)",
                )
            )
    return out


def probe_results(lines: Sequence[LogLine]) -> list[dict]:
    found = []
    for line in lines:
        if line.text.startswith(TAG + " "):
            try:
                found.append(json.loads(line.text[len(TAG) + 1 :]))
            except ValueError:
                continue
    return found


async def allreduce(
    hosts_file: str, processes: int, gpus_wanted: bool, pool: HostPool | None = None
) -> list[Finding]:
    """Launch the two-second all-reduce as a torch job over ``processes`` slots; its findings."""
    command = ["python", "-m", "engine.train.launch.allreduce_probe", "--seconds", "2"]
    spec = LaunchSpec(
        command=tuple(command + (["--gpu"] if gpus_wanted else [])),
        num_workers=processes,
        hosts_file=hosts_file,
        engine=TorchEngine.name,  # the probe is a torch.distributed program
        stall_timeout_s=PROBE_TIMEOUT_S,
        grace_s=2,
    )
    lines: list[LogLine] = []
    job = await launch(
        spec, sink=lambda e: lines.append(e) if isinstance(e, LogLine) else None, pool=pool
    )
    try:
        final = await asyncio.wait_for(job.wait(), PROBE_TIMEOUT_S)
    except TimeoutError:
        final = await job.stop("the all-reduce probe took too long")
    finally:
        await job.close()
    results = probe_results(lines)
    if final.state != "done" or len(results) < processes:
        last = "; ".join(x.text for x in lines[-3:])[-300:]
        return [
            Finding(
                ERROR,
                f"the all-reduce probe over {processes} processes failed ({final.message}): {last}",
                "check that every host reaches the first host's address and port (firewall, "
                "launch --interface NIC)",
            )
        ]
    return bandwidth_findings(results, processes)


# ---- gathering --------------------------------------------------------------------------------------
async def host_answers(
    hosts: Sequence[HostSpec],
    paths: Sequence[str],
    engine: Engine,
    port: int | None,
    shared: HostPool | None = None,
) -> list[HostAnswer]:
    """Every host's report, gathered at once over one connection per host (``shared``'s if given)."""
    pool = HostPool(hosts) if shared is None else shared.share(hosts)
    try:
        return list(await asyncio.gather(*(_answer(pool, h, paths, engine, port) for h in hosts)))
    finally:
        await pool.close()


async def _answer(
    pool: HostPool, host: HostSpec, paths: Sequence[str], engine: Engine, port: int | None
) -> HostAnswer:
    words = [host.python, "-m", "engine.train.launch.hostreport", *engine.host_report_args]
    words += [f"--port={port}"] if port else []
    command = join_argv([*words, *paths])
    try:
        transport = await pool.get(host.name)
        result = await transport.run(command, timeout=REPORT_TIMEOUT_S)
    except TransportError as exc:
        return HostAnswer(host.name, host.slots, error=exc.reason)
    if result.exit_status != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1][-200:]
        return HostAnswer(host.name, host.slots, error=f"python= {host.python}: {reason}")
    try:
        return HostAnswer(host.name, host.slots, facts=json.loads(result.stdout))
    except ValueError:
        return HostAnswer(host.name, host.slots, error="its report is not JSON")


def data_paths(args: AcrossHosts) -> list[str]:
    return [p for p in (args.data_train, args.data_val) if p]


async def across_hosts(args: AcrossHosts, pool: HostPool | None = None) -> list[Finding]:
    """The cross-host findings for `imgscale check` with -H HOSTS (or the console's launch plan)."""
    hosts = read_hosts(args.hosts)
    engine = registry.engine_named(args.engine)
    port = args.port
    answers = await host_answers(hosts, data_paths(args), engine, port, pool)
    gpus_wanted = bool(args.gpus)
    out = compare(answers, engine, gpus_wanted)
    first = answers[0]
    if port and first.facts is not None:
        out += port_finding(first.host, port, first.facts.get("port_free"))
    if engine.times_allreduce and all(a.facts is not None for a in answers):
        processes = args.num_workers or sum(h.slots or 1 for h in hosts)
        out += await allreduce(args.hosts, processes, gpus_wanted, pool)
    return out


def check_across_hosts(args: AcrossHosts, pool: HostPool | None = None) -> list[Finding]:
    """``across_hosts`` from synchronous code; with a ``pool`` (the console's, from a worker
    thread) it runs on the pool's event loop, over the pool's connections."""
    if not args.hosts:
        return []
    try:
        if pool is not None:
            return pool.run_from_thread(across_hosts(args, pool))
        return asyncio.run(across_hosts(args))
    except UserError as exc:
        return [Finding(ERROR, str(exc))]
