"""`imgscale launch`: MXNet's tools/launch.py done right - detached, attributed, supervised, relaunchable.

``launch(spec)`` places a scheduler, servers and workers on the hosts (placement.py), gives each its
DMLC_* and user environment (dmlc_env.py), starts each detached with a log and pid record
(detach.py), records the job (jobs.py) and returns a supervised ``Job`` (supervisor.py).
``open_job(job_id)`` rebuilds the ``Job`` of a recorded job for ``attach``, ``relaunch`` or ``stop``.

The command runs in ``--sync-dst-dir`` if given (this directory is copied there first, as
launch.py does), else in the host's ``workdir=``, else in this machine's current directory.
A leading ``python``/``python3`` word is replaced by the host's ``python=`` interpreter.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from engine import options as opt
from engine.errors import UserError
from engine.events import EventSink
from engine.options import option
from engine.paths import require_folder_path
from engine.train.checkpoints import newest_checkpoint

from . import jobs, slurm_job
from .detach import DetachedProcess
from .dpack import pack_planner
from .dmlc_env import ClusterEnv, forwarded_env, process_env
from .hostpool import HostPool, record_hosts
from .hosts import HostSpec, local_host, read_hosts
from .placement import place
from .remote_cmd import with_python
from .supervisor import Job, Planned, Planner, SuperviseOptions
from .transport import Transport, TransportError

LOCAL_CAP = max(16, opt.PROCESS_CAP)  # processes one local launch starts (scheduler aside)
# (command, attempt) -> the command of that attempt, e.g. with --load-epoch N added
ResumeHook = Callable[[tuple[str, ...], int], tuple[str, ...]]


@dataclass(frozen=True)
class LaunchSpec:
    """What `imgscale launch` was asked for (JSON-able: it is kept in the job record)."""

    command: tuple[str, ...]
    num_workers: int = option(
        1, "number of workers", flags=("-n", "--num-workers"), low=1, high=opt.FANOUT_CAP
    )
    num_servers: int | None = option(  # None: as many as workers (launch.py)
        None,
        "number of servers (default: as -n)",
        flags=("-s", "--num-servers"),
        parse=int,
        low=0,
        high=opt.FANOUT_CAP,
    )
    hosts_file: str | None = option(  # None: this machine only
        None, "hosts file (see hosts.example)", flags=("-H", "--hostfile", "--hosts")
    )
    launcher: str | None = option(  # None: ssh with a hosts file, else local
        None, "default: ssh with -H, else local", choices=("ssh", "local", "slurm")
    )
    servers_per_host: int | None = option(
        None, "exactly this many servers on every host", parse=int, low=0, high=opt.FANOUT_CAP
    )
    env: Mapping[str, str] = field(default_factory=dict)  # every role
    env_server: Mapping[str, str] = field(default_factory=dict)  # servers (and the scheduler)
    env_worker: Mapping[str, str] = field(default_factory=dict)  # workers only
    sync_dst_dir: str | None = option(
        None, "copy this directory to DIR on every host and run there"
    )
    cwd: str | None = None  # default: the launching process's current directory
    interface: str | None = option(None, "DMLC_INTERFACE: the network interface ps-lite uses")
    root_uri: str | None = None  # default: the first host's address
    root_port: int | None = option(  # default: a free port on the first host
        None, "scheduler port (default: a free one)", parse=int, low=1, high=65535
    )
    heartbeat_interval: int | None = option(None, "PS_HEARTBEAT_INTERVAL seconds", parse=int, low=1)
    heartbeat_timeout: int | None = option(None, "PS_HEARTBEAT_TIMEOUT seconds", parse=int, low=1)
    run_root: str = option(
        jobs.DEFAULT_RUN_ROOT,
        "logs and pid records on each host (default ~/.imgscale/runs)",
        flags=("--run-dir",),
    )
    job: str | None = option(None, "job name (default: train-DATE-TIME-XXXX)")
    resume_prefix: str | None = option(  # checkpoint prefix: relaunches add --load-epoch N
        None, "checkpoint prefix: relaunches add --load-epoch N"
    )
    max_restarts: int = option(0, "relaunch after a fault up to K times", low=0, high=1000)
    stall_timeout_s: float | None = option(
        None,
        "no new log line for SEC seconds is a fault (0: off)",
        flags=("--stall-timeout",),
        parse=float,
        low=0,
    )
    exclude_after: int = option(
        0, "leave out a host after it caused this many faults (0: never)", low=0
    )
    grace_s: int = option(
        5, "seconds between TERM and KILL when stopping", flags=("--grace",), low=0
    )
    lost_timeout_s: float = 10.0  # a host unreachable this long is lost (the job is stopped)
    # --launcher slurm: nodes, gpus_per_node, partition, time, account, sbatch_args
    slurm: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["command"] = list(self.command)
        for key in ("env", "env_server", "env_worker", "slurm"):
            data[key] = dict(getattr(self, key))
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> LaunchSpec:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["command"] = tuple(values.get("command", ()))
        return cls(**values)

    def supervise_options(self, **overrides) -> SuperviseOptions:
        options = SuperviseOptions(
            max_restarts=self.max_restarts,
            stall_timeout_s=self.stall_timeout_s,
            exclude_after=self.exclude_after,
            grace_s=self.grace_s,
            lost_timeout_s=self.lost_timeout_s,
        )
        return SuperviseOptions(**{**asdict(options), **overrides})


# ---- hosts --------------------------------------------------------------------------------------
def load_hosts(hosts_file: str | None, launcher: str | None = "ssh") -> list[HostSpec]:
    """The job's hosts: the hosts file's, or this machine alone (the local launcher)."""
    if launcher == "local" or not hosts_file:
        return [local_host("localhost")]
    return read_hosts(hosts_file)


def node_address(host: HostSpec) -> str:
    """The address other hosts reach ``host`` at (what DMLC_NODE_HOST / DMLC_PS_ROOT_URI carry)."""
    if host.is_local and host.address == "localhost":
        return "127.0.0.1"
    return host.address


def work_dir(spec: LaunchSpec, host: HostSpec) -> str:
    return spec.sync_dst_dir or host.option("workdir") or spec.cwd or os.getcwd()


FREE_PORT = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"


async def free_port(transport: Transport, python: str) -> int:
    """A TCP port free on the host right now (its kernel picks it), for DMLC_PS_ROOT_PORT."""
    result = await transport.run(f"{shlex.quote(python)} -c {shlex.quote(FREE_PORT)}", timeout=30)
    try:
        return int(result.stdout.strip())
    except ValueError:
        raise TransportError(
            transport.host, f"cannot run python= {python}: {result.stderr.strip()[-200:]}"
        ) from None


# ---- planning -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingPlanner:
    """A DMLC job's Planner, plus ``prefetch(host)`` to start finding the scheduler's port early."""

    plan: Planner
    prefetch: Callable[[str], None]

    def __call__(self, attempt: int, host_names: Sequence[str]) -> Awaitable[list[Planned]]:
        return self.plan(attempt, host_names)


def training_planner(
    spec: LaunchSpec, job: str, pool: HostPool, resume: ResumeHook | None = None
) -> TrainingPlanner:
    """The Planner of a DMLC job: placement, a free scheduler port, per-process env and argv."""

    probes: dict[str, asyncio.Task] = {}

    def prefetch(host: str) -> None:
        """Start finding the scheduler's port on ``host`` now (launch overlaps it with connecting)."""
        if host not in probes:
            spec_ = pool.spec(host)
            probes[host] = asyncio.ensure_future(_port_on(pool, host, spec_.python))

    async def probe_port(host: str) -> int:
        prefetch(host)
        try:
            return await probes[host]
        finally:
            probes.pop(host, None)  # a relaunch looks again

    async def plan(attempt: int, host_names: Sequence[str]) -> list[Planned]:
        hosts = [pool.spec(name) for name in host_names]
        placement = place(
            spec.num_workers,
            spec.num_servers,
            [h.slots for h in hosts],
            servers_per_host=spec.servers_per_host,
        )
        master = hosts[0]
        port = spec.root_port or await probe_port(master.name)
        num_servers = sum(1 for p in placement if p.role == "server")
        cluster = ClusterEnv(
            job,
            spec.root_uri or node_address(master),
            port,
            spec.num_workers,
            num_servers,
            spec.interface,
            spec.heartbeat_interval,
            spec.heartbeat_timeout,
            attempt,
        )
        command = spec.command
        if attempt and resume is not None:
            command = tuple(resume(command, attempt))
        user_env = {**forwarded_env(spec.env), **spec.env}
        planned = []
        for proc in placement:
            host = hosts[proc.host]
            role_env = spec.env_worker if proc.role == "worker" else spec.env_server
            env = process_env(
                cluster, proc, node_address(host), host.name, {**user_env, **role_env}
            )
            prefix = jobs.run_prefix(spec.run_root, job, attempt, proc.name)
            argv = with_python(command, host.python)
            record = jobs.ProcRecord(host.name, proc.role, proc.rank, prefix)
            planned.append(
                Planned(record, DetachedProcess(prefix, work_dir(spec, host), argv, env))
            )
        return planned

    return TrainingPlanner(plan, prefetch)


