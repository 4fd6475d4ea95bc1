"""A job launched under SLURM, seen from the login node: submit, follow, stop, relaunch.

The same public face as the SSH launcher's ``supervisor.Job`` (``events()``, ``status()``,
``start()``, ``attach()``, ``stop()``, ``relaunch()``, ``wait()``, ``close()``), so `imgscale
launch/attach/kill/jobs` and the console treat both alike. The state comes from SLURM
(``scontrol show job``: PENDING with its reason and queue position, RUNNING, COMPLETED, FAILED,
TIMEOUT, NODE_FAIL …); logs and process states from the files the driver's steps write under the
job's run folder, which the login node shares with the nodes. Inside the allocation the driver
stops every process as soon as one fails, so the job ends at once and a relaunch (``--max-restarts``)
is a new ``sbatch`` of the next attempt, with the resume hook applied to its command.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from engine.cluster.probes.grid import ProbeSet
from engine.cluster.process import jobs
from engine.cluster.process.alerts import AlertOptions, Notifier, Reader
from engine.cluster.process.faults import FINAL, describe_status
from engine.cluster.process.jobevents import ClusterJob, JobEvents
from engine.cluster.process.watcher import line_level
from engine.cluster.slurm import sbatch as slurm
from engine.cluster.slurm.srun import node_spec
from engine.cluster.slurm.steps import attempt_dir, write_private
from engine.errors import UserError
from engine.events import Event, EventSink, Failure, HostState, JobState, LogLine, ProcessInfo

POLL_S = 0.5
LAST_LINES = 20
# (command, attempt) -> the command of that attempt, e.g. with --load-epoch N added
ResumeHook = Callable[[tuple[str, ...], int], tuple[str, ...]]
# (record, attempt, command, attempt folder) -> the working folder: writes the plan file there
PlanWriter = Callable[[jobs.JobRecord, int, tuple[str, ...], str], str]


@dataclass(frozen=True)
class SlurmPlanner:
    """What runs inside the allocation, from the caller that knows what the job is: the driver
    module the batch script starts (``python -m DRIVER PLAN.json``) and the writer of each
    attempt's plan file for it."""

    driver: str
    write_plan: PlanWriter


