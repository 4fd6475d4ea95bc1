"""SLURM as a launcher: what to ask `sbatch` for, and how to read `squeue`, `scontrol` and `sinfo`.

Pure functions and the thin calls to SLURM's own commands. A SLURM job of ours is one batch script:
SLURM runs it on the first node of the allocation, where the caller's driver module (for training,
``engine.train.launch.slurm_driver``) places the job's processes on the allocated nodes and starts
each with ``srun``. Logs, pid and status files are written under the job's run folder, which must be on a
file system the login node shares with the nodes (the home folder is, on every site we know of).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine import options as opt
from engine.cluster.remote_cmd import join_argv
from engine.errors import UserError
from engine.options import option

COMMANDS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
TIME_LIMIT = re.compile(r"\A(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\Z")
# A newline in any value written into the batch script would start a line the shell runs.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# SLURM's own states, and what our JobState calls them.
ENDED = {
    "COMPLETED": "done",
    "FAILED": "failed",
    "TIMEOUT": "failed",
    "NODE_FAIL": "failed",
    "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
    "PREEMPTED": "failed",
    "CANCELLED": "stopped",
}
WAITING = ("PENDING", "CONFIGURING", "REQUEUED", "RESV_DEL_HOLD", "SUSPENDED")
CALL_TIMEOUT_S = 30


@dataclass(frozen=True)
class SlurmRequest:
    """What the allocation is asked for (the `--launcher slurm` flags of `imgscale launch`)."""

    tasks: int  # processes of the job: torch ranks, or scheduler + servers + workers
    nodes: int | None = option(
        None, "nodes to allocate (default: as SLURM places -n)", parse=int, low=1
    )
    gpus_per_node: int | None = option(
        None, "GPUs to allocate on each node", parse=int, low=0, high=64
    )
    partition: str | None = option(None, "SLURM partition (default: the cluster's default)")
    time: str | None = option(  # SLURM's forms: MINUTES, H:MM:SS, D-HH …
        None, "time limit in SLURM's forms: MINUTES, H:MM:SS, D-HH:MM:SS"
    )
    account: str | None = option(None, "account to charge")
    sbatch_args: tuple[str, ...] = option(
        (),
        "any other sbatch option, e.g. --sbatch-arg=--qos=high (repeat)",
        flags=("--sbatch-arg",),
        append=True,
        metavar="ARG",
    )

    def check(self) -> None:
        for name in ("partition", "time", "account"):
            plain(f"--{name} (workspace [slurm] {name})", getattr(self, name))
        for arg in self.sbatch_args:
            plain("--sbatch-arg (workspace [slurm] sbatch_args)", arg)
        if self.tasks < 1:
            raise UserError(f"-n {self.tasks}: a SLURM job needs at least one process")
        opt.check(self)
        if self.nodes is not None and not 1 <= self.nodes <= self.tasks:
            raise UserError(
                f"--nodes {self.nodes}: give 1 to {self.tasks} (the job has {self.tasks} processes)"
            )
        if self.time is not None and time_minutes(self.time) is None:
            raise UserError(
                f"--time {self.time}: use SLURM's forms, e.g. 90, 1:30:00 or 2-00:00:00"
            )
        for arg in self.sbatch_args:
            if not arg.startswith("-"):
                raise UserError(
                    f"--sbatch-arg {arg}: give sbatch options, e.g. --sbatch-arg=--qos=high"
                )


@dataclass(frozen=True)
class SlurmState:
    """One reading of a SLURM job: its state, why it waits, its nodes, and its exit code."""

    state: str  # SLURM's word: PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, NODE_FAIL …
    reason: str = ""
    nodes: tuple[str, ...] = ()
    exit_code: str = ""
    position: int | None = None  # place among pending jobs of the partition, 1 first

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def describe(self) -> str:
        words = [self.state]
        if self.state == "PENDING":
            if self.reason and self.reason != "None":
                words.append(f"({self.reason})")
            if self.position is not None:
                words.append(f"position {self.position} in the queue")
        elif self.ended and self.exit_code and self.exit_code != "0:0":
            words.append(f"exit code {self.exit_code}")
        return " ".join(words)


def require_commands(names: Sequence[str] = COMMANDS) -> None:
    """One line when SLURM's commands are not on this machine."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise UserError(
            f"--launcher slurm needs SLURM's commands ({', '.join(missing)} not found on PATH); "
            "run on a login node of the cluster, or use --launcher ssh with a hosts file"
        )