async def _port_on(pool: HostPool, host: str, python: str) -> int:
    return await free_port(await pool.get(host), python)


def checkpoint_resume(prefix: str) -> ResumeHook:
    """Relaunches continue from the newest complete checkpoint ``prefix-NNNN.params``."""

    def hook(command: tuple[str, ...], attempt: int) -> tuple[str, ...]:
        epoch = newest_checkpoint(prefix)
        return command if epoch is None else set_option(command, "--load-epoch", str(epoch))

    return hook


def set_option(command: Sequence[str], flag: str, value: str) -> tuple[str, ...]:
    """``command`` with ``flag value`` set: replaced where present, else appended."""
    argv = list(command)
    for i, word in enumerate(argv):
        if word == flag and i + 1 < len(argv):
            argv[i + 1] = value
            return tuple(argv)
        if word.startswith(flag + "="):
            argv[i] = f"{flag}={value}"
            return tuple(argv)
    return (*argv, flag, value)


# ---- launching ------------------------------------------------------------------------------------
def check_spec(spec: LaunchSpec) -> None:
    if not spec.command:
        raise UserError(
            "give the command to run after --, e.g. -- python train.py --kv-store dist_sync"
        )
    if spec.launcher not in (None, "ssh", "local", "slurm"):
        raise UserError(f"--launcher {spec.launcher}: use ssh, local or slurm")
    if spec.slurm and spec.launcher != "slurm":
        raise UserError("--nodes, --partition, --time … are for --launcher slurm")
    if spec.launcher == "ssh" and not spec.hosts_file:
        raise UserError("-H HOSTS is needed with --launcher ssh (or use --launcher local)")
    check_numbers(spec)
    if (
        spec.launcher == "local"
        and os.path.exists(spec.run_root)
        and not os.path.isdir(spec.run_root)
    ):
        raise UserError(f"--run-dir {spec.run_root} is a file; give a folder for the job's logs")
    if spec.launcher == "local":
        require_folder_path(os.path.expanduser(spec.run_root), "--run-dir")


