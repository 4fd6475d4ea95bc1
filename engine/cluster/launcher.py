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
from .dmlc_env import ClusterEnv, forwarded_env, identity_env, process_env
from .hostpool import HostPool, record_hosts
from .hosts import HostSpec, local_host, read_hosts
from .placement import Placement, describe, place
from .remote_cmd import join_argv, shell_path, with_python
from .supervisor import Job, Planned, Planner, SuperviseOptions
from .torch_env import describe as describe_torch
from .torch_env import engine_of, interface_env, torch_env
from .transport import Transport, TransportError

LOCAL_CAP = opt.PROCESS_CAP  # processes one local launch starts (scheduler aside)
# (command, attempt) -> the command of that attempt, e.g. with --load-epoch N added
ResumeHook = Callable[[tuple[str, ...], int], tuple[str, ...]]


@dataclass(frozen=True)
class LaunchSpec:
    """What `imgscale launch` was asked for (JSON-able: it is kept in the job record)."""

    command: tuple[str, ...]
    num_workers: int = opt.num_workers_option(
        1, "number of workers (torch: processes, one per GPU)"
    )
    num_servers: int | None = opt.num_servers_option("number of servers (default: as -n)")
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
    engine: str | None = option(  # None: torch when the command is the torch engine, else mxnet
        None,
        "torch: every process gets torchrun's variables (MASTER_ADDR, RANK, WORLD_SIZE …) and no "
        "scheduler or servers start (default: torch when the command is `imgscale train "
        "--engine torch`, else mxnet)",
        choices=("mxnet", "torch"),
    )

    @property
    def torch(self) -> bool:
        """A torch.distributed job: torchrun's variables, no scheduler or servers."""
        return engine_of(self.engine, self.command) == "torch"

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
    result = await transport.run(join_argv([python, "-c", FREE_PORT]), timeout=30)
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
    """The Planner of a training job (MXNet roles or torch ranks): placement, a free port on the
    first host (scheduler or rendezvous), per-process env and argv."""

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
        command = spec.command
        if attempt and resume is not None:
            command = tuple(resume(command, attempt))
        if spec.torch:
            layout = torch_layout(spec.num_workers, hosts)
            port = spec.root_port or await probe_port(layout[0][0].name)
            return torch_processes(spec, job, attempt, layout, port, command)
        port = spec.root_port or await probe_port(hosts[0].name)
        return dmlc_processes(spec, job, attempt, hosts, port, command)

    return TrainingPlanner(plan, prefetch)


def dmlc_processes(
    spec: LaunchSpec,
    job: str,
    attempt: int,
    hosts: Sequence[HostSpec],
    port: int,
    command: Sequence[str],
) -> list[Planned]:
    """Scheduler, servers and workers of an MXNet job, each with its DMLC_* and user environment."""
    placement = place_processes(spec, hosts)
    num_servers = sum(1 for p in placement if p.role == "server")
    cluster = ClusterEnv(
        job,
        spec.root_uri or node_address(hosts[0]),
        port,
        spec.num_workers,
        num_servers,
        spec.interface,
        spec.heartbeat_interval,
        spec.heartbeat_timeout,
        attempt,
    )
    user_env = {**forwarded_env(spec.env), **spec.env}
    planned = []
    for proc in placement:
        host = hosts[proc.host]
        role_env = spec.env_worker if proc.role == "worker" else spec.env_server
        env = process_env(cluster, proc, node_address(host), host.name, {**user_env, **role_env})
        prefix = jobs.run_prefix(spec.run_root, job, attempt, proc.name)
        argv = with_python(command, host.python)
        record = jobs.ProcRecord(host.name, proc.role, proc.rank, prefix)
        planned.append(Planned(record, DetachedProcess(prefix, work_dir(spec, host), argv, env)))
    return planned


def place_processes(spec: LaunchSpec, hosts: Sequence[HostSpec]) -> list[Placement]:
    """Where each process runs (raises the user's mistake: more processes than slots …)."""
    if spec.torch:
        return place(spec.num_workers, 0, [h.slots for h in hosts])
    return place(
        spec.num_workers,
        spec.num_servers,
        [h.slots for h in hosts],
        servers_per_host=spec.servers_per_host,
    )


def plan_lines(spec: LaunchSpec) -> list[str]:
    """What --dry-run prints: the processes (MXNet roles, or torch ranks) each host would run."""
    hosts = load_hosts(spec.hosts_file, spec.launcher)
    if spec.torch:
        layout = torch_layout(spec.num_workers, hosts)
        master = spec.root_uri or node_address(layout[0][0])
        port = spec.root_port or f"(a free port on {layout[0][0].name})"
        names, counts = [h.name for h, _ in layout], [c for _, c in layout]
        return ["engine: torch", *describe_torch(names, counts, master, port)]
    return ["engine: mxnet", *describe(place_processes(spec, hosts), [h.name for h in hosts])]


def torch_layout(processes: int, hosts: Sequence[HostSpec]) -> list[tuple[HostSpec, int]]:
    """(host, processes there) for a torch job, hosts in file order, empty hosts left out.

    ``slots=N`` hosts take N processes each (one per GPU); without slots the processes go
    round-robin, as MXNet workers do. Rank 0 runs on the first host listed.
    """
    placement = place(processes, 0, [h.slots for h in hosts])
    counts = [sum(1 for p in placement if p.host == i) for i in range(len(hosts))]
    return [(host, count) for host, count in zip(hosts, counts) if count]