def call(argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a SLURM command; a missing command or a hung controller becomes one clear line."""
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=CALL_TIMEOUT_S, env=env
        )
    except FileNotFoundError:
        require_commands([argv[0]])
        raise
    except subprocess.TimeoutExpired:
        raise UserError(
            f"`{' '.join(argv[:2])}` did not answer in {CALL_TIMEOUT_S} s: is slurmctld up?"
        ) from None


def time_minutes(text: str) -> int | None:
    """SLURM's time limit forms in minutes (None: not a limit SLURM accepts; 'infinite' is large)."""
    if text.strip().lower() in ("infinite", "unlimited"):
        return 10**9
    m = TIME_LIMIT.match(text.strip())
    if not m:
        return None
    days, first, second, third = m.groups()
    a, b, c = int(first), int(second or 0), int(third or 0)
    if days is not None:  # D-HH[:MM[:SS]]
        return int(days) * 1440 + a * 60 + b + (1 if c else 0)
    if second is None:
        return a  # MINUTES
    if third is None:
        return a + (1 if b else 0)  # MM:SS
    return a * 60 + b + (1 if c else 0)  # HH:MM:SS


# ---- the batch script -----------------------------------------------------------------------------
def plain(what: str, value: object) -> None:
    """Refuse a value that would break out of its line of the batch script, naming where it came from."""
    if value is not None and CONTROL.search(str(value)):
        raise UserError(
            f"{what} {str(value)!r}: holds a control character (newline, NUL …), which would "
            "start a new line of the batch script; give plain text"
        )


def batch_script(
    request: SlurmRequest,
    *,
    job: str,
    attempt: int,
    python: str,
    plan_path: str,
    output: str,
    workdir: str,
    driver: str,
) -> str:
    """The script `sbatch` runs: the allocation's options as #SBATCH lines, then the driver
    module (``python -m DRIVER PLAN``) that places and starts the job's processes.

    Every value is one line of plain text (else UserError naming it) and shell-quoted."""
    request.check()
    for what, text in (("--job", job), ("the run folder (--run-dir)", output),
                       ("the current folder", workdir), ("python", python),
                       ("the plan", plan_path)):  # fmt: skip
        plain(what, text)
    options = [
        f"--job-name=imgscale-{job}",
        f"--ntasks={request.tasks}",
        f"--output={output}",
        "--open-mode=append",
        f"--chdir={workdir}",
    ]
    if request.nodes:
        options.append(f"--nodes={request.nodes}")
    if request.gpus_per_node:
        options.append(f"--gpus-per-node={request.gpus_per_node}")
    for flag, value in (("partition", request.partition), ("time", request.time),
                        ("account", request.account)):  # fmt: skip
        if value:
            options.append(f"--{flag}={value}")
    options += request.sbatch_args
    lines = ["#!/bin/sh", f"# imgscale job {job}, attempt {attempt}"]
    lines += [f"#SBATCH {shlex.quote(opt)}" for opt in options]
    lines += [
        "# The driver places the processes on the allocated nodes and starts each with srun.",
        f"exec {join_argv([python, '-m', driver, plan_path])}",
    ]
    return "\n".join(lines) + "\n"


def submit(script_path: str, env: Mapping[str, str] | None = None) -> str:
    """`sbatch` the script; the SLURM job id."""
    result = call(["sbatch", "--parsable", script_path], env)
    if result.returncode != 0:
        raise UserError(f"sbatch refused the job: {last_line(result.stderr)}")
    return result.stdout.strip().split(";")[0]


def cancel(slurm_job: str, signal: str | None = None) -> None:
    argv = ["scancel", *([f"--signal={signal}"] if signal else []), slurm_job]
    result = call(argv)
    gone = "already completing" in result.stderr or "Invalid job id" in result.stderr
    if result.returncode != 0 and not gone:
        raise UserError(f"scancel {slurm_job}: {last_line(result.stderr)}")


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


# ---- reading SLURM's answers ---------------------------------------------------------------------
def parse_key_values(line: str) -> dict[str, str]:
    """``scontrol show … -o`` output: ``Key=Value Key2=Value with spaces …`` on one line."""
    parts = re.split(r" (?=[A-Za-z][A-Za-z0-9:/_]*=)", line.strip())
    pairs = (part.partition("=") for part in parts)
    return {key: value for key, sep, value in pairs if sep}


def parse_tasks_per_node(text: str) -> list[int]:
    """``SLURM_TASKS_PER_NODE`` such as ``2(x3),1`` → [2, 2, 2, 1]."""
    counts: list[int] = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not m:
            raise ValueError(f"SLURM_TASKS_PER_NODE {text!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def job_state(slurm_job: str) -> SlurmState | None:
    """The job's state from the controller (None: the controller has forgotten it)."""
    result = call(["scontrol", "-o", "show", "job", slurm_job])
    if result.returncode != 0 or not result.stdout.strip():
        return None
    info = parse_key_values(result.stdout.splitlines()[0])
    state = info.get("JobState", "UNKNOWN")
    nodes = (
        expand_nodes(info.get("NodeList", "")) if info.get("NodeList") not in ("", "(null)") else ()
    )
    position = (
        pending_position(slurm_job, info.get("Partition", "")) if state == "PENDING" else None
    )
    return SlurmState(state, info.get("Reason", ""), nodes, info.get("ExitCode", ""), position)


def pending_position(slurm_job: str, partition: str) -> int | None:
    """Where the job stands among the partition's pending jobs, highest priority first."""
    argv = ["squeue", "-h", "-t", "PD", "-o", "%i", "--sort=-p,i"]
    result = call(argv + (["-p", partition] if partition else []))
    ids = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return ids.index(slurm_job) + 1 if slurm_job in ids else None


def expand_nodes(nodelist: str) -> tuple[str, ...]:
    """``n[1-3],gpu7`` → each node name (scontrol's own expansion)."""
    if not nodelist:
        return ()
    result = call(["scontrol", "show", "hostnames", nodelist])
    if result.returncode != 0:
        raise UserError(f"scontrol show hostnames {nodelist}: {last_line(result.stderr)}")
    return tuple(line.strip() for line in result.stdout.splitlines() if line.strip())


def node_addresses(names: Sequence[str]) -> dict[str, str]:
    """Each node's NodeAddr (how the other nodes reach it), the name where SLURM gives none."""
    addresses = {}
    result = call(["scontrol", "-o", "show", "node", ",".join(names)])
    for line in result.stdout.splitlines():
        info = parse_key_values(line)
        if info.get("NodeName"):
            addresses[info["NodeName"]] = info.get("NodeAddr") or info["NodeName"]
    return {name: addresses.get(name, name) for name in names}


# ---- pre-flight ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionInfo:
    name: str
    time_limit: str
    nodes: int
    gpus_per_node: int  # the most any node of it offers (0: none)
    available: bool
    default: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def partitions() -> list[PartitionInfo]:
    """``sinfo``'s partitions with their time limits, node counts and GPUs per node."""
    result = call(["sinfo", "-h", "-o", "%P|%l|%D|%G|%a"])
    if result.returncode != 0:
        raise UserError(f"sinfo: {last_line(result.stderr)}")
    merged: dict[str, PartitionInfo] = {}
    for line in result.stdout.splitlines():
        fields_ = line.strip().split("|")
        if len(fields_) != 5:
            continue
        name, limit, nodes, gres, avail = fields_
        default = name.endswith("*")
        name = name.rstrip("*")
        gpus = gres_gpus(gres)
        old = merged.get(name)
        merged[name] = PartitionInfo(
            name,
            limit,
            int(nodes) + (old.nodes if old else 0),
            max(gpus, old.gpus_per_node if old else 0),
            avail == "up",
            default,
        )
    return list(merged.values())


def gres_gpus(gres: str) -> int:
    """GPUs in a GRES string such as ``gpu:a100:8(S:0-1),shard:2`` (0 when none)."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def check_request(request: SlurmRequest, infos: Sequence[PartitionInfo]) -> list[str]:
    """Findings ("error …" / "warning …") for what is asked against what the partition offers."""
    if not infos:
        return ["error   sinfo lists no partition: is this machine part of a SLURM cluster?"]
    by_name = {p.name: p for p in infos}
    if request.partition:
        part = by_name.get(request.partition)
        if part is None:
            names = ", ".join(sorted(by_name))
            return [
                f"error   --partition {request.partition}: no such partition (there are {names})"
            ]
    else:
        part = next((p for p in infos if p.default), infos[0])
    findings = []
    if not part.available:
        findings.append(f"error   partition {part.name} is not up; pick another with --partition")
    if request.nodes and request.nodes > part.nodes:
        findings.append(
            f"warning --nodes {request.nodes}: partition {part.name} has {part.nodes} nodes; "
            "the job will wait forever"
        )
    if request.gpus_per_node and request.gpus_per_node > part.gpus_per_node:
        findings.append(
            f"error   --gpus-per-node {request.gpus_per_node}: partition {part.name} nodes have "
            f"{part.gpus_per_node} GPUs; ask for fewer or pick another --partition"
        )
    asked, limit = time_minutes(request.time or ""), time_minutes(part.time_limit)
    if request.time and asked is not None and limit is not None and asked > limit:
        findings.append(
            f"error   --time {request.time}: partition {part.name} allows {part.time_limit}; "
            "ask for less or pick another --partition"
        )
    return findings
