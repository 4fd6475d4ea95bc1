"""Extraction: streams a tar of per-class tars into class folders, resumes after SIGKILL, refuses escapes."""

import gzip
import io
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time

import pytest
from tree_helpers import snapshot

from engine.cli import main
from engine.errors import UserError
from engine.events import SkippedItem, StageProgress
from engine.prep.demo import make_demo_tar, make_demo_tree
from engine.prep.extract import Manifest, extract_archive
from engine.prep.filter import filter_classes, filtered_root

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO = {"classes": 5, "images_per_class": (6, 10), "max_side": 64, "seed": 0, "corrupt": 2}


def reference_tree(tmp_path):
    make_demo_tree(tmp_path / "reference", **DEMO)
    return snapshot(tmp_path / "reference", with_journals=True)


def test_extracts_every_class_as_the_tree_generator_writes_it(tmp_path):
    make_demo_tar(tmp_path / "demo.tar", **DEMO)
    events = []
    result = extract_archive(tmp_path / "demo.tar", tmp_path / "root", on_event=events.append)
    assert snapshot(tmp_path / "root", with_journals=True) == reference_tree(tmp_path)
    assert (result.classes, result.already) == (5, 0)
    last = [e for e in events if isinstance(e, StageProgress)][-1]
    assert (last.done, last.total, last.unit) == (5, 5, "classes") and last.bytes_total > 0
    assert (
        not (tmp_path / "demo.tar.partial").exists() and (tmp_path / "demo.tar").exists()
    )  # source kept


def test_second_run_skips_finished_classes(tmp_path):
    make_demo_tar(tmp_path / "demo.tar", **DEMO)
    extract_archive(tmp_path / "demo.tar", tmp_path / "root")
    inode = next((tmp_path / "root").rglob("*.JPEG")).stat().st_ino
    again = extract_archive(tmp_path / "demo.tar", tmp_path / "root")
    assert (again.classes, again.already, again.images) == (0, 5, 0)
    assert next((tmp_path / "root").rglob("*.JPEG")).stat().st_ino == inode


def test_rerun_extracts_again_a_class_whose_folder_was_deleted(tmp_path):
    make_demo_tar(tmp_path / "demo.tar", **DEMO)
    root = tmp_path / "root"
    extract_archive(tmp_path / "demo.tar", root)
    gone = sorted(p for p in root.iterdir() if p.is_dir())[0]
    shutil.rmtree(gone)
    again = extract_archive(tmp_path / "demo.tar", root)
    assert (again.classes, again.already) == (1, 4)
    assert snapshot(root, with_journals=True) == reference_tree(tmp_path)


def test_rerun_after_filter_leaves_the_filtered_classes_where_filter_put_them(tmp_path):
    make_demo_tar(tmp_path / "demo.tar", **DEMO)
    root = tmp_path / "root"
    extract_archive(tmp_path / "demo.tar", root)
    filter_classes(root, min_images=9)
    moved = sorted(p.name for p in filtered_root(root).iterdir())
    assert moved  # the demo has classes of 6 to 10 images: some go
    again = extract_archive(tmp_path / "demo.tar", root)
    assert (again.classes, again.already) == (0, 5)
    assert not any((root / name).exists() for name in moved)


def test_compressed_archive_is_streamed(tmp_path):
    make_demo_tar(tmp_path / "demo.tar", **DEMO)
    (tmp_path / "demo.tar.gz").write_bytes(gzip.compress((tmp_path / "demo.tar").read_bytes()))
    extract_archive(tmp_path / "demo.tar.gz", tmp_path / "root")
    assert snapshot(tmp_path / "root", with_journals=True) == reference_tree(tmp_path)


def _open_writer(fifo, proc, deadline):
    """Open the FIFO for writing once the extractor has opened it for reading."""
    while time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
            return fd
        except OSError:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
    raise AssertionError("extractor never opened the pipe")


def _wait_for(condition, proc, deadline):
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no partial output in time"
        time.sleep(0.01)


