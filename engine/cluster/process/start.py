"""Starting a planned job on its hosts: the hosts, their addresses, a free port, the work folder.

Generic over what runs: the caller (engine.train.launch for training, engine.prep.pack_remote for
packing) hands a Planner that says which process runs where with which environment; this module
connects, copies the work folder if asked, and starts the supervised ``Job``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from engine.cluster.hostpool import HostPool
from engine.cluster.hosts import HostSpec, local_host, read_hosts
from engine.cluster.process import jobs
from engine.cluster.process.alerts import AlertOptions, Reader
from engine.cluster.process.supervisor import Job, Planner, SuperviseOptions
from engine.cluster.remote_cmd import join_argv, shell_path
from engine.cluster.transport.base import Transport, TransportError
from engine.errors import UserError
from engine.events import EventSink

FREE_PORT = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"


def load_hosts(hosts_file: str | None, launcher: str | None = "ssh") -> list[HostSpec]:
    """The job's hosts: the hosts file's, or this machine alone (the local launcher)."""
    if launcher == "local" or not hosts_file:
        return [local_host("localhost")]
    return read_hosts(hosts_file)


def node_address(host: HostSpec) -> str:
    """The address other hosts reach ``host`` at (what a scheduler's or rank 0's address carries)."""
    if host.is_local and host.address == "localhost":
        return "127.0.0.1"
    return host.address


async def free_port(transport: Transport, python: str) -> int:
    """A TCP port free on the host right now (its kernel picks it)."""
    result = await transport.run(join_argv([python, "-c", FREE_PORT]), timeout=30)
    try:
        return int(result.stdout.strip())
    except ValueError:
        raise TransportError(
            transport.host, f"cannot run python= {python}: {result.stderr.strip()[-200:]}"
        ) from None


async def sync_work_dir(
    pool: HostPool, hosts: Sequence[HostSpec], source: str, target: str
) -> None:
    """Copy the contents of ``source`` into ``target`` on every host (launch.py's --sync-dst-dir)."""
    entries = sorted(os.listdir(source))
    for host in hosts:  # one host at a time: hosts may share the target filesystem
        transport = await pool.get(host.name)
        folder = await _make_sync_dir(transport, host.name, target)
        for entry in entries:
            await transport.put(os.path.join(source, entry), folder, recurse=True)


async def _make_sync_dir(transport: Transport, host: str, target: str) -> str:
    """Create ``target`` on the host and return its absolute path there.

    The host's shell expands a leading ``~``; SFTP (and a local copy) would take it literally.
    """
    quoted = shell_path(target)
    result = await transport.run(f"mkdir -p -- {quoted} && cd -- {quoted} && pwd", timeout=30)
    if result.exit_status != 0:
        raise UserError(
            f"--sync-dst-dir {target}: cannot create it on {host}: {result.stderr.strip()}"
        )
    return result.stdout.strip()


async def start_job(
    record: jobs.JobRecord,
    pool: HostPool,
    planner: Planner,
    options: SuperviseOptions,
    sink: EventSink | None = None,
    alerts: AlertOptions | None = None,
    reader: Reader | None = None,
) -> Job:
    """Connect to every host at once and start the planned job, supervised by this process."""
    await pool.connect_all()  # a host that failed is reported when starting there
    job = Job(
        record, pool, planner=planner, options=options, sink=sink, alerts=alerts, reader=reader
    )
    try:
        await job.start()
    except TransportError as exc:  # e.g. the master could not be asked for a port
        jobs.save(replace(job.record, state="failed", message=f"{exc.host}: {exc.reason}"))
        await job.close()
        raise UserError(f"cannot launch on {exc.host}: {exc.reason}") from None
    except BaseException:
        await job.close()
        raise
    return job
