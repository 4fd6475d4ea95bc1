"""A new user's mistakes on every `imgscale` subcommand: one stderr line naming the culprit, exit 2, no traceback."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from engine import cli
from engine.errors import UserError
from engine.recordio import MAGIC_BYTES


@pytest.fixture
def junk(tmp_path: Path) -> Path:
    """The wrong inputs a new user hands over: a plain file, an empty folder, a garbage tar, a bad hosts file,
    a class tree with one image, RecordIO files that are empty or foreign."""
    (tmp_path / "afile.txt").write_text("hi\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.tar").write_bytes(b"\x13\x37" * 2000)
    (tmp_path / "hosts_bad").write_text("localhost frobnicate=yes\n")
    (tmp_path / "tree" / "n001").mkdir(parents=True)
    (tmp_path / "tree" / "n001" / "a.jpg").write_bytes(b"\xff\xd8 not really")
    (tmp_path / "recbad").mkdir()
    (tmp_path / "recbad" / "a.rec").write_bytes(b"not recordio at all")
    (tmp_path / "empty.rec").write_bytes(b"")
    (tmp_path / "binary.toml").write_bytes(b"\xa5\xff\x00 not text")
    (tmp_path / "list.json").write_text("[1, 2]")
    return tmp_path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        status = cli.main(list(args))
    except SystemExit as exc:  # argparse's own errors
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line(capsys, args: list[str], culprit: str, status: int = 2) -> str:
    code, _out, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == status, err
    assert "Traceback" not in err
    assert lines and culprit in lines[-1], err
    # progress lines may come first; the error itself is the one line naming the command
    assert sum(1 for line in lines if line.startswith("imgscale ")) == 1, err
    return lines[-1]


def fill(args: list[str], root: Path) -> list[str]:
    return [a.replace("{t}", str(root)) for a in args]


CASES = [
    # a file where a folder (still to be created) must go: named, not a FileExistsError
    (["demo-data", "{t}/afile.txt/x.tar"], "afile.txt is a file"),
    (["demo-data", "--tree", "{t}/afile.txt/sub"], "afile.txt is a file"),
    (["extract", "{t}/garbage.tar", "{t}/afile.txt/root"], "afile.txt is a file"),
    (["split", "{t}/tree", "{t}/afile.txt/v"], "afile.txt is a file"),
    (["filter", "{t}/tree", "--dest", "{t}/afile.txt/x"], "afile.txt is a file"),
    (["place", "{t}/empty", "{t}/afile.txt/t", "{t}/v"], "afile.txt is a file"),
    (["disk", "{t}/tree", "{t}/afile.txt/sub"], "afile.txt is a file"),
    (["bench", "scaling", "--workers", "1", "--out", "{t}/afile.txt/sub"], "afile.txt is a file"),
    (["launch", "-n", "1", "--run-dir", "{t}/afile.txt/sub", "--", "true"], "afile.txt is a file"),
    (["prepare", "{t}/afile.txt/ws", "--demo"], "a file is in the way"),
    # demo-data: impossible sizes are refused before a file is written
    (["demo-data", "--corrupt", "-2", "{t}/o.tar"], "--corrupt -2"),
    (["demo-data", "--images-per-class", "-3", "{t}/o.tar"], "--images-per-class -3"),
    (["demo-data", "--max-side", "0", "{t}/o.tar"], "--max-side 0"),
    (["demo-data", "--size-scale", "0", "{t}/o.tar"], "--size-scale 0"),
    # disk: not a tar, no images, TARGET a file, impossible pack settings
    (["disk", "{t}/garbage.tar"], "garbage.tar is not a tar archive"),
    (["disk", "{t}/afile.txt"], "afile.txt is not a tar archive"),
    (["disk", "{t}/empty"], "empty holds no images"),
    (["disk", "{t}/tree", "{t}/afile.txt"], "afile.txt is a file"),
    (["disk", "{t}/tree", "--resize", "-1"], "--resize -1"),
    (["disk", "{t}/tree", "--quality", "500"], "--quality 500"),
    # filter / split: an empty ROOT is a wrong path, --dest a file
    (["filter", "{t}/empty"], "holds no class folders"),
    (["filter", "{t}/tree", "--min-images", "0", "--dest", "{t}/afile.txt"], "--dest"),
    (["split", "{t}/empty", "{t}/val"], "holds no class folders"),
    # list: a file where PREFIX's folder should be
    (["list", "{t}/afile.txt/train", "{t}/tree", "--recursive"], "PREFIX"),
    # prepare: bad numbers and sources are refused before the workspace saves them
    (["prepare", "{t}/afile.txt", "--demo"], "afile.txt is a file"),
    (["prepare", "{t}/ws", "--source", "{t}/empty"], "holds no images"),
    (["prepare", "{t}/ws", "--source", "{t}/garbage.tar"], "not a tar archive"),
    (["prepare", "{t}/ws", "--source", "{t}/tree", "--chunks", "0"], "--chunks 0"),
    (["prepare", "{t}/ws", "--source", "{t}/tree", "--num-thread", "-1"], "--num-thread -1"),
    (["prepare", "{t}/ws", "--source", "{t}/tree", "--quality", "0"], "--quality 0"),
    (["prepare", "{t}/ws", "--source", "{t}/tree", "--resize", "-3"], "--resize -3"),
    # probe
    (["probe", "--interval", "-1", "--once"], "--interval -1"),
    (["probe", "--count", "-2"], "--count -2"),
    # launch: numbers that could never work, a --run-dir that is a file
    (["launch", "-n", "1", "--root-port", "99999", "--", "true"], "--root-port 99999"),
    (["launch", "-n", "1", "--stall-timeout", "-1", "--", "true"], "--stall-timeout"),
    (["launch", "-n", "1", "--grace", "-5", "--", "true"], "--grace -5"),
    (["launch", "-n", "1", "--heartbeat-interval", "0", "--", "true"], "--heartbeat-interval 0"),
    (["launch", "-n", "1", "--exclude-after", "-1", "--", "true"], "--exclude-after -1"),
    (["launch", "-n", "1", "--run-dir", "{t}/afile.txt", "--", "true"], "--run-dir"),
    # attach / kill
    (["attach", "--lines", "-5", "no-such-job"], "--lines -5"),
    (["kill", "no-such-job", "--grace", "-1"], "--grace -1"),
    # train: values argparse accepts but training cannot use
    (["train", "--data-train", "{t}/tree", "--lr", "-1"], "--lr -1"),
    (["train", "--data-train", "{t}/tree", "--rgb-mean", "1,2"], "--rgb-mean"),
    (["train", "--data-train", "{t}/tree", "--model-prefix", "{t}/afile.txt/ck"], "--model-prefix"),
    (["train", "--config", "{t}/binary.toml"], "binary.toml: not a text file"),
    (["train", "--config", "{t}/list.json"], "list.json: give a table of options"),
    # check: files named explicitly must exist; -s and --port in range
    (["check", "--data-train", "{t}/tree", "--lst", "{t}/nope.lst"], "--lst"),
    (["check", "--data-train", "{t}/tree", "--label-map", "{t}/empty"], "--label-map"),
    (["check", "--data-train", "{t}/tree", "-s", "-1"], "-s -1"),
    (["check", "--data-train", "{t}/tree", "--port", "70000"], "--port 70000"),
    (["check", "--data-train", "{t}/tree", "-n", "0"], "-n 0: give 1 or more"),
    # bench: checked before the first run is launched
    (["bench", "scaling", "--workers", "1", "--out", "{t}/afile.txt"], "--out"),
    (["bench", "scaling", "--workers", "1", "--run-timeout", "-1"], "--run-timeout"),
    (["bench", "scaling", "--workers", "1", "--image-shape", "3,x"], "--image-shape"),
    (["bench", "scaling", "--workers", "1", "-H", "{t}/hosts_bad", "--out", "{t}/o"], "hosts_bad"),
    (["bench", "bandwidth", "--network", "foo"], "--network foo"),
    (["bench", "bandwidth", "--network", "resnet-7"], "no such depth"),
    (["bench", "scaling", "--networks", "resnet-7:32", "--workers", "1"], "no such depth"),
    (["bench", "bandwidth", "--size-mb", "-1"], "--size-mb"),
    (["bench", "bandwidth", "--gpus", "x", "--size-mb", "1"], "--gpus x"),
    (["bench", "model", "--network", "resnet-152", "--images-per-sec-1gpu", "-1"], "-1gpu -1"),
    (
        [
            "bench",
            "model",
            "--network",
            "resnet-152",
            "--images-per-sec-1gpu",
            "9",
            "--overlap",
            "5",
        ],
        "--overlap 5",
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "args, culprit", CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_mistake_gets_one_line_naming_it(junk, capsys, args, culprit):
    assert_one_line(capsys, fill(args, junk), culprit)


def test_refused_prepare_creates_no_workspace(junk, capsys):
    assert_one_line(
        capsys,
        fill(["prepare", "{t}/ws", "--source", "{t}/tree", "--chunks", "0"], junk),
        "--chunks",
    )
    assert not (junk / "ws").exists()


def test_refused_demo_leaves_no_partial_file(junk, capsys):
    assert_one_line(
        capsys, fill(["demo-data", "--images-per-class", "5:2", "{t}/o.tar"], junk), "5:2"
    )
    assert not list(junk.glob("o.tar*"))


def test_the_error_line_names_the_nested_subcommand(junk, capsys):
    """bench scaling's own --command option once replaced the name: 'imgscale None: …'."""
    line = assert_one_line(
        capsys, fill(["bench", "scaling", "--workers", "1", "--run-timeout", "0"], junk), "0"
    )
    assert line.startswith("imgscale bench scaling: ")
    line = assert_one_line(capsys, ["hosts", "check", "-H", str(junk / "nope")], "nope")
    assert line.startswith("imgscale hosts check: ")


