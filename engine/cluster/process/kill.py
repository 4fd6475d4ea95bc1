"""`imgscale kill`: end exactly the processes of one job, or of every job imgscale launched, on every host.

What MXNet's kill-mxnet.py did with ``ps | grep NAME | kill -9`` (which also kills other people's
jobs), done from the job records: each recorded process group is signalled only after the host
proves the recorded pid is still ours (``IMGSCALE_JOB=<job>`` in /proc/PID/environ and still in the
recorded group), TERM first and KILL after the grace period (detach.KILL).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import replace

from engine.cluster.hostpool import HostPool, record_hosts
from engine.cluster.hosts import read_hosts
from engine.cluster.process import jobs
from engine.cluster.process.detach import KillReport, kill_command, parse_kill, sweep_command
from engine.cluster.slurm.job import cancel_record
from engine.cluster.transport.base import TransportError
from engine.events import EventSink, Failure


async def kill_job(
    job: str | jobs.JobRecord,
    *,
    grace_s: int = 5,
    emit: EventSink | None = None,
    pool: HostPool | None = None,
) -> dict[str, KillReport | None]:
    """End one job's processes on every host; per host its report (None: host unreachable).

    ``pool``: connections to share (the console's); else it opens its own."""
    record = job if isinstance(job, jobs.JobRecord) else jobs.load(job)
    if record.scheduler_id:  # a SLURM job: SLURM ends every step of it
        return await _cancel_slurm(record, emit)
    jobs.stop_marker(record.job).parent.mkdir(parents=True, exist_ok=True)
    jobs.stop_marker(record.job).touch()  # a running supervisor must not relaunch it
    hosts = record_hosts(record)
    pool = HostPool(hosts) if pool is None else pool.share(hosts)
    try:
        reports = await _kill_hosts(record, pool, grace_s, emit)
    finally:
        await pool.close()
    _mark(record, reports)
    return reports


async def _kill_hosts(
    record: jobs.JobRecord, pool: HostPool, grace_s: int, emit: EventSink | None
) -> dict:
    by_host: dict[str, list[str]] = collections.defaultdict(list)
    for proc in record.processes + record.past_processes:
        by_host[proc.host].append(proc.prefix)
    hosts = list(by_host)
    results = await asyncio.gather(
        *(_kill_on(pool, record.job, h, by_host[h], grace_s, emit) for h in hosts)
    )
    return dict(zip(hosts, results))


async def kill_processes(
    record: jobs.JobRecord, pool: HostPool, grace_s: int, emit: EventSink | None = None
) -> bool:
    """End the job's recorded process groups (every attempt) on every host; False if some may be left."""
    reports = await _kill_hosts(record, pool, grace_s, emit)
    return all(_clean(r) for r in reports.values())


async def _kill_on(
    pool: HostPool,
    job: str,
    host: str,
    prefixes: list[str],
    grace_s: int,
    emit: EventSink | None,
) -> KillReport | None:
    """The kill script's report from one host; None if the host could not be reached."""
    try:
        transport = await pool.get(host)
        result = await transport.run(kill_command(job, prefixes, grace_s), timeout=grace_s + 30)
    except TransportError as exc:
        _report(
            emit,
            Failure(
                f"host {host}",
                f"could not stop job {job} there: {exc.reason}",
                job=job,
                advice=(f"run `imgscale kill {job}` again when the host is back",),
            ),
        )
        return None
    report = parse_kill(result.stdout)
    if not report.complete:
        _report(
            emit,
            Failure(f"host {host}", "stopping did not finish: " + result.stderr[-300:], job=job),
        )
    return report


def _clean(report: KillReport | None) -> bool:
    return report is not None and report.complete and not report.stuck


def _report(emit: EventSink | None, failure: Failure) -> None:
    if emit is not None:
        emit(failure)


async def _cancel_slurm(
    record: jobs.JobRecord, emit: EventSink | None
) -> dict[str, KillReport | None]:
    """scancel the job; one report with the SLURM job id as its group when it was still there."""
    cancelled = await asyncio.to_thread(cancel_record, record)
    group = int(record.scheduler_id) if record.scheduler_id.isdigit() else 0
    report = KillReport(terminated=(group,) if cancelled else (), complete=True)
    return {f"slurm job {record.scheduler_id}": report}


def _mark(record: jobs.JobRecord, reports: dict[str, KillReport | None]) -> None:
    clean = all(_clean(r) for r in reports.values())
    current = jobs.load(record.job) if jobs.exists(record.job) else record
    state = "stopped" if current.active else current.state
    message = "killed by imgscale kill" if current.active else current.message
    jobs.save(replace(current, state=state, message=message, clean=clean or current.clean))


def ended(reports: dict[str, KillReport | None]) -> int:
    """How many process groups were signalled."""
    return sum(len(r.terminated) for r in reports.values() if r is not None)


async def kill_everywhere(
    *, grace_s: int = 5, emit: EventSink | None = None, pool: HostPool | None = None
) -> int:
    """End every job imgscale launched from here that still has processes; returns the groups ended.

    Every record is checked, including those marked clean: a launcher killed before it could stop
    its job (SIGKILL, a lost machine) can leave a record that says less than the hosts know, and
    each group is signalled only if its processes still carry the job's id.
    """
    count = 0
    for record in jobs.all_jobs():
        count += ended(await kill_job(record, grace_s=grace_s, emit=emit, pool=pool))
    return count


async def sweep_hosts(
    hosts_file: str,
    run_root: str = jobs.DEFAULT_RUN_ROOT,
    *,
    grace_s: int = 5,
    emit: EventSink | None = None,
) -> dict[str, KillReport | None]:
    """End every imgscale process recorded under ``run_root`` on every host of ``hosts_file``.

    For jobs whose records on this machine are gone (launched elsewhere, state directory lost):
    each host reads its own pid records, and a group is signalled only if its process carries
    the job id of the directory the record is in (see detach.SWEEP and detach.KILL).
    """
    pool = HostPool(read_hosts(hosts_file))
    try:
        names = list(pool.specs)
        results = await asyncio.gather(
            *(_sweep_on(pool, h, run_root, grace_s, emit) for h in names)
        )
    finally:
        await pool.close()
    return dict(zip(names, results, strict=True))


async def _sweep_on(
    pool: HostPool, host: str, run_root: str, grace_s: int, emit: EventSink | None
) -> KillReport | None:
    try:
        transport = await pool.get(host)
        result = await transport.run(sweep_command(run_root, grace_s), timeout=grace_s + 60)
    except TransportError as exc:
        _report(emit, Failure(f"host {host}", f"could not sweep it: {exc.reason}"))
        return None
    return parse_kill(result.stdout)