def check_numbers(spec: LaunchSpec) -> None:
    """Ports, timeouts and counts that could never work are refused before anything starts."""
    opt.check(spec)
    local = spec.num_workers + (spec.num_workers if spec.num_servers is None else spec.num_servers)
    if (spec.launcher or ("ssh" if spec.hosts_file else "local")) == "local" and local > LOCAL_CAP:
        raise UserError(
            f"-n {spec.num_workers} -s {spec.num_servers}: {local} processes on this machine; "
            f"give at most {LOCAL_CAP} in all (4 x {opt.CORES} cores), or spread them with -H"
        )


def job_kind(command: Sequence[str]) -> str:
    """A job's kind, which also starts its id: bench-… and testio-… runs are not training runs."""
    if "--benchmark" in command:
        return "bench"
    return "testio" if "--test-io" in command else "train"


def new_record(spec: LaunchSpec, hosts: Sequence[HostSpec], kind: str = "") -> jobs.JobRecord:
    kind = kind or job_kind(spec.command)
    if spec.job:
        job = jobs.check_job_name(spec.job)
        if jobs.exists(job):
            raise UserError(f"--job {job}: a job of that name exists; pick another name")
    else:
        job = jobs.new_job_id(kind)
    hosts_file = (
        os.path.abspath(spec.hosts_file) if spec.hosts_file and spec.launcher != "local" else None
    )
    return jobs.JobRecord(
        job,
        kind,
        tuple(spec.command),
        hosts_file,
        tuple(h.name for h in hosts),
        launch_args=spec.to_dict(),
    )