def test_kill_all_reads_the_hosts_file_before_killing_anything(junk, capsys, monkeypatch):
    from engine.cluster.process import kill

    async def must_not_run(**_kw):
        raise AssertionError("local jobs killed before the bad hosts file was reported")

    monkeypatch.setattr(kill, "kill_everywhere", must_not_run)
    assert_one_line(capsys, ["kill", "--all", "-H", str(junk / "hosts_bad")], "hosts_bad")


def test_check_reports_data_that_mxnet_cannot_read(junk, capsys):
    from engine.train.check import ERROR, check_data_dirs
    from engine.train.facts import Facts, _bad_data

    problems = _bad_data(str(junk / "empty"), []) + _bad_data(
        str(junk / "recbad"), [str(junk / "recbad" / "a.rec"), str(junk / "empty.rec")]
    )
    assert problems == [
        f"{junk / 'empty'}: no .rec files here",
        f"{junk / 'recbad' / 'a.rec'} is not a RecordIO file (no record magic at its start)",
        f"{junk / 'empty.rec'} is empty",
    ]
    findings = check_data_dirs(Facts(bad_data=problems))
    assert [f.level for f in findings] == [ERROR] * 3


def test_train_data_that_is_not_recordio_is_named(junk):
    from engine.train.recfiles import rec_files

    with pytest.raises(UserError, match="a.rec is not a RecordIO file"):
        rec_files(str(junk / "recbad"))
    with pytest.raises(UserError, match="empty.rec is empty"):
        rec_files(str(junk / "empty.rec"))
    good = junk / "good.rec"
    good.write_bytes(MAGIC_BYTES + b"\0" * 4)
    assert rec_files(str(good)) == [str(good)]


