"""`imgscale launch` for training: MXNet's tools/launch.py done right - detached, attributed, supervised, relaunchable.

``launch(spec)`` asks the job's Engine (registry.engine_for, decided once) where each process runs
and with which environment, records the job (engine.cluster.process.jobs) and starts it supervised
(engine.cluster.process.start). ``open_job(job_id)`` rebuilds the ``Job`` of a recorded job for ``attach``,
``relaunch`` or ``stop``. The cluster layer runs the processes it is handed; only this package and
the engines read or edit a training flag (a relaunch's resume arguments come from the engine).

The command runs in ``--sync-dst-dir`` if given (this directory is copied there first, as
launch.py does), else in the host's ``workdir=``, else in this machine's current directory.
A leading ``python``/``python3`` word is replaced by the host's ``python=`` interpreter.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from engine import options as opt
from engine.cluster.hostpool import HostPool, record_hosts
from engine.cluster.hosts import HOST_CAP, HostSpec
from engine.cluster.process import jobs
from engine.cluster.process.detach import DetachedProcess
from engine.cluster.process.start import (
    free_port,
    load_hosts,
    node_address,
    start_job,
    sync_work_dir,
)
from engine.cluster.process.supervisor import Job, Planned, Planner, SuperviseOptions
from engine.cluster.remote_cmd import with_python
from engine.cluster.slurm import job as slurm_job
from engine.cluster.transport.base import TransportError
from engine.errors import UserError
from engine.events import EventSink
from engine.paths import require_folder_path
from engine.prep.pack_remote import pack_planner
from engine.train.checkpoints import refuse_overwrite
from engine.train.logparse import progress_of

from . import registry, slurm_launch
from .dmlc_env import forwarded_env, identity_env
from .engines import Rendezvous
from .placement import Placement, check_per_host
from .spec import LOCAL_CAP, LaunchSpec, ResumeHook, resume_hook


# ---- planning -------------------------------------------------------------------------------------
def work_dir(spec: LaunchSpec, host: HostSpec) -> str:
    return spec.sync_dst_dir or host.option("workdir") or spec.cwd or os.getcwd()


@dataclass(frozen=True)
class TrainingPlanner:
    """A training job's Planner, plus ``prefetch(host)`` to start finding the master's port early."""

    plan: Planner
    prefetch: Callable[[str], None]

    def __call__(self, attempt: int, host_names: Sequence[str]) -> Awaitable[list[Planned]]:
        return self.plan(attempt, host_names)


def training_planner(
    spec: LaunchSpec, job: str, pool: HostPool, resume: ResumeHook | None = None
) -> TrainingPlanner:
    """The Planner of a training job: the engine's placement and environment, a free port on the
    first host (scheduler or rendezvous), the resume arguments of a relaunch."""

    probes: dict[str, asyncio.Task] = {}

    def prefetch(host: str) -> None:
        """Start finding the master's port on ``host`` now (launch overlaps it with connecting)."""
        if host not in probes:
            probes[host] = asyncio.ensure_future(_port_on(pool, host, pool.spec(host).python))

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
        placement = place_processes(spec, hosts)
        first = master_host(hosts, placement)
        port = spec.root_port or await probe_port(first.name)
        return planned_processes(spec, job, attempt, hosts, placement, port, command)

    return TrainingPlanner(plan, prefetch)


def place_processes(spec: LaunchSpec, hosts: Sequence[HostSpec]) -> list[Placement]:
    """Where each process runs (raises the user's mistake: more processes than slots …)."""
    return spec.training_engine.place(spec.layout, [h.slots for h in hosts])


def master_host(hosts: Sequence[HostSpec], placement: Sequence[Placement]) -> HostSpec:
    """The host of the first process (the scheduler, or rank 0): where the others meet."""
    return hosts[placement[0].host] if placement else hosts[0]


def spec_hosts(spec: LaunchSpec) -> list[HostSpec]:
    return load_hosts(spec.hosts_file, spec.launcher)


def planned_processes(
    spec: LaunchSpec,
    job: str,
    attempt: int,
    hosts: Sequence[HostSpec],
    placement: Sequence[Placement],
    port: int,
    command: Sequence[str],
) -> list[Planned]:
    """Every placed process with the engine's environment, our identity and the user's env."""
    engine = spec.training_engine
    first = master_host(hosts, placement)
    meet = Rendezvous(
        job,
        attempt,
        spec.root_uri or node_address(first),
        port,
        spec.interface,
        spec.heartbeat_interval,
        spec.heartbeat_timeout,
    )
    user_env = {**forwarded_env(spec.env), **spec.env}
    envs = engine.environments(meet, placement, [node_address(h) for h in hosts])
    planned = []
    for proc, engine_env in zip(placement, envs):
        host = hosts[proc.host]
        role_env = spec.env_worker if proc.role == "worker" else spec.env_server
        prefix = jobs.run_prefix(spec.run_root, job, attempt, proc.name)
        env = {**user_env, **role_env, **engine_env, **identity_env(job, attempt, proc, host.name)}
        argv = with_python(command, host.python)
        record = jobs.ProcRecord(host.name, proc.role, proc.rank, prefix)
        planned.append(Planned(record, DetachedProcess(prefix, work_dir(spec, host), argv, env)))
    return planned


async def _port_on(pool: HostPool, host: str, python: str) -> int:
    return await free_port(await pool.get(host), python)


