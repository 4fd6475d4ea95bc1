"""LaunchSpec: what `imgscale launch` is asked for, declared once (flags, the job record, checks)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from engine import options as opt
from engine.cluster.process import jobs
from engine.cluster.process.alerts import AlertOptions
from engine.cluster.process.supervisor import SuperviseOptions
from engine.options import option

from . import registry
from .engines import Engine, Layout

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
    # alerts.AlertOptions given (--notify, --stall-alert, --straggler-ratio, or [alerts]); the
    # webhook URL may hold a token: it stays in the job record (0600), never in a remote argv
    alerts: Mapping[str, Any] = field(default_factory=dict)
    engine: str | None = option(  # None: torch when the command is the torch engine, else mxnet
        None,
        "torch: every process gets torchrun's variables (MASTER_ADDR, RANK, WORLD_SIZE …) and no "
        "scheduler or servers start (default: torch when the command is `imgscale train "
        "--engine torch`, else mxnet)",
        choices=tuple(registry.ENGINES),
    )

    @property
    def training_engine(self) -> Engine:
        """The job's engine, decided once: the one asked for, else the one its command trains with."""
        return registry.engine_for(self.engine, self.command)

    @property
    def layout(self) -> Layout:
        return Layout(self.num_workers, self.num_servers, self.servers_per_host)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["command"] = list(self.command)
        for key in ("env", "env_server", "env_worker", "slurm", "alerts"):
            data[key] = dict(getattr(self, key))
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> LaunchSpec:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["command"] = tuple(values.get("command", ()))
        return cls(**values)

    def alert_options(self) -> AlertOptions | None:
        """The job's alert settings; None when none were given (no alerts from the supervisor)."""
        return opt.build(AlertOptions, dict(self.alerts), where="alerts.") if self.alerts else None

    def supervise_options(self, **overrides: Any) -> SuperviseOptions:
        options = SuperviseOptions(
            max_restarts=self.max_restarts,
            stall_timeout_s=self.stall_timeout_s,
            exclude_after=self.exclude_after,
            grace_s=self.grace_s,
            lost_timeout_s=self.lost_timeout_s,
        )
        return SuperviseOptions(**{**asdict(options), **overrides})


def checkpoint_resume(prefix: str, engine: Engine) -> ResumeHook:
    """Relaunches continue from the newest complete checkpoint under ``prefix``, as the engine
    resumes (MXNet: --load-epoch N; torch: --resume)."""

    def hook(command: tuple[str, ...], attempt: int) -> tuple[str, ...]:
        return engine.resume_command(command, prefix)

    return hook


def resume_hook(spec: LaunchSpec, resume: ResumeHook | None) -> ResumeHook | None:
    """The hook a job relaunches with: the one given, else the engine's from --resume-prefix."""
    if resume is None and spec.resume_prefix:
        return checkpoint_resume(spec.resume_prefix, spec.training_engine)
    return resume
