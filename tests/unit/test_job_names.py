"""Issue 11 item 12: a job name read from a record or a command line never leads out of the jobs folder."""

import json

import pytest

from engine.cli import main
from engine.cluster.process import jobs
from engine.errors import UserError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "state"))
    return tmp_path


def plant(home, folder, job):
    record = {"job": job, "kind": "command", "command": ["true"], "hosts_file": None,
              "host_names": ["localhost"], "state": "running"}  # fmt: skip
    path = home / "state" / "jobs" / folder / "job.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


def outside_files(home):
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if "state" not in p.parts)


def test_kill_all_skips_a_record_naming_a_path_and_writes_nothing_outside(home, capsys):
    plant(home, "evil", "../../x")
    assert main(["kill", "--all"]) == 0
    assert outside_files(home) == []
    assert not (home / "state" / "x").exists()


def test_a_record_naming_another_job_is_refused(home):
    plant(home, "evil", "../../x")
    with pytest.raises(UserError, match=r"names job '../../x', not 'evil'"):
        jobs.load("evil")


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x\0y"])
def test_every_reader_refuses_a_name_that_is_no_job_name(home, name):
    for read in (jobs.load, jobs.stop_marker, jobs.supervisor_lock, jobs.exists):
        with pytest.raises(UserError, match="is not a job name"):
            read(name)