def plan_lines(spec: LaunchSpec) -> list[str]:
    """What --dry-run prints: the processes (MXNet roles, or torch ranks) each host would run."""
    hosts = spec_hosts(spec)
    placement = place_processes(spec, hosts)
    first = master_host(hosts, placement)
    master = spec.root_uri or node_address(first)
    port = str(spec.root_port or f"(a free port on {first.name})")
    engine = spec.training_engine
    return [
        f"engine: {engine.name}",
        *engine.describe(placement, [h.name for h in hosts], master, port),
    ]


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
    spec.training_engine.check_layout(spec.layout, spec.env_server)
    check_numbers(spec)
    if (
        spec.launcher == "local"
        and os.path.exists(spec.run_root)
        and not os.path.isdir(spec.run_root)
    ):
        raise UserError(f"--run-dir {spec.run_root} is a file; give a folder for the job's logs")
    if spec.launcher == "local":
        require_folder_path(os.path.expanduser(spec.run_root), "--run-dir")


def validate(spec: LaunchSpec) -> None:
    """Every check a launch makes before it starts anything; `--dry-run` makes the same ones."""
    check_spec(spec)
    if spec.job:  # a bad or taken name, as the real launch's record would refuse it
        jobs.choose_job_name(spec.job, registry.job_kind(spec.command))
    refuse_overwrite_on_relaunch(spec)
    if spec.launcher == "slurm":
        slurm_launch.dry_run_script(spec.to_dict())  # building the batch script checks every value
        return
    hosts = spec_hosts(spec)
    check_per_host(place_processes(spec, hosts), [h.name for h in hosts], HOST_CAP)


def refuse_overwrite_on_relaunch(spec: LaunchSpec) -> None:
    """A first attempt that neither resumes nor starts anew over a prefix holding checkpoints is
    refused here, before anything starts: refused by the trainer instead, its exit would be a
    fault that --max-restarts relaunches with the resume arguments, continuing the old run."""
    words = spec.command
    if not spec.resume_prefix or not registry.is_imgscale_train(words):
        return
    load_epoch = any(w == "--load-epoch" or w.startswith("--load-epoch=") for w in words)
    refuse_overwrite(
        spec.resume_prefix, "--resume" in words, 0 if load_epoch else None, "--fresh" in words
    )


def check_numbers(spec: LaunchSpec) -> None:
    """Ports, timeouts and counts that could never work are refused before anything starts."""
    opt.check(spec)
    spec.alert_options()  # --notify, --stall-alert, --straggler-ratio (or [alerts]) in bounds
    local = spec.num_workers + (spec.num_workers if spec.num_servers is None else spec.num_servers)
    if (spec.launcher or ("ssh" if spec.hosts_file else "local")) == "local" and local > LOCAL_CAP:
        raise UserError(
            f"-n {spec.num_workers} -s {spec.num_servers}: {local} processes on this machine; "
            f"give at most {LOCAL_CAP} in all ({opt.PROCESS_WHY}), or spread them with -H"
        )


def new_record(spec: LaunchSpec, hosts: Sequence[HostSpec], kind: str = "") -> jobs.JobRecord:
    kind = kind or registry.job_kind(spec.command)
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


async def launch(
    spec: LaunchSpec,
    *,
    sink: EventSink | None = None,
    resume: ResumeHook | None = None,
    pool: HostPool | None = None,
) -> Job | slurm_job.SlurmJob:
    """Start a distributed job detached on its hosts and return it, supervised by this process.

    ``pool``: connections to reuse (the console's one pool); by default the job opens its own."""
    validate(spec)
    # the engine is decided once, here, and kept in the record for every relaunch and re-attach
    spec = LaunchSpec.from_dict(
        {**spec.to_dict(), "cwd": spec.cwd or os.getcwd(), "engine": spec.training_engine.name}
    )
    resume = resume_hook(spec, resume)
    if spec.launcher == "slurm":
        return await slurm_launch.launch(spec.to_dict(), sink=sink, resume=resume)
    hosts = spec_hosts(spec)
    record = jobs.save(new_record(spec, hosts))
    pool = HostPool(hosts) if pool is None else pool.share(hosts)
    if spec.sync_dst_dir:
        try:
            await sync_work_dir(pool, hosts, spec.cwd or os.getcwd(), spec.sync_dst_dir)
        except TransportError as exc:
            raise UserError(f"--sync-dst-dir: {exc}") from None
    planner = training_planner(spec, record.job, pool, resume)
    if not spec.root_port:
        planner.prefetch(hosts[0].name)
    options = spec.supervise_options()
    return await start_job(record, pool, planner, options, sink, spec.alert_options(), progress_of)


def open_job(
    job_id: str | None,
    *,
    sink: EventSink | None = None,
    tail_lines: int | None = 20,
    resume: ResumeHook | None = None,
    pool: HostPool | None = None,
) -> Job | slurm_job.SlurmJob:
    """The recorded job (the newest running one without a name), ready to ``attach()``."""
    record = jobs.resolve(job_id)
    if record.launch_args.get("launcher") == "slurm":
        return slurm_launch.open_job(record, sink=sink, resume=resume, tail_lines=tail_lines)
    pool = HostPool(record_hosts(record)) if pool is None else pool.share(record_hosts(record))
    if record.kind == "pack":
        planner, options = pack_planner(record, pool), SuperviseOptions(tail_lines=tail_lines)
    else:
        spec = LaunchSpec.from_dict(record.launch_args)
        planner = training_planner(spec, record.job, pool, resume_hook(spec, resume))
        options = spec.supervise_options(tail_lines=tail_lines)
        alerts = spec.alert_options()
        return Job(
            record,
            pool,
            planner=planner,
            options=options,
            sink=sink,
            alerts=alerts,
            reader=progress_of,
        )
    return Job(record, pool, planner=planner, options=options, sink=sink)
