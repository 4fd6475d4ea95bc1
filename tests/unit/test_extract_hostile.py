"""Issue 11 items 8-10: sparse bombs, truncated archives and over-long names in the ImageNet tar."""

import io
import shutil
import subprocess
import tarfile

import pytest
from tree_helpers import tmpfs

from engine.cli import main
from engine.events import SkippedItem
from engine.prep.disk import estimate_space
from engine.prep.extract import MAX_IMAGE_BYTES, extract_archive

GIB = 1 << 30


def tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def classes_tar(path, classes):
    """A tar of per-class tars, each holding two small images."""
    inner = [
        (f"{c}.tar", tar_bytes([(f"{c}_{i}.JPEG", b"x" * 600) for i in (1, 2)])) for c in classes
    ]
    path.write_bytes(tar_bytes(inner))
    return path


def sparse_class_tar(tmp_path, hole_bytes: int):
    """A tar of one class tar (GNU tar's own sparse format) holding an image and a hole."""
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is needed to write a sparse member")
    cls = tmp_path / "make" / "n00000001"
    cls.mkdir(parents=True)
    (cls / "n00000001_1.JPEG").write_bytes(b"x" * 600)
    with open(cls / "n00000001_2.JPEG", "wb") as f:
        f.truncate(hole_bytes)  # a hole: no disk used
    subprocess.run(["tar", "--sparse", "-cf", "../n00000001.tar", "."], cwd=cls, check=True)
    bomb = tmp_path / "bomb.tar"
    subprocess.run(["tar", "-cf", str(bomb), "n00000001.tar"], cwd=tmp_path / "make", check=True)
    shutil.rmtree(tmp_path / "make")
    assert bomb.stat().st_size < 64 << 10
    return bomb


@pytest.fixture
def sparse_bomb(tmp_path):
    """A class tar holding an image and a 2 GiB hole."""
    return sparse_class_tar(tmp_path, 2 * GIB)


def test_disk_counts_a_sparse_member_extract_writes_at_its_real_size(tmp_path):
    sparse = sparse_class_tar(tmp_path, 200 << 20)  # under MAX_IMAGE_BYTES: extract writes it
    rows = {r.stage: r for r in estimate_space(sparse, tmp_path)}
    assert rows["extract"].need_bytes >= 200 << 20


def test_disk_does_not_count_a_sparse_member_extract_skips(tmp_path, sparse_bomb):
    rows = {r.stage: r for r in estimate_space(sparse_bomb, tmp_path)}
    assert rows["extract"].need_bytes < 1 << 20


def test_a_huge_sparse_member_is_refused_and_the_rest_extracted(tmp_path, sparse_bomb):
    events = []
    extract_archive(sparse_bomb, tmp_path / "root", on_event=events.append, check_space=False)
    files = {p.name: p.stat().st_size for p in (tmp_path / "root").rglob("*") if p.is_file()}
    assert files == {"n00000001_1.JPEG": 600}
    (skip,) = [e for e in events if isinstance(e, SkippedItem)]
    assert skip.path.endswith("n00000001_2.JPEG") and "sparse" in skip.reason
    assert f"{2 * GIB:,} bytes" in skip.reason and 2 * GIB > MAX_IMAGE_BYTES


def test_a_full_disk_leaves_no_partial_file_behind(tmp_path):
    tar = tmp_path / "a.tar"
    tar.write_bytes(
        tar_bytes([("n00000001.tar", tar_bytes([("n00000001_1.JPEG", b"y" * (3 << 20))]))])
    )
    with tmpfs(tmp_path / "small", "1m") as small:
        with pytest.raises(Exception, match="No space left"):
            extract_archive(tar, small / "root", check_space=False)
        assert [p for p in small.rglob("*") if p.is_file() and ".imgscale" not in p.parts] == []


