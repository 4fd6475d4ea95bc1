"""`imgscale launch`, `attach`, `kill` and `jobs`: distributed jobs from the shell, same engine as the console.

``launch`` supervises in the foreground: every line is printed with its host, role and rank; Ctrl-C
stops the job on every host. ``--detach`` (or closing the terminal) hands supervision to a
background ``imgscale attach --supervise`` on this machine and returns; the job never depends on
the terminal. ``attach`` re-attaches (tails every log, shows state); Ctrl-C there only detaches.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from engine import options as opt
from engine.cluster.hosts import read_hosts
from engine.cluster.process import jobs
from engine.cluster.process.alerts import AlertOptions
from engine.cluster.process.kill import ended, kill_everywhere, kill_job, sweep_hosts
from engine.cluster.slurm.sbatch import SlurmRequest
from engine.errors import UserError
from engine.events import Alert, Event, Failure, HostState, JobState, LogLine

from .dmlc_env import parse_env_args, parse_role_env
from .launch import LaunchSpec, launch, open_job, plan_lines, validate
from .slurm_launch import dry_run_script

if TYPE_CHECKING:
    from engine.cluster.process.supervisor import Job
    from engine.cluster.slurm.job import SlurmJob

LAUNCH_HELP = (
    "start a distributed job on the hosts, supervised: MXNet (tools/launch.py semantics: "
    "scheduler, servers, workers) or torch (torchrun's variables, one process per slot)"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `launch`, `attach`, `kill` and `jobs` to the `imgscale` parser."""
    _add_launch(sub)
    parser = sub.add_parser("attach", help="re-attach to a job: its logs and state")
    parser.add_argument("job", nargs="?", help="job id (default: the newest running job)")
    parser.add_argument(
        "--lines", type=int, default=20, help="log lines to show first (default 20)"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only state changes and failures"
    )
    parser.add_argument("--supervise", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run_attach)
    parser = sub.add_parser(
        "kill", help="end the processes of a job (or of all jobs) on every host"
    )
    parser.add_argument("job", nargs="?", help="job id")
    parser.add_argument("--all", action="store_true", help="every job imgscale launched from here")
    opt.add_arguments(parser, LaunchSpec, only=("grace_s", "run_root"))
    parser.add_argument(
        "-H",
        "--hosts",
        help="with --all: also sweep these hosts' run directories (jobs launched elsewhere, or "
        "whose records here are gone)",
    )
    parser.set_defaults(func=run_kill)
    parser = sub.add_parser("jobs", help="list the jobs launched from this machine")
    parser.set_defaults(func=run_jobs)


def _add_launch(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("launch", help=LAUNCH_HELP, description=LAUNCH_HELP)
    opt.add_arguments(p, LaunchSpec)
    p.set_defaults(num_workers=None)  # -n is required: launch.py has no default either
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="environment for every process (repeat; a bare K copies this shell's value)",
    )
    p.add_argument(
        "--env-server",
        action="append",
        default=[],
        metavar="K:V",
        help="environment for servers and the scheduler only (launch.py)",
    )
    p.add_argument(
        "--env-worker",
        action="append",
        default=[],
        metavar="K:V",
        help="environment for workers only (launch.py)",
    )
    p.add_argument(
        "--detach", action="store_true", help="return once started; supervise in the background"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print where each process would run (with --launcher slurm: the batch script)",
    )
    _add_slurm(p)
    g = p.add_argument_group("alerts (also [alerts] in workspace.toml)")
    opt.add_arguments(g, AlertOptions, keep_unset=True)
    p.add_argument("--quiet", action="store_true", help="print only state changes and failures")
    p.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="-- command",
        help="the command every process runs",
    )
    p.set_defaults(func=run_launch)


def _add_slurm(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "--launcher slurm (allocate with sbatch, start each process with srun)"
    )
    opt.add_arguments(g, SlurmRequest)


def slurm_options(args: argparse.Namespace) -> dict:
    """The SLURM flags that were given (``sbatch_args`` as a list)."""
    given = opt.given(SlurmRequest, args)
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in given.items() if v != []}


def spec_from_args(args: argparse.Namespace) -> LaunchSpec:
    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]
    if args.num_workers is None:
        raise UserError("-n NUM_WORKERS is required: give the total number of workers")
    return opt.from_args(
        LaunchSpec,
        args,
        command=tuple(command),
        launcher=args.launcher or ("ssh" if args.hosts_file else "local"),
        env=parse_env_args(args.env),
        env_server=parse_role_env(args.env_server, "--env-server"),
        env_worker=parse_role_env(args.env_worker, "--env-worker"),
        cwd=os.getcwd(),
        slurm=slurm_options(args),
        alerts=opt.given(AlertOptions, args),
    )