class SlurmJob(JobEvents, ClusterJob):
    """One recorded SLURM job of ours (``record.scheduler_id`` is SLURM's job id)."""

    def __init__(
        self,
        record: jobs.JobRecord,
        request: slurm.SlurmRequest,
        planner: SlurmPlanner,
        *,
        sink: EventSink | None = None,
        resume: ResumeHook | None = None,
        tail_lines: int | None = None,
        alerts: AlertOptions | None = None,
        reader: Reader | None = None,
    ) -> None:
        self.record = record
        self.request = request
        self.notifier = None if alerts is None else Notifier(record.job, alerts, self.emit, reader)
        self.planner = planner
        self._init_events(sink)
        self.resume = resume
        self.tail_lines = tail_lines
        self.phase = record.state
        self.message = record.message
        self.supervising = False
        self.infos: list[ProcessInfo] = []
        self.tails: list[collections.deque[str]] = []
        self.offsets: list[int] = []
        self._final = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.lock = jobs.SupervisorLock(record.job)
        self.slurm_state: slurm.SlurmState | None = None
        self._load_processes()

    # ---- public face -----------------------------------------------------------------------
    @property
    def job_id(self) -> str:
        return self.record.job

    def status(self) -> JobState:
        return JobState(
            self.record.job, self.phase, tuple(self.infos), self.record.restarts, self.message
        )

    async def start(self) -> None:
        self.supervising = self.lock.take(required=True)
        await asyncio.to_thread(self._submit, self.record.attempt)
        self._task = asyncio.create_task(self._follow())

    async def attach(self) -> None:
        self.supervising = self.lock.take()
        self._set_phase(self.record.state, self.record.message)
        self._read_logs(self.tail_lines)
        if self.record.active:
            self._task = asyncio.create_task(self._follow())
        else:
            self._finish(self.record.state, self.record.message)

    async def stop(self, message: str = "stopped on request") -> JobState:
        jobs.stop_marker(self.record.job).touch()
        if self.record.scheduler_id and self.phase not in FINAL:
            self._set_phase("stopping", f"scancel {self.record.scheduler_id}")
            await asyncio.to_thread(slurm.cancel, self.record.scheduler_id)
            await self._until_ended()
            self._read_logs(None)
        self._finish("stopped", message)
        return self.status()

    async def kill_now(self, message: str = "killed on request") -> JobState:
        """Stop without SLURM's grace (a second Ctrl-C): KILL every step, cancel, wait for the end."""
        jobs.stop_marker(self.record.job).touch()
        if self.record.scheduler_id and self.phase not in FINAL:
            self._set_phase("stopping", f"scancel --signal=KILL {self.record.scheduler_id}")
            await asyncio.to_thread(slurm.cancel, self.record.scheduler_id, "KILL")
            await asyncio.to_thread(slurm.cancel, self.record.scheduler_id)
            await self._until_ended()
            self._read_logs(None)
        self._finish("stopped", message)
        return self.status()

    async def relaunch(self, exclude: Sequence[str] = ()) -> JobState:
        if self.phase not in FINAL:
            await asyncio.to_thread(slurm.cancel, self.record.scheduler_id)
            await self._until_ended()
        await self._next_attempt()
        if self._task is None or self._task.done():
            self._final.clear()
            self._task = asyncio.create_task(self._follow())
        return self.status()

    async def wait(self) -> JobState:
        await self._final.wait()
        return self.status()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.notifier is not None:
            await self.notifier.drain()
        self.lock.release()
        self._end_events()

    def emit(self, event: Event) -> None:
        super().emit(event)
        if self.notifier is not None and self.supervising:  # only the supervisor alerts
            self.notifier.see(event, self.record.attempt)

    # ---- submitting ------------------------------------------------------------------------
    def _submit(self, attempt: int) -> None:
        """Write the attempt's plan and batch script next to its logs, and `sbatch` it."""
        spec = self.record.launch_args
        command = tuple(self.record.command)
        if attempt and self.resume is not None:
            command = tuple(self.resume(command, attempt))
        folder = attempt_dir(spec.get("run_root", jobs.DEFAULT_RUN_ROOT), self.record.job, attempt)
        os.makedirs(folder, exist_ok=True)
        workdir = self.planner.write_plan(self.record, attempt, command, folder)
        script = slurm.batch_script(
            self.request,
            job=self.record.job,
            attempt=attempt,
            python=spec.get("python") or sys.executable,
            plan_path=f"{folder}/plan.json",
            output=f"{folder}/slurm.out",
            workdir=workdir,
            driver=self.planner.driver,
        )
        write_private(f"{folder}/job.sbatch", script)
        jobs.stop_marker(self.record.job).unlink(missing_ok=True)
        slurm_id = slurm.submit(f"{folder}/job.sbatch")
        past = self.record.past_processes + (self.record.processes if attempt else ())
        self.record = jobs.save(
            replace(
                self.record,
                attempt=attempt,
                scheduler_id=slurm_id,
                processes=(),
                past_processes=past,
                launcher_pid=os.getpid(),
            )
        )
        self._load_processes()
        self._set_phase("starting", f"SLURM job {slurm_id} submitted (attempt {attempt})")

    async def _next_attempt(self) -> None:
        self.record = jobs.save(replace(self.record, restarts=self.record.restarts + 1))
        self._set_phase("relaunching", f"attempt {self.record.attempt + 1}")
        await asyncio.to_thread(self._submit, self.record.attempt + 1)

    # ---- following ---------------------------------------------------------------------------
    async def _follow(self) -> None:
        """Poll SLURM and the run folder until the job is final (relaunching when allowed)."""
        while True:
            state = await asyncio.to_thread(slurm.job_state, self.record.scheduler_id)
            self._load_processes()
            self._read_logs(None)
            self._read_statuses()
            if self.notifier is not None and self.supervising:
                self.notifier.tick()
            if state is None or state.ended:
                if await self._ended(state):
                    return
            else:
                self._on_state(state)
            await asyncio.sleep(POLL_S)

    def _on_state(self, state: slurm.SlurmState) -> None:
        self.slurm_state = state
        if state.state == "RUNNING" and self.infos:
            self._set_phase(
                "running", f"SLURM job {self.record.scheduler_id} on {','.join(state.nodes)}"
            )
        elif state.state != "RUNNING":
            self._set_phase("starting", f"SLURM job {self.record.scheduler_id}: {state.describe()}")

    async def _ended(self, state: slurm.SlurmState | None) -> bool:
        """The SLURM job ended: finish, or relaunch; True when there is nothing more to follow."""
        outcome = self._outcome()
        word = state.state if state else ("COMPLETED" if outcome.get("status") == 0 else "FAILED")
        phase = slurm.ENDED.get(word, "failed")
        if jobs.stop_marker(self.record.job).exists():
            phase = "stopped"
        message = f"SLURM {word}" + (f": {outcome['message']}" if outcome.get("message") else "")
        if phase == "failed":
            self._report_failure(message)
            restarts = int(self.record.launch_args.get("max_restarts", 0))
            if self.supervising and self.record.restarts < restarts:
                await self._next_attempt()
                return False
        self._finish(phase, message)
        return True

    async def _until_ended(self) -> None:
        while True:
            state = await asyncio.to_thread(slurm.job_state, self.record.scheduler_id)
            if state is None or state.ended:
                return
            await asyncio.sleep(POLL_S)

    def _outcome(self) -> dict:
        folder = self._folder()
        try:
            return json.loads(Path(f"{folder}/outcome.json").read_text())
        except (OSError, ValueError):
            return {}

    def _report_failure(self, message: str) -> None:
        failed = next((i for i, p in enumerate(self.infos) if p.state == "failed"), None)
        if failed is None:
            self.emit(
                Failure(f"SLURM job {self.record.scheduler_id}", message, job=self.record.job)
            )
            return
        info = self.infos[failed]
        self.emit(
            Failure(
                f"{info.role} {info.rank} on {info.host}",
                describe_status(info.exit_status),
                last_lines=tuple(self.tails[failed]),
                job=self.record.job,
            )
        )

    # ---- the run folder ----------------------------------------------------------------------
    def _folder(self) -> str:
        run_root = self.record.launch_args.get("run_root", jobs.DEFAULT_RUN_ROOT)
        return attempt_dir(run_root, self.record.job, self.record.attempt)

    def _load_processes(self) -> None:
        """The driver's procs.json: which process of this attempt runs on which node."""
        if self.record.processes:
            if not self.infos:
                self._reset_infos()
            return
        try:
            data = json.loads(Path(f"{self._folder()}/procs.json").read_text())
        except (OSError, ValueError):
            return
        procs = tuple(jobs.ProcRecord(**p) for p in data)
        self.record = replace(self.record, processes=procs)
        if self.supervising:
            self.record = jobs.save(self.record)
        self._reset_infos()

    def _reset_infos(self) -> None:
        procs = self.record.processes
        self.infos = [ProcessInfo(p.host, p.role, p.rank, log_path=p.log_path) for p in procs]
        self.tails = [collections.deque(maxlen=LAST_LINES) for _ in procs]
        self.offsets = [0] * len(procs)

    def _read_logs(self, last: int | None) -> None:
        """New lines of every process's log (on attach: only the last ``last`` lines first)."""
        for i, proc in enumerate(self.record.processes):
            try:
                with open(proc.log_path, "rb") as log:
                    log.seek(self.offsets[i])
                    data = log.read()
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1  # a half-written line waits for its end
            self.offsets[i] += cut
            lines = data[:cut].decode("utf-8", "replace").splitlines()
            for text in lines if last is None else lines[-last:] if last else []:
                self._on_log(i, text)

    def _on_log(self, index: int, text: str) -> None:
        info = self.infos[index]
        self.tails[index].append(text)
        self.emit(
            LogLine(
                info.host, info.role, info.rank, text, level=line_level(text), job=self.record.job
            )
        )

    def _read_statuses(self) -> None:
        changed = False
        for i, proc in enumerate(self.record.processes):
            new = process_info(self.infos[i], proc.prefix)
            if new != self.infos[i]:
                self.infos[i], changed = new, True
        if changed:
            self.emit(self.status())

    # ---- bookkeeping ---------------------------------------------------------------------------
    def _set_phase(self, phase: str, message: str) -> None:
        if (phase, message) == (self.phase, self.message) and self.record.state == phase:
            return
        self.phase, self.message = phase, message
        if self.supervising:
            self.record = jobs.save(replace(self.record, state=phase, message=message))
        self.emit(self.status())

    def _finish(self, phase: str, message: str) -> None:
        self._set_phase(phase, message)
        if self.supervising:
            self.record = jobs.save(replace(self.record, clean=True))
        self._final.set()


