"""A training job under SLURM: its plan file for the driver, submitting, re-opening, --dry-run's script.

The login-node side of `imgscale launch --launcher slurm`: engine.cluster.slurm.job submits and
follows the job; this module says what runs inside the allocation (this package's slurm_driver, with
a plan naming the job's engine) and applies the engine's resume arguments on a relaunch.
"""

from __future__ import annotations

import asyncio
import os
import sys

from engine.cluster.process import jobs
from engine.cluster.remote_cmd import with_python
from engine.cluster.slurm import sbatch as slurm
from engine.cluster.slurm.job import (
    ResumeHook,
    SlurmJob,
    SlurmPlanner,
    request_of,
    require_request,
)
from engine.cluster.slurm.steps import attempt_dir
from engine.events import EventSink
from engine.train.logparse import progress_of

from . import registry
from .slurm_driver import Plan
from .spec import LaunchSpec, resume_hook

DRIVER = "engine.train.launch.slurm_driver"


def plan_of(record: jobs.JobRecord, attempt: int, command: tuple[str, ...]) -> Plan:
    """The driver's plan for one attempt: the engine, the process counts, the command and env."""
    spec = LaunchSpec.from_dict(record.launch_args)
    engine = registry.engine_for(spec.engine, command)
    workers, servers = spec.num_workers, spec.num_servers
    return Plan(
        job=record.job,
        attempt=attempt,
        engine=engine.name,
        command=with_python(command, sys.executable),
        num_workers=workers,
        num_servers=(workers if servers is None else servers) if engine.has_servers else 0,
        env=dict(spec.env),
        cwd=spec.cwd or os.getcwd(),
        run_root=spec.run_root,
        gpus_per_node=int(spec.slurm.get("gpus_per_node") or 0),
        interface=spec.interface,
    )


def write_plan(record: jobs.JobRecord, attempt: int, command: tuple[str, ...], folder: str) -> str:
    """Write the attempt's plan.json (mode 0600: it may hold --env secrets); its working folder."""
    plan = plan_of(record, attempt, command)
    plan.write(f"{folder}/plan.json")
    return plan.cwd


PLANNER = SlurmPlanner(DRIVER, write_plan)


async def launch(
    spec_args: dict, *, sink: EventSink | None = None, resume: ResumeHook | None = None
) -> SlurmJob:
    """Record and submit a new SLURM job (``spec_args``: the LaunchSpec as a dict)."""
    kind = registry.job_kind(spec_args["command"])
    record = _record(spec_args, jobs.choose_job_name(spec_args.get("job"), kind), kind)
    await asyncio.to_thread(require_request, request_of(record))
    alerts = LaunchSpec.from_dict(spec_args).alert_options()
    job = SlurmJob(
        jobs.save(record),
        request_of(record),
        PLANNER,
        sink=sink,
        resume=resume,
        alerts=alerts,
        reader=progress_of,
    )
    await job.start()
    return job


def open_job(
    record: jobs.JobRecord,
    *,
    sink: EventSink | None = None,
    resume: ResumeHook | None = None,
    tail_lines: int | None = None,
) -> SlurmJob:
    """A recorded SLURM job, ready to ``attach()``; relaunches resume as its engine does."""
    spec = LaunchSpec.from_dict(record.launch_args)
    resume = resume_hook(spec, resume)
    return SlurmJob(
        record,
        request_of(record),
        PLANNER,
        sink=sink,
        resume=resume,
        tail_lines=tail_lines,
        alerts=spec.alert_options(),
        reader=progress_of,
    )


def _record(spec_args: dict, name: str, kind: str) -> jobs.JobRecord:
    return jobs.JobRecord(name, kind, tuple(spec_args["command"]), None, (), launch_args=spec_args)


def dry_run_script(spec_args: dict) -> str:
    """What `--dry-run` prints: the batch script the job would be submitted with."""
    record = _record(spec_args, spec_args.get("job") or "JOB", "train")  # nothing is saved
    folder = attempt_dir(spec_args.get("run_root", jobs.DEFAULT_RUN_ROOT), record.job, 0)
    plan = plan_of(record, 0, record.command)
    engine = registry.engine_named(plan.engine)
    what = f"workers, {plan.num_servers} servers, 1 scheduler" if engine.has_servers else "ranks"
    lines = [
        f"# {plan.engine} job: {plan.num_workers} {what}",
        f"# processes are placed on the allocated nodes and started with srun by {DRIVER}",
    ]
    script = slurm.batch_script(
        request_of(record),
        job=record.job,
        attempt=0,
        python=spec_args.get("python") or sys.executable,
        plan_path=f"{folder}/plan.json",
        output=f"{folder}/slurm.out",
        workdir=plan.cwd,
        driver=DRIVER,
    )
    return "\n".join(lines) + "\n" + script