# ---- printing ---------------------------------------------------------------------------------------
class Printer:
    """An EventSink for the terminal: attributed log lines, state changes, failures."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.last_state: tuple | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogLine) and not self.quiet:
            rank = "" if event.rank is None else f" {event.rank}"
            _out(f"{event.host} {event.role}{rank} | {event.text}")
        elif isinstance(event, JobState):
            self._state(event)
        elif isinstance(event, Failure):
            _err(
                f"FAILED {event.source}: {event.message}"
                + (f" ({event.diagnosis})" if event.diagnosis else "")
            )
            for line in event.last_lines:
                _err(f"    | {line}")
            for advice in event.advice:
                _err(f"    -> {advice}")
        elif isinstance(event, Alert):
            _err(f"ALERT job {event.job} {event.kind}: {event.message}")
        elif isinstance(event, HostState):
            _err(
                f"host {event.host}: "
                + ("reachable again" if event.reachable else f"unreachable: {event.reason}")
            )

    def _state(self, event: JobState) -> None:
        key = (event.state, event.restarts, event.message)
        if key != self.last_state:
            self.last_state = key
            running = sum(1 for p in event.processes if p.state == "running")
            _err(
                f"job {event.job}: {event.state}"
                + (f" - {event.message}" if event.message else "")
                + f" ({running}/{len(event.processes)} processes running, restarts {event.restarts})"
            )


def _out(text: str) -> None:
    try:
        print(text, flush=True)
    except (BrokenPipeError, OSError):  # the terminal went away; the job does not care
        pass


def _err(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (BrokenPipeError, OSError):
        pass


def exit_status(state: JobState) -> int:
    return 0 if state.state == "done" else 1


# ---- commands ---------------------------------------------------------------------------------------
def run_launch(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    if args.dry_run:
        return _dry_run(spec)
    return asyncio.run(_collected(_launch(spec, args)))


async def _collected(work: Awaitable[int]) -> int:
    """``work``, then a garbage collection while the loop still runs: a command cancelled by a
    second Ctrl-C leaves its subprocess transport in a reference cycle, and collected after the
    loop closed it prints "Event loop is closed" with a traceback."""
    try:
        return await work
    finally:
        gc.collect()


def _dry_run(spec: LaunchSpec) -> int:
    validate(spec)
    if spec.launcher == "slurm":
        print(dry_run_script(spec.to_dict()), end="")
        return 0
    for line in plan_lines(spec):
        print(line)
    return 0


async def _launch(spec: LaunchSpec, args: argparse.Namespace) -> int:
    printer = Printer(args.quiet)
    # SIGTERM (a process manager, `kill`) stops the job like Ctrl-C: dying silently would leave
    # it running on every host with nobody supervising it. The signals are caught from before the
    # start: a Ctrl-C while processes start stops them once started, never leaves them behind.
    actions = {signal.SIGINT: "stop", signal.SIGTERM: "stop", signal.SIGHUP: "detach"}
    with SignalChoice(actions) as signals:
        job = await launch(spec, sink=printer)
        _err(
            f"job {job.job_id} started; `imgscale attach {job.job_id}` re-attaches, "
            f"`imgscale kill {job.job_id}` ends it"
        )
        if args.detach and not signals.chosen.done():
            outcome = "detach"
        else:
            outcome = await signals.wait(job)
        if outcome == "stop":  # still catching signals: a second Ctrl-C escalates
            state = await _stop(job, signals)
            if state is None:
                return 130
            await job.close()
            _advise(job, state)
            return 130 if state.state == "stopped" else 1
    if outcome == "detach":
        await job.close()
        _hand_over(job.job_id)
        return 0
    await job.close()
    return exit_status(job.status())


async def _stop(job: Job | SlurmJob, signals: SignalChoice) -> JobState | None:
    """Stop the job (TERM, KILL after --grace); a second Ctrl-C kills at once and waits for every
    host; a third leaves without waiting (None), saying how to end what may be left."""
    _err("interrupted: stopping the job on every host (Ctrl-C again: kill it now)")
    state = await signals.unless_signalled(job.stop("interrupted (Ctrl-C)"))
    if state is not None:
        return state
    _err("interrupted again: killing the job's processes on every host (Ctrl-C again: leave)")
    state = await signals.unless_signalled(job.kill_now("killed (Ctrl-C twice)"))
    if state is None:
        await job.close()
        _err(f"left without waiting; `imgscale kill {job.job_id}` ends what may be left of it")
    return state


def _advise(job: Job | SlurmJob, state: JobState) -> None:
    """What to run next: `imgscale kill` while processes may be left, else where the logs are."""
    if not getattr(job.record, "clean", True):
        _err(f"some processes may be left: `imgscale kill {job.job_id}` ends them")
    else:
        _err(f"job {job.job_id} {state.state}; `imgscale attach {job.job_id}` shows its logs")


T = TypeVar("T")


class SignalChoice:
    """While entered, each of ``actions``' signals chooses its action (the first one counts)."""

    def __init__(self, actions: dict) -> None:
        self.actions = actions
        self.loop = asyncio.get_running_loop()
        self.chosen: asyncio.Future = self.loop.create_future()
        self.again: asyncio.Future | None = None  # the next signal after the first (escalation)

    def __enter__(self) -> SignalChoice:
        for sig, action in self.actions.items():
            self.loop.add_signal_handler(sig, self._choose, action)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig in self.actions:
            self.loop.remove_signal_handler(sig)

    def _choose(self, action: str) -> None:
        if not self.chosen.done():  # a second signal before the wait returns changes nothing
            self.chosen.set_result(action)
        elif action == "stop" and self.again is not None and not self.again.done():
            self.again.set_result(action)  # Ctrl-C or TERM again escalates; a hang-up does not

    async def unless_signalled(self, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None when a further signal comes first (``work`` is cancelled)."""
        self.again = self.loop.create_future()
        task = asyncio.ensure_future(work)
        await asyncio.wait({task, self.again}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None

    async def wait(self, job: Job | SlurmJob) -> str:
        """Wait for the job's end or a signal; returns "final" or the chosen action."""
        waiter = asyncio.ensure_future(job.wait())
        try:
            await asyncio.wait({waiter, self.chosen}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return self.chosen.result() if self.chosen.done() else "final"


def _hand_over(job_id: str) -> None:
    """Start a background supervisor for the job on this machine (it survives this terminal)."""
    log = jobs.job_dir(job_id) / "supervisor.log"
    with open(log, "ab") as out:
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "attach",
                job_id,
                "--supervise",
                "--quiet",
                "--lines",
                "0",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env=os.environ.copy(),
        )
    _err(f"job {job_id} supervised in the background (log: {log})")


def run_attach(args: argparse.Namespace) -> int:
    return asyncio.run(_attach(args))


async def _attach(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise UserError(f"--lines {args.lines}: give 0 or more log lines")
    job = open_job(args.job, sink=Printer(args.quiet), tail_lines=args.lines)
    await job.attach()
    if not job.supervising:
        _err(f"job {job.job_id}: watching (another imgscale process supervises it)")
    actions = {signal.SIGINT: "detach", signal.SIGHUP: "detach"}
    if args.supervise:  # the background supervisor has no terminal; only kill/stop end it
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        actions = {}
    with SignalChoice(actions) as signals:
        outcome = await signals.wait(job)
    await job.close()
    if outcome == "detach":
        _err(f"detached; job {job.job_id} keeps running")
        return 130
    return exit_status(job.status())


def run_kill(args: argparse.Namespace) -> int:
    if args.all == bool(args.job):
        raise UserError("name one job, or give --all (see `imgscale jobs`)")
    if args.hosts and not args.all:
        raise UserError("-H sweeps hosts for every job: use it with --all")
    opt.check(args, LaunchSpec)
    if args.hosts:  # a bad hosts file is reported before any local job is killed
        read_hosts(args.hosts)
    printer = Printer()
    if args.all:
        count = asyncio.run(kill_everywhere(grace_s=args.grace_s, emit=printer))
        if args.hosts:
            count += ended(
                asyncio.run(
                    sweep_hosts(args.hosts, args.run_root, grace_s=args.grace_s, emit=printer)
                )
            )
    else:
        count = ended(asyncio.run(kill_job(args.job, grace_s=args.grace_s, emit=printer)))
    print(f"ended {count} process group(s)")
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    records = jobs.all_jobs()
    if not records:
        print(f"no jobs recorded in {jobs.jobs_dir()}")
        return 0
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
        hosts = ",".join(r.host_names) or ",".join(sorted({p.host for p in r.processes}))
        if r.scheduler_id:
            hosts = f"SLURM {r.scheduler_id} {hosts}".strip()
        print(
            f"{r.job:<36} {r.state:<11} attempt {r.attempt}  {len(r.processes)} procs  {when}  {hosts}"
        )
    return 0