def test_disk_still_estimates_a_real_tar(junk, capsys):
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as t:
        info = tarfile.TarInfo("n001_1.JPEG")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    with tarfile.open(junk / "ok.tar", "w") as outer:
        info = tarfile.TarInfo("n001.tar")
        info.size = len(inner.getvalue())
        outer.addfile(info, io.BytesIO(inner.getvalue()))
    code, out, err = run_cli(capsys, "disk", str(junk / "ok.tar"), str(junk))
    assert code == 0 and "extract" in out and not err


def test_tui_refuses_a_file_a_bad_hosts_file_and_a_bad_flag(junk, capsys):
    from engine import workspace as wsmod
    from tui.app import main

    assert main([str(junk / "afile.txt")]) == 2
    assert main(["--demo", str(junk / "afile.txt")]) == 2
    wsmod.create(junk / "ws", {"root": "images"})
    assert main([str(junk / "ws"), "--hosts", str(junk / "hosts_bad")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("imgscale-tui")]
    assert [("afile.txt is a file" in lines[0]), ("afile.txt is a file" in lines[1])] == [
        True,
        True,
    ]
    assert "hosts_bad, line 1" in lines[2] and "--bogus" in lines[3] and len(lines) == 4


def test_a_job_record_of_the_wrong_shape_is_named_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path))
    for name, text in (
        ("list-1", "[1, 2]"),
        ("fields-2", '{"job": "x", "processes": [{"bogus": 1}]}'),
    ):
        (tmp_path / "jobs" / name).mkdir(parents=True)
        (tmp_path / "jobs" / name / "job.json").write_text(text)
        assert_one_line(capsys, ["attach", name], f"{name}/job.json is not one imgscale wrote")
    code, out, err = run_cli(capsys, "jobs")  # the listing skips them
    assert code == 0 and "no jobs recorded" in out and not err


def test_blocking_file_finds_the_file_in_the_way(tmp_path):
    from engine.paths import blocking_file

    (tmp_path / "f").write_text("x")
    assert blocking_file(tmp_path / "f" / "a" / "b") == tmp_path / "f"
    assert blocking_file(tmp_path / "f") == tmp_path / "f"
    assert blocking_file(tmp_path / "new" / "deeper") is None
    assert blocking_file(tmp_path) is None


@pytest.mark.parametrize(
    "argv",
    [["train", "--benchmark"], ["bench", "bandwidth"], ["bench", "scaling", "--workers", "1"]],
)
def test_the_mxnet_engine_where_mxnet_is_absent_is_one_line_naming_python_3_11(
    argv, monkeypatch, capsys
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mxnet" else real(name, *a)
    )
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "mxnet is not installed here" in err and "Python <= 3.11" in err
    assert "pip install mxnet==1.9.1" in err