@pytest.fixture
def sparse_class_member(tmp_path):
    """An archive whose first class tar is a 10 GiB sparse member (all holes), then a real class."""
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is needed to write a sparse member")
    make = tmp_path / "make"
    make.mkdir()
    with open(make / "n00000001.tar", "wb") as f:
        f.truncate(10 * GIB)
    (make / "n00000002.tar").write_bytes(tar_bytes([("n00000002_1.JPEG", b"x" * 600)]))
    tar = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(tar), "n00000001.tar", "n00000002.tar"], cwd=make)
    shutil.rmtree(make)
    assert tar.stat().st_size < 64 << 10
    return tar


def test_a_sparse_class_tar_is_reported_not_made_an_empty_class(tmp_path, sparse_class_member):
    events = []
    result = extract_archive(sparse_class_member, tmp_path / "root", on_event=events.append)
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["n00000002"]
    (skip,) = [e for e in events if isinstance(e, SkippedItem)]
    assert skip.path == "n00000001.tar" and "sparse" in skip.reason
    assert (result.classes, len(result.skipped)) == (1, 1)
    assert "n00000001.tar" in (tmp_path / "root_extract_skipped.tsv").read_text()


def test_disk_does_not_count_the_sparse_class_tar_extract_skips(tmp_path, sparse_class_member):
    rows = {r.stage: r for r in estimate_space(sparse_class_member, tmp_path)}
    assert rows["extract"].need_bytes < 1 << 20


@pytest.mark.parametrize("kept", [0, 2])
def test_a_cut_inside_a_member_keeps_the_finished_classes_and_says_how_many(tmp_path, capsys, kept):
    whole = classes_tar(tmp_path / "whole.tar", [f"n0000000{i}" for i in range(1, 5)])
    with tarfile.open(whole) as tar:
        cut_member = tar.getmembers()[kept]
    end = cut_member.offset_data + 700  # inside the class tar after the kept ones
    (tmp_path / "cut.tar").write_bytes(whole.read_bytes()[:end])
    assert main(["extract", str(tmp_path / "cut.tar"), str(tmp_path / "root")]) != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "truncated" in last and "ends inside a member" in last
    classes = sorted(p.name for p in (tmp_path / "root").iterdir())
    assert classes == [f"n0000000{i}" for i in range(1, kept + 1)]
    assert ("the 2 finished classes before the cut are kept" if kept else "none is kept") in last


@pytest.mark.parametrize("cut", ["boundary", "mid-header"])
def test_a_truncated_archive_says_truncated_and_fails(tmp_path, capsys, cut):
    whole = classes_tar(tmp_path / "whole.tar", [f"n0000000{i}" for i in range(1, 7)])
    with tarfile.open(whole) as tar:
        members = tar.getmembers()
    end = members[2].offset + (0 if cut == "boundary" else 200)  # 2 of 6 classes complete
    (tmp_path / "cut.tar").write_bytes(whole.read_bytes()[:end])
    assert main(["extract", str(tmp_path / "cut.tar"), str(tmp_path / "root")]) != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("imgscale extract: ") and "truncated" in last
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["n00000001", "n00000002"]


def test_a_whole_archive_is_not_called_truncated(tmp_path):
    whole = classes_tar(tmp_path / "whole.tar", ["n00000001", "n00000002"])
    assert extract_archive(whole, tmp_path / "root").classes == 2


def test_one_over_long_name_is_skipped_and_reported_the_rest_extracted(tmp_path, capsys):
    long_name = "n00000001_" + "x" * 300 + ".JPEG"
    inner = tar_bytes([(long_name, b"a" * 600), ("n00000001_2.JPEG", b"b" * 600)])
    tar = tmp_path / "a.tar"
    tar.write_bytes(
        tar_bytes(
            [("n00000001.tar", inner), ("n00000002.tar", tar_bytes([("n00000002_1.JPEG", b"c")]))]
        )
    )
    assert main(["extract", str(tar), str(tmp_path / "root")]) == 0
    names = sorted(p.name for p in (tmp_path / "root").rglob("*.JPEG"))
    assert names == ["n00000001_2.JPEG", "n00000002_1.JPEG"]
    report = (tmp_path / "root_extract_skipped.tsv").read_text().splitlines()
    assert len(report) == 2 and "name too long" in report[1] and len(report[1]) < 300