def process_info(info: ProcessInfo, prefix: str) -> ProcessInfo:
    """A process's state from its wrapper's files: .pid while it runs, .status once it ended."""
    try:
        code = int(Path(prefix + ".status").read_text().strip())
    except (OSError, ValueError):
        code = None
    if code is not None:
        return replace(info, state="exited" if code == 0 else "failed", exit_status=code)
    try:
        _w, pgid, pid = (int(x) for x in Path(prefix + ".pid").read_text().split())
    except (OSError, ValueError):
        return info
    return replace(info, state="running", pid=pid, pgid=pgid)


def request_of(record: jobs.JobRecord) -> slurm.SlurmRequest:
    return request_of_args(record.launch_args)


def request_of_args(spec_args: dict) -> slurm.SlurmRequest:
    """The allocation a launch (a LaunchSpec as a dict) asks for; unknown [slurm] keys refused."""
    options = dict(spec_args.get("slurm") or {})
    known = {f.name for f in dataclasses.fields(slurm.SlurmRequest)} - {"tasks"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(
            f"[slurm] {unknown[0]}: not a SLURM setting (use {', '.join(sorted(known))})"
        )
    options["sbatch_args"] = tuple(options.get("sbatch_args") or ())
    return slurm.SlurmRequest(tasks=int(spec_args["num_workers"]), **options)


def cancel_record(record: jobs.JobRecord) -> bool:
    """`imgscale kill` of a SLURM job: scancel it; True when SLURM still had it running."""
    jobs.stop_marker(record.job).parent.mkdir(parents=True, exist_ok=True)
    jobs.stop_marker(record.job).touch()
    if not record.scheduler_id:
        return False
    state = slurm.job_state(record.scheduler_id)
    if state is not None and state.ended:
        return False
    slurm.cancel(record.scheduler_id)
    if record.active:
        jobs.save(replace(record, state="stopped", message=f"scancel {record.scheduler_id}"))
    return True


def node_specs(record: jobs.JobRecord) -> list:
    """The allocated nodes of a running SLURM job, as hosts reached through `srun --overlap`."""
    if not record.scheduler_id:
        raise UserError(f"job {record.job} was not launched under SLURM")
    state = slurm.job_state(record.scheduler_id)
    if state is None or not state.nodes:
        what = state.describe() if state else "no longer known to SLURM"
        raise UserError(f"job {record.job} (SLURM {record.scheduler_id}) has no nodes now: {what}")
    addresses = slurm.node_addresses(state.nodes)
    return [node_spec(n, addresses[n], record.scheduler_id) for n in state.nodes]


def preflight_findings(request: slurm.SlurmRequest) -> list[str]:
    """What `sinfo` says of the request ("error …"/"warning …"), or that SLURM is not here."""
    try:
        slurm.require_commands()
        request.check()
        return slurm.check_request(request, slurm.partitions())
    except UserError as exc:
        return [f"error   {exc}"]


def require_request(request: slurm.SlurmRequest) -> None:
    """Refuse with the first error of the pre-flight; print its warnings."""
    findings = preflight_findings(request)
    errors = [f for f in findings if f.startswith("error")]
    if errors:
        raise UserError(errors[0][len("error") :].strip())
    for finding in findings:
        print(f"imgscale: {finding}", file=sys.stderr)


# ---- the hosts grid of a SLURM workspace ---------------------------------------------------------
SLURM_HOST = "SLURM"  # the grid's row while no job holds nodes: why, in its reason


async def watch_allocation(
    current_job: Callable[[], str | None], emit: EventSink, interval: float = 1.0
) -> None:
    """Until cancelled: probe the running job's nodes (through srun), or say why there are none."""
    probes: ProbeSet | None = None
    nodes: tuple[str, ...] = ()
    try:
        while True:
            record, state = await asyncio.to_thread(_current_allocation, current_job())
            running = state is not None and state.state == "RUNNING" and bool(state.nodes)
            if running and state is not None and record is not None and state.nodes != nodes:
                await _stop(probes)
                specs = await asyncio.to_thread(node_specs, record)
                probes, nodes = ProbeSet(specs, emit, interval=interval), state.nodes
                await probes.start()
            elif not running:
                await _stop(probes)
                probes, nodes = None, ()
                emit(HostState(SLURM_HOST, False, waiting_reason(record, state)))
            await asyncio.sleep(2 * interval)
    finally:
        await _stop(probes)


async def _stop(probes: ProbeSet | None) -> None:
    if probes is not None:
        await probes.stop()


def _current_allocation(
    job: str | None,
) -> tuple[jobs.JobRecord | None, slurm.SlurmState | None]:
    if not job or not jobs.exists(job):
        return None, None
    record = jobs.load(job)
    if not record.scheduler_id:
        return record, None
    return record, slurm.job_state(record.scheduler_id)


def waiting_reason(record: jobs.JobRecord | None, state: slurm.SlurmState | None) -> str:
    """Why the grid shows no node: no job yet, the job waits (SLURM's reason), or it ended."""
    if record is None:
        return "no job yet: SLURM hands out nodes when a job starts"
    if state is None:
        return f"job {record.job}: not known to SLURM now ({record.state})"
    return f"job {record.job} (SLURM {record.scheduler_id}): {state.describe()}"