def test_resumes_after_sigkill_mid_class(tmp_path):
    """The archive arrives through a pipe and stops inside the third class's tar; the extractor is
    killed while that class is half written; the rerun keeps classes 1-2 and redoes class 3."""
    tar = tmp_path / "demo.tar"
    make_demo_tar(tar, **DEMO)
    data = tar.read_bytes()
    with tarfile.open(tar) as t:
        members = t.getmembers()
    third = members[2]
    cut = third.offset_data + third.size - 512  # all but the end of the third class's tar
    fifo, root = tmp_path / "pipe.tar", tmp_path / "root"
    os.mkfifo(fifo)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "extract", str(fifo), str(root)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    try:
        fd = _open_writer(fifo, proc, deadline)
        view = memoryview(data)[:cut]
        while view:
            view = view[os.write(fd, view) :]
        partial = root / f".partial-{third.name[:-4]}"
        _wait_for(lambda: partial.is_dir() and any(partial.iterdir()), proc, deadline)
        proc.kill()
        proc.wait(timeout=30)
        os.close(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(Manifest(root).done) == sorted(m.name[:-4] for m in members[:2])
    kept = next((root / members[0].name[:-4]).iterdir())
    inode = kept.stat().st_ino

    result = extract_archive(tar, root)
    assert (result.already, result.classes) == (2, 3)
    # no leftovers, nothing missing or doubled
    assert snapshot(root, with_journals=True) == reference_tree(tmp_path)
    assert kept.stat().st_ino == inode  # finished classes were not rewritten


def test_stale_partial_folder_is_redone_cleanly(tmp_path):
    make_demo_tar(tmp_path / "demo.tar", **DEMO)
    with tarfile.open(tmp_path / "demo.tar") as tar:
        first = tar.getnames()[0][:-4]
    junk = tmp_path / "root" / f".partial-{first}"
    junk.mkdir(parents=True)
    (junk / "half_written.JPEG").write_bytes(b"\xff\xd8 torn")
    extract_archive(tmp_path / "demo.tar", tmp_path / "root")
    assert snapshot(tmp_path / "root", with_journals=True) == reference_tree(tmp_path)


# -- archives that try to write outside ROOT ---------------------------------------------------------
def _info(name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    return info, data


def _tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _nested(path, inner_members, outer_extra=()):
    inner = _tar_bytes([_info("n00000001_1.JPEG", b"ok")] + list(inner_members))
    path.write_bytes(_tar_bytes([_info("n00000001.tar", inner), *outer_extra]))
    return path


@pytest.mark.parametrize(
    "inner, outer",
    [
        ([_info("../../escaped.JPEG", b"x")], []),
        ([_info("/tmp/imgscale-absolute-escape.JPEG", b"x")], []),
        ([_info("sub/../../../escaped.JPEG", b"x")], []),
        ([_info("evil_link", kind=tarfile.SYMTYPE, link="/etc/passwd")], []),
        ([_info("evil_link", kind=tarfile.SYMTYPE, link="../../outside")], []),
        ([_info("evil_hard", kind=tarfile.LNKTYPE, link="../../outside")], []),
        ([], [_info("../escaped.JPEG", b"x")]),
        ([], [_info("/tmp/imgscale-absolute-escape.JPEG", b"x")]),
    ],
    ids=[
        "dotdot",
        "absolute",
        "nested-dotdot",
        "symlink-abs",
        "symlink-up",
        "hardlink-up",
        "outer-dotdot",
        "outer-abs",
    ],
)
def test_members_escaping_root_are_refused(tmp_path, inner, outer):
    tar = _nested(tmp_path / "evil.tar", inner, outer)
    (tmp_path / "work").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UserError, match="would escape"):
        extract_archive(tar, tmp_path / "work" / "root")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list((tmp_path / "work").glob("escaped*"))
    assert not pathlib.Path("/tmp/imgscale-absolute-escape.JPEG").exists()


def test_links_inside_the_class_are_skipped_and_reported(tmp_path):
    tar = _nested(
        tmp_path / "a.tar", [_info("alias.JPEG", kind=tarfile.SYMTYPE, link="n00000001_1.JPEG")]
    )
    events = []
    result = extract_archive(tar, tmp_path / "root", on_event=events.append)
    assert [p.name for p in (tmp_path / "root" / "n00000001").iterdir()] == ["n00000001_1.JPEG"]
    assert result.skipped and any(isinstance(e, SkippedItem) for e in events)


def test_damaged_inner_tar_is_reported_and_the_rest_extracted(tmp_path):
    good = _tar_bytes([_info("n00000002_1.JPEG", b"fine")])
    bad = b"this is not a tar archive at all" * 40
    (tmp_path / "a.tar").write_bytes(
        _tar_bytes([_info("n00000001.tar", bad), _info("n00000002.tar", good)])
    )
    result = extract_archive(tmp_path / "a.tar", tmp_path / "root")
    assert [name for name, _ in result.skipped] == ["n00000001.tar"]
    report = (tmp_path / "root_extract_skipped.tsv").read_text().splitlines()
    assert report[0] == "member\treason" and report[1].startswith(
        "n00000001.tar\tinner tar is damaged"
    )
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["n00000002"]


def test_cli_one_line_for_bad_paths(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "missing.tar"), str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err
    assert "missing.tar does not exist" in err and len(err.strip().splitlines()) == 1
    make_demo_tar(tmp_path / "demo.tar", classes=1, images_per_class=[1], max_side=16)
    (tmp_path / "file").write_text("x")
    assert main(["extract", str(tmp_path / "demo.tar"), str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "junk.tar").write_bytes(b"no tar here" * 100)
    assert main(["extract", str(tmp_path / "junk.tar"), str(tmp_path / "root")]) == 2
    assert "not a readable tar" in capsys.readouterr().err


def test_a_single_class_tar_is_refused_with_what_to_give(tmp_path):
    """A new user's mistake: one class's tar (loose images) instead of the tar of per-class tars."""
    one_class = tmp_path / "n01440764.tar"
    with tarfile.open(one_class, "w") as tar:
        info = tarfile.TarInfo("n01440764_1.JPEG")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(UserError, match="holds no per-class tars or class folders .*fall11_whole"):
        extract_archive(one_class, tmp_path / "root", check_space=False)
