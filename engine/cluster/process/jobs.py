"""Job records on the launching machine: which process of a job runs where, with which pid record and log.

Layout: ``$IMGSCALE_HOME/jobs/<job>/job.json`` (``IMGSCALE_HOME`` defaults to ``~/.imgscale``), written
to a temporary name and renamed. On each host the processes keep their own files under the job's run
directory (default ``~/.imgscale/runs/<job>/a<attempt>/<role>-<rank>.{log,pid,status}``; see detach.py).
The record is what ``imgscale attach``, ``imgscale kill`` and ``imgscale jobs`` read.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from engine.errors import UserError
from engine.paths import write_text_atomic

JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
DEFAULT_RUN_ROOT = "~/.imgscale/runs"
ACTIVE = ("starting", "running", "stopping", "relaunching")


def state_home() -> Path:
    return Path(os.environ.get("IMGSCALE_HOME") or Path.home() / ".imgscale")


def jobs_dir() -> Path:
    return state_home() / "jobs"


@dataclass(frozen=True)
class ProcRecord:
    """One process of one attempt: where it runs and where its files are on that host."""

    host: str  # host name as in the hosts file
    role: str
    rank: int
    prefix: str  # host path without extension: PREFIX.log, PREFIX.pid, PREFIX.status

    @property
    def name(self) -> str:
        return self.role if self.role == "scheduler" else f"{self.role}-{self.rank}"

    @property
    def log_path(self) -> str:
        return self.prefix + ".log"


@dataclass(frozen=True)
class JobRecord:
    """Everything needed to re-attach to, relaunch or kill a job after the launcher has gone."""

    job: str
    kind: str  # train | bench | testio | pack | command
    command: tuple[str, ...]
    hosts_file: str | None  # None: this machine only (the local launcher)
    host_names: tuple[str, ...]
    launch_args: dict = field(default_factory=dict)  # what `launch` was given (for relaunch)
    attempt: int = 0
    processes: tuple[ProcRecord, ...] = ()
    past_processes: tuple[ProcRecord, ...] = ()  # earlier attempts (kill sweeps them too)
    excluded: tuple[str, ...] = ()  # hosts left out of later attempts
    state: str = "starting"
    message: str = ""
    restarts: int = 0
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    launcher_pid: int | None = None
    clean: bool = False  # True once no process of the job can be left on any host
    scheduler_id: str = ""  # the SLURM job id of the current attempt (--launcher slurm)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def new_job_id(prefix: str = "job") -> str:
    """A job id unique on this machine: ``job-20261126-080102-3fa2``."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def choose_job_name(requested: str | None, kind: str) -> str:
    """The job's name: the one asked for with --job (valid and not taken), else a new id."""
    if not requested:
        return new_job_id(kind)
    job = check_job_name(requested)
    if exists(job):
        raise UserError(f"--job {job}: a job of that name exists; pick another name")
    return job


def check_job_name(name: str) -> str:
    if not JOB_NAME.match(name):
        raise UserError(
            f"--job {name!r}: use letters, digits, '.', '_' or '-' (at most 64, not starting with . or -)"
        )
    return name


def job_dir(job: str) -> Path:
    """The job's folder under the jobs folder; a name that could lead elsewhere ('../x') is refused
    wherever it comes from (a command line or a job.json someone edited)."""
    if not isinstance(job, str) or not JOB_NAME.match(job):
        raise UserError(
            f"{job!r} is not a job name (letters, digits, '.', '_' or '-'); see `imgscale jobs`"
        )
    return jobs_dir() / job


def record_path(job: str) -> Path:
    return job_dir(job) / "job.json"


def save(record: JobRecord) -> JobRecord:
    """Write the record atomically (0600: the launch arguments may carry secrets)."""
    record = replace(record, updated=time.time())
    path = record_path(record.job)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(asdict(record), indent=1), private=True)
    return record


def exists(job: str) -> bool:
    return record_path(job).exists()


def load(job: str) -> JobRecord:
    path = record_path(job)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"no job {job!r} here (records are in {jobs_dir()}); see `imgscale jobs`"
        ) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"job record {path} is unreadable: {exc}") from None
    try:
        record = _from_dict(data)
    except (AttributeError, TypeError, ValueError):
        # valid JSON of the wrong shape: a hand-edited or foreign file, not one we wrote
        raise UserError(
            f"job record {path} is not one imgscale wrote (wrong fields); move that folder away"
        ) from None
    if record.job != job:  # every later path is built from record.job: it must be this folder's
        raise UserError(
            f"job record {path} names job {record.job!r}, not {job!r}; move that folder away"
        )
    return record


def _from_dict(data: dict) -> JobRecord:
    procs = tuple(ProcRecord(**p) for p in data.pop("processes", ()))
    past = tuple(ProcRecord(**p) for p in data.pop("past_processes", ()))
    for key in ("command", "host_names", "excluded"):
        data[key] = tuple(data.get(key, ()))
    known = set(JobRecord.__dataclass_fields__)
    fields = {k: v for k, v in data.items() if k in known}
    return JobRecord(processes=procs, past_processes=past, **fields)


def all_jobs() -> list[JobRecord]:
    """Every readable job record, oldest first."""
    records = []
    root = jobs_dir()
    if not root.is_dir():
        return []
    for entry in root.iterdir():
        if JOB_NAME.match(entry.name) and (entry / "job.json").is_file():
            try:
                records.append(load(entry.name))
            except UserError:
                continue  # a half-removed directory is not a job
    return sorted(records, key=lambda r: r.created)


def latest_active() -> JobRecord | None:
    """The newest job still marked running (what `imgscale attach` without a name means)."""
    active = [r for r in all_jobs() if r.active]
    return active[-1] if active else None


def resolve(job: str | None) -> JobRecord:
    """The named job, or the newest active one; UserError when there is none."""
    if job:
        return load(job)
    record = latest_active()
    if record is None:
        raise UserError("no running job recorded here; name one (see `imgscale jobs`)")
    return record


def stop_marker(job: str) -> Path:
    """Created by `imgscale kill` so that a running supervisor stops instead of relaunching."""
    return job_dir(job) / "stop"


def supervisor_lock(job: str) -> Path:
    return job_dir(job) / "supervisor.lock"


def take_supervisor_lock(job: str, required: bool) -> int | None:
    """The job's supervisor lock (an open fd holding flock), or None when another process holds it."""
    path = supervisor_lock(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        if required:
            raise UserError(f"job {job} is supervised by another imgscale process") from None
        return None
    return fd


def run_prefix(run_root: str, job: str, attempt: int, proc_name: str) -> str:
    return f"{run_root.rstrip('/')}/{job}/a{attempt}/{proc_name}"


class SupervisorLock:
    """The flock that makes one process the job's supervisor (the one that may start attempts)."""

    def __init__(self, job: str) -> None:
        self.job = job
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def take(self, required: bool = False) -> bool:
        """True when this process holds the lock now; ``required``: a UserError if another holds it."""
        if self._fd is None:
            self._fd = take_supervisor_lock(self.job, required)
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