async def sync_work_dir(
    pool: HostPool, hosts: Sequence[HostSpec], source: str, target: str
) -> None:
    """Copy the contents of ``source`` into ``target`` on every host (launch.py's --sync-dst-dir)."""
    entries = sorted(os.listdir(source))
    for host in hosts:  # one host at a time: hosts may share the target filesystem
        transport = await pool.get(host.name)
        result = await transport.run(f"mkdir -p -- {shlex.quote(target)}", timeout=30)
        if result.exit_status != 0:
            raise UserError(
                f"--sync-dst-dir {target}: cannot create it on {host.name}: {result.stderr.strip()}"
            )
        for entry in entries:
            await transport.put(os.path.join(source, entry), target, recurse=True)


async def launch(
    spec: LaunchSpec,
    *,
    sink: EventSink | None = None,
    resume: ResumeHook | None = None,
) -> Job | slurm_job.SlurmJob:
    """Start a distributed job detached on its hosts and return it, supervised by this process."""
    check_spec(spec)
    if spec.cwd is None:
        spec = LaunchSpec.from_dict({**spec.to_dict(), "cwd": os.getcwd()})
    if resume is None and spec.resume_prefix:
        resume = checkpoint_resume(spec.resume_prefix)
    if spec.launcher == "slurm":
        return await slurm_job.launch(spec.to_dict(), "train", sink=sink, resume=resume)
    hosts = load_hosts(spec.hosts_file, spec.launcher)
    place(
        spec.num_workers,
        spec.num_servers,
        [h.slots for h in hosts],
        servers_per_host=spec.servers_per_host,
    )
    record = jobs.save(new_record(spec, hosts))
    pool = HostPool(hosts)
    if spec.sync_dst_dir:
        try:
            await sync_work_dir(pool, hosts, spec.cwd or os.getcwd(), spec.sync_dst_dir)
        except TransportError as exc:
            raise UserError(f"--sync-dst-dir: {exc}") from None
    planner = training_planner(spec, record.job, pool, resume)
    if not spec.root_port:
        planner.prefetch(hosts[0].name)
    await pool.connect_all()  # all at once; a host that failed is reported when starting there
    job = Job(record, pool, planner=planner, options=spec.supervise_options(), sink=sink)
    try:
        await job.start()
    except TransportError as exc:  # the master could not be asked for a port
        jobs.save(replace(job.record, state="failed", message=f"{exc.host}: {exc.reason}"))
        await job.close()
        raise UserError(f"cannot launch on {exc.host}: {exc.reason}") from None
    except BaseException:
        await job.close()
        raise
    return job


def open_job(
    job_id: str | None,
    *,
    sink: EventSink | None = None,
    tail_lines: int | None = 20,
    resume: ResumeHook | None = None,
) -> Job | slurm_job.SlurmJob:
    """The recorded job (the newest running one without a name), ready to ``attach()``."""
    record = jobs.resolve(job_id)
    if record.launch_args.get("launcher") == "slurm":
        spec = LaunchSpec.from_dict(record.launch_args)
        if resume is None and spec.resume_prefix:
            resume = checkpoint_resume(spec.resume_prefix)
        return slurm_job.SlurmJob(
            record, slurm_job.request_of(record), sink=sink, resume=resume, tail_lines=tail_lines
        )
    hosts = record_hosts(record)
    pool = HostPool(hosts)
    if record.kind == "pack":
        planner, options = pack_planner(record, pool), SuperviseOptions(tail_lines=tail_lines)
    else:
        spec = LaunchSpec.from_dict(record.launch_args)
        if resume is None and spec.resume_prefix:
            resume = checkpoint_resume(spec.resume_prefix)
        planner = training_planner(spec, record.job, pool, resume)
        options = spec.supervise_options(tail_lines=tail_lines)
    return Job(record, pool, planner=planner, options=options, sink=sink)