def torch_processes(
    spec: LaunchSpec,
    job: str,
    attempt: int,
    layout: Sequence[tuple[HostSpec, int]],
    port: int,
    command: Sequence[str],
) -> list[Planned]:
    """Every rank of a torch job: torchrun's variables, our identity, the user's environment."""
    master = spec.root_uri or node_address(layout[0][0])
    envs = torch_env(
        [node_address(h) for h, _ in layout], [count for _, count in layout], master, port
    )
    user_env = {
        **forwarded_env(spec.env),
        **spec.env,
        **spec.env_worker,
        **interface_env(spec.interface),
    }
    hosts = [host for host, count in layout for _ in range(count)]
    planned = []
    for rank, (host, env) in enumerate(zip(hosts, envs)):
        proc = Placement("worker", rank, int(env["GROUP_RANK"]))
        ids = identity_env(job, attempt, proc, host.name)
        prefix = jobs.run_prefix(spec.run_root, job, attempt, proc.name)
        record = jobs.ProcRecord(host.name, proc.role, rank, prefix)
        process = DetachedProcess(
            prefix,
            work_dir(spec, host),
            with_python(command, host.python),
            {**user_env, **env, **ids},
        )
        planned.append(Planned(record, process))
    return planned


async def _port_on(pool: HostPool, host: str, python: str) -> int:
    return await free_port(await pool.get(host), python)


def checkpoint_resume(prefix: str, torch: bool = False) -> ResumeHook:
    """Relaunches continue from the newest complete checkpoint: ``prefix-NNNN.params`` (MXNet, by
    --load-epoch N) or, for the torch engine, the newest ``.pt``, epoch or mid-epoch (--resume)."""

    def hook(command: tuple[str, ...], attempt: int) -> tuple[str, ...]:
        if torch:
            return torch_resume(command)
        epoch = newest_checkpoint(prefix)
        if epoch is None:  # none loads yet: --resume takes a batch checkpoint, or starts anew
            given = any(a == "--resume" or a.startswith("--load-epoch") for a in command)
            return command if given else (*command, "--resume")
        return set_option(command, "--load-epoch", str(epoch))

    return hook


def torch_resume(command: Sequence[str]) -> tuple[str, ...]:
    """The torch engine's command with --resume (and no --load-epoch, which would pin an epoch):
    each rank loads the newest complete .pt and continues at its epoch, batch and lr schedule."""
    argv, i = list(command), 0
    while i < len(argv):
        if argv[i] == "--load-epoch":
            del argv[i : i + 2]
        elif argv[i].startswith("--load-epoch="):
            del argv[i]
        else:
            i += 1
    return tuple(argv) if "--resume" in argv else (*argv, "--resume")


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
    check_engine(spec)
    check_numbers(spec)
    if (
        spec.launcher == "local"
        and os.path.exists(spec.run_root)
        and not os.path.isdir(spec.run_root)
    ):
        raise UserError(f"--run-dir {spec.run_root} is a file; give a folder for the job's logs")
    if spec.launcher == "local":
        require_folder_path(os.path.expanduser(spec.run_root), "--run-dir")


def check_engine(spec: LaunchSpec) -> None:
    if spec.engine not in (None, "mxnet", "torch"):
        raise UserError(f"--engine {spec.engine}: use mxnet or torch")
    if not spec.torch:
        return
    if spec.num_servers or spec.servers_per_host:
        flag = "-s" if spec.num_servers else "--servers-per-host"
        raise UserError(
            f"{flag}: a torch job has no parameter servers (DDP all-reduces between the "
            "processes); leave it out, -n counts the processes"
        )
    if spec.env_server:
        raise UserError("--env-server: a torch job has no servers; use --env")


def check_numbers(spec: LaunchSpec) -> None:
    """Ports, timeouts and counts that could never work are refused before anything starts."""
    opt.check(spec)
    local = spec.num_workers + (spec.num_workers if spec.num_servers is None else spec.num_servers)
    if (spec.launcher or ("ssh" if spec.hosts_file else "local")) == "local" and local > LOCAL_CAP:
        raise UserError(
            f"-n {spec.num_workers} -s {spec.num_servers}: {local} processes on this machine; "
            f"give at most {LOCAL_CAP} in all ({opt.PROCESS_WHY}), or spread them with -H"
        )


def job_kind(command: Sequence[str]) -> str:
    """A job's kind, which also starts its id: bench-… and testio-… runs are not training runs."""
    if "--benchmark" in command:
        return "bench"
    return "testio" if "--test-io" in command else "train"


def new_record(spec: LaunchSpec, hosts: Sequence[HostSpec], kind: str = "") -> jobs.JobRecord:
    kind = kind or job_kind(spec.command)
    job = jobs.choose_job_name(spec.job, kind)
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
        resume = checkpoint_resume(spec.resume_prefix, spec.torch)
    if spec.launcher == "slurm":
        kind = job_kind(spec.command)
        return await slurm_job.launch(spec.to_dict(), kind, sink=sink, resume=resume)
    hosts = load_hosts(spec.hosts_file, spec.launcher)
    place_processes(spec, hosts)
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
            resume = checkpoint_resume(spec.resume_prefix, spec.torch)
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
            resume = checkpoint_resume(spec.resume_prefix, spec.torch)
        planner = training_planner(spec, record.job, pool, resume)
        options = spec.supervise_options(tail_lines=tail_lines)
    return Job(record, pool, planner=planner, options=options, sink=sink)
