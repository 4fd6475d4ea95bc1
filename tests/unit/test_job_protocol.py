"""Both kinds of job (SSH-supervised ``Job``, ``SlurmJob``) are the declared ``ClusterJob``, which the
console's ConsoleJob and Session hold: checked by mypy and by their signatures at run time."""

from __future__ import annotations

import inspect
import pathlib
import subprocess
import sys

import pytest

from engine.cluster.process.jobevents import ClusterJob
from engine.cluster.process.supervisor import Job
from engine.cluster.slurm.job import SlurmJob

ROOT = pathlib.Path(__file__).resolve().parents[2]
MEMBERS = [n for n in vars(ClusterJob) if not n.startswith("_")]


@pytest.mark.parametrize("cls", [Job, SlurmJob])
def test_each_job_kind_has_every_member_of_the_protocol_with_its_signature(cls):
    assert {"job_id", "status", "events", "stop", "relaunch", "close"} <= set(MEMBERS)
    for name in MEMBERS:
        declared, own = inspect.getattr_static(ClusterJob, name), getattr(cls, name)
        if isinstance(declared, property):
            assert isinstance(inspect.getattr_static(cls, name), property), name
            continue
        assert inspect.signature(own) == inspect.signature(declared), name
        assert inspect.iscoroutinefunction(own) == inspect.iscoroutinefunction(declared), name
    declares_sink = [k for k in cls.__mro__[1:] if "sink" in vars(k).get("__annotations__", {})]
    assert declares_sink and declares_sink[0] is not ClusterJob  # not only the protocol says so


HOLDS = """
from engine.cluster.process.jobevents import ClusterJob
from engine.cluster.slurm.job import SlurmJob
from engine.cluster.process.supervisor import Job


def held(job: Job, slurm: SlurmJob) -> list[ClusterJob]:
    return [job, slurm]


class Lookalike:  # the old way: the same names by convention, some missing
    job_id = "x"

    async def stop(self) -> None: ...


def refused(job: Lookalike) -> ClusterJob:
    return job  # line 18
"""


def test_mypy_accepts_both_job_kinds_as_the_protocol_and_refuses_a_lookalike(tmp_path):
    source = tmp_path / "holds.py"
    source.write_text(HOLDS)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache"), str(source)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "holds.py:18:" in errors[0], out.stdout
