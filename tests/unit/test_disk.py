"""disk: estimates from real samples, and a stage that cannot fit refuses to start with the numbers."""

import pathlib

import pytest

from engine.cli import main
from engine.errors import StageRefused
from engine.prep import disk
from engine.prep.demo import make_demo_tar, make_demo_tree
from engine.prep.extract import extract_archive
from engine.prep.options import PackOptions


def fake_free(monkeypatch, free_bytes):
    monkeypatch.setattr(disk, "free_space", lambda path: (free_bytes, pathlib.Path("/fake-mount")))


def test_ensure_space_refuses_with_the_numbers(monkeypatch, tmp_path):
    fake_free(monkeypatch, 1000)
    with pytest.raises(StageRefused) as info:
        disk.ensure_space("pack", 5 * 1024 * 1024, tmp_path)
    message = str(info.value)
    assert "pack needs 5.2 MiB" in message and "only 1000 B is free on /fake-mount" in message
    disk.ensure_space("pack", 900, tmp_path)  # fits with the margin: no error


def test_extract_refuses_before_writing_anything(monkeypatch, tmp_path):
    make_demo_tar(tmp_path / "demo.tar", classes=2, images_per_class=[3, 3], max_side=32)
    fake_free(monkeypatch, 100)
    with pytest.raises(StageRefused, match="extract needs"):
        extract_archive(tmp_path / "demo.tar", tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_pass_through_estimate_is_the_source_size(tmp_path):
    summary = make_demo_tree(tmp_path / "tree", classes=3, images_per_class=(4, 6), max_side=64)
    rows = disk.estimate_space(tmp_path / "tree", tmp_path, PackOptions(pass_through=True))
    pack = next(r for r in rows if r.stage == "pack")
    assert abs(pack.need_bytes - summary.bytes) <= disk.RECORD_OVERHEAD * summary.images
    assert [r.stage for r in rows] == ["list", "pack"]


def test_resize_changes_the_estimate_the_right_way(tmp_path):
    make_demo_tree(tmp_path / "tree", classes=2, images_per_class=(8, 8), seed=1)
    small = disk.estimate_space(tmp_path / "tree", tmp_path, PackOptions(resize=64, quality=90))
    large = disk.estimate_space(tmp_path / "tree", tmp_path, PackOptions(resize=480, quality=95))
    need = {r.stage: r.need_bytes for r in small}, {r.stage: r.need_bytes for r in large}
    assert 0 < need[0]["pack"] < need[1]["pack"]


def test_tar_estimate_has_an_extract_row_of_the_archive_size(tmp_path):
    make_demo_tar(tmp_path / "demo.tar", classes=2, images_per_class=[4, 4], max_side=64)
    rows = disk.estimate_space(tmp_path / "demo.tar", tmp_path, PackOptions(resize=32, quality=90))
    extract_row = next(r for r in rows if r.stage == "extract")
    assert extract_row.need_bytes == (tmp_path / "demo.tar").stat().st_size
    assert next(r for r in rows if r.stage == "pack").need_bytes < extract_row.need_bytes


def test_free_space_of_a_path_not_yet_created(tmp_path):
    free, mount = disk.free_space(tmp_path / "not" / "yet")
    assert free > 0 and mount.is_dir() and tmp_path.resolve().is_relative_to(mount)


def test_cli_prints_the_table_and_fails_when_it_does_not_fit(monkeypatch, tmp_path, capsys):
    make_demo_tree(tmp_path / "tree", classes=2, images_per_class=(3, 3), max_side=32)
    assert main(["disk", str(tmp_path / "tree"), "--resize", "32"]) == 0
    out = capsys.readouterr().out
    assert "pack" in out and "fits" in out
    fake_free(monkeypatch, 10)
    assert main(["disk", str(tmp_path / "tree")]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_cli_missing_source_is_one_line(tmp_path, capsys):
    assert main(["disk", str(tmp_path / "nothing.tar")]) == 2
    err = capsys.readouterr().err
    assert "nothing.tar does not exist" in err and len(err.strip().splitlines()) == 1


def test_moves_to_another_file_system_must_fit_there(tmp_path, monkeypatch):
    import os
    import shutil
    import tempfile

    from engine.prep.split import split_validation

    shm = pathlib.Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm as a second file system to move across")
    make_demo_tree(tmp_path / "tree", classes=2, images_per_class=[4, 4], max_side=32)
    make_demo_tree(tmp_path / "tree2", classes=2, images_per_class=[4, 4], max_side=32)
    other = pathlib.Path(tempfile.mkdtemp(dir=shm))
    try:
        fake_free(monkeypatch, 10)
        # The same disk: renames need no space.
        split_validation(tmp_path / "tree", tmp_path / "val", per_class=1)
        with pytest.raises(StageRefused, match="split needs"):
            split_validation(tmp_path / "tree2", other / "val", per_class=1)
        assert not (other / "val").exists() and len(list((tmp_path / "tree2").rglob("*.JPEG"))) == 8
    finally:
        shutil.rmtree(other)


def test_pack_estimate_matches_what_pack_writes(tmp_path):
    """With the whole set in the sample, the estimate is the packer's output size within a few %."""
    from engine.prep.lst import write_lists
    from engine.prep.pack import PackOptions, pack_lists

    make_demo_tree(tmp_path / "tree", classes=3, images_per_class=[12, 15, 20], seed=4, corrupt=2)
    rows = disk.estimate_space(tmp_path / "tree", tmp_path, PackOptions(resize=96, quality=90))
    estimate = next(r.need_bytes for r in rows if r.stage == "pack")
    lists = write_lists(tmp_path / "lists" / "all", tmp_path / "tree", recursive=True)
    pack_lists(lists, tmp_path / "tree", PackOptions(resize=96, quality=90, num_thread=1))
    written = sum(p.stat().st_size for p in (tmp_path / "lists").glob("*.rec"))
    written += sum(p.stat().st_size for p in (tmp_path / "lists").glob("*.idx"))
    assert 0.9 < estimate / written < 1.15
