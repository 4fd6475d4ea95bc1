"""`imgscale report JOB`: one HTML file with the job's curves, attempts, options and hosts, plots as PNG."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import torchdata
from trainrun import ROOT

from engine import cli
from engine.cluster.process import jobs
from engine.train import report
from engine.train.launch.launch import LaunchSpec, launch

pytest.importorskip("matplotlib", reason="the report's plots need matplotlib: pip install .[plot]")
pytest.importorskip("torch", reason="the torch engine is an extra: pip install .[torch]")

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = ("epochs", "intervals", "learning_rate", "throughput", "timeline")
SECTIONS = ("Curves", "Images/s per host", "Faults and relaunches", "Options", "Hosts")


@pytest.fixture(scope="module")
def trained_job(tmp_path_factory):
    """A 2-rank torch job of 2 epochs on 4 demo classes, launched by the local launcher."""
    tmp = tmp_path_factory.mktemp("report")
    data = torchdata.demo_rec(tmp / "demo", 4, 32, 0.75, 36)
    home = tmp / "state"
    flags = [
        "--data-train", data / "demo_train.rec", "--data-val", data / "demo_val.rec",
        "--image-shape", "3,32,32", "--num-layers", "18", "--width", "16", "--num-classes", "4",
        "--batch-size", "16", "--disp-batches", "1", "--data-nthreads", "1", "--loss", "ce",
        "--num-epochs", "2", "--kv-store", "dist_sync", "--tensorboard-dir", "off",
    ]  # fmt: skip
    spec = LaunchSpec(
        command=(sys.executable, "-m", "engine.train.torch.run", *map(str, flags)),
        num_workers=2,
        launcher="local",
        engine="torch",
        run_root=str(tmp / "runs"),
        cwd=ROOT,
        env={"OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT},
    )

    async def run() -> str:
        job = await launch(spec)
        await asyncio.wait_for(job.wait(), 180)
        await job.close()
        return job.job_id

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGSCALE_HOME", str(home))  # the job record
        job_id = asyncio.run(run())
    return job_id, home, tmp


def _report(home, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "IMGSCALE_HOME": str(home), "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-m", "engine", "report", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _images(page: str) -> dict[str, bytes]:
    found = re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    return {name: base64.b64decode(data) for name, data in found}


def test_report_of_a_launched_torch_job_embeds_its_plots_as_png(trained_job):
    job_id, home, tmp = trained_job
    out = _report(home, job_id, "-o", tmp / "job.html")
    assert out.returncode == 0, out.stderr
    page = (tmp / "job.html").read_text()
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page, heading
    images = _images(page)
    assert set(images) == set(PLOTS)
    assert all(png.startswith(PNG) for png in images.values())
    assert "engine.train.torch.run" in page and "worker-1" in page  # the command, the processes


def test_report_png_writes_the_plots_alone(trained_job):
    job_id, home, tmp = trained_job
    out = _report(home, job_id, "--png", tmp / "plots")
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in (tmp / "plots").iterdir())
    assert names == sorted(f"{n}.png" for n in PLOTS)
    assert all(p.read_bytes().startswith(PNG) for p in (tmp / "plots").iterdir())
    assert not os.path.exists(os.path.join(ROOT, f"{job_id}-report.html"))  # no HTML without -o


def _copy_attempt(record, root, attempt: int, failed_rank: int | None):
    """The job's processes with their logs copied to ROOT/aATTEMPT, `failed_rank` having exited 1."""
    procs = []
    for proc in record.processes:
        prefix = root / f"a{attempt}" / proc.name
        prefix.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(proc.log_path, f"{prefix}.log")
        pathlib.Path(f"{prefix}.status").write_text("1\n" if proc.rank == failed_rank else "0\n")
        procs.append(dataclasses.replace(proc, prefix=str(prefix)))
    return tuple(procs)


def test_report_shows_a_failed_past_attempt_on_the_time_line(trained_job, monkeypatch, tmp_path):
    """A relaunched job: the first attempt's processes (worker-1 exited 1) stay in the table."""
    job_id, home, _tmp = trained_job
    monkeypatch.setenv("IMGSCALE_HOME", str(home))
    record = jobs.load(job_id)
    root = tmp_path / "runs" / "relaunched"
    relaunched = dataclasses.replace(
        record,
        job="relaunched",
        attempt=1,
        restarts=1,
        past_processes=_copy_attempt(record, root, 0, failed_rank=1),
        processes=_copy_attempt(record, root, 1, failed_rank=None),
    )
    jobs.save(relaunched)
    out = _report(home, "relaunched", "-o", tmp_path / "r.html")
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "r.html").read_text()
    assert "attempt 1, restarts 1" in page
    cells = r"<tr><td>(\d)</td><td>(worker-\d)</td>(?:<td>[^<]*</td>){3}<td>([^<]*)</td>"
    assert re.findall(cells, page) == [
        ("0", "worker-0", "0"),
        ("0", "worker-1", "1"),
        ("1", "worker-0", "0"),
        ("1", "worker-1", "0"),
    ]
    assert set(_images(page)) == set(PLOTS)


def test_report_of_a_job_that_does_not_exist_is_one_line_naming_it(tmp_path):
    out = _report(tmp_path / "state", "no-such-job")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no-such-job" in out.stderr


def test_report_is_a_registered_command():
    assert cli.COMMAND_MODULES["engine.train.cli_report"] == ("report",)


def test_report_without_matplotlib_still_writes_the_html_saying_why(
    trained_job, monkeypatch, tmp_path, capsys
):
    job_id, home, _tmp = trained_job
    monkeypatch.setenv("IMGSCALE_HOME", str(home))
    monkeypatch.setattr(report, "can_plot", lambda: False)
    assert cli.main(["report", job_id, "-o", str(tmp_path / "plain.html")]) == 0
    page = (tmp_path / "plain.html").read_text()
    assert html.escape(report.NO_MATPLOTLIB) in page and "<img" not in page
    assert all(f"<h2>{heading}</h2>" in page for heading in SECTIONS)
    assert report.NO_MATPLOTLIB in capsys.readouterr().out
