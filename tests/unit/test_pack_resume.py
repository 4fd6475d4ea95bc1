"""An interrupted `pack` (SIGKILL, torn writes, a full disk) resumes and ends with the same bytes."""

import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import psutil
import pytest
from tree_helpers import sigkill, start_until_it_stops, tmpfs

from engine.errors import UserError
from engine.prep import pack
from engine.prep.pack import PackOptions

ENV = dict(os.environ, OMP_NUM_THREADS="1")
IMGSCALE = pathlib.Path(sys.executable).with_name("imgscale")
DEADLINE_S = 60.0
COUNT = 480  # enough that a run lasts many batches; the kill comes after two
OPTIONS = ["--resize", "128", "--quality", "85"]  # enlarging tiny images gives each one real work


def imgscale(*argv: str) -> list[str]:
    return (
        [str(IMGSCALE), *argv] if IMGSCALE.exists() else [sys.executable, "-m", "engine.cli", *argv]
    )


def make_dataset(base: pathlib.Path, count: int) -> pathlib.Path:
    root = base / "images"
    rng = np.random.default_rng(3)
    for i in range(count):
        folder = root / f"c{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        img = cv2.resize(
            rng.integers(0, 255, (3, 4, 3), dtype=np.uint8), (32, 24), interpolation=cv2.INTER_CUBIC
        )
        (folder / f"{i:04d}.jpg").write_bytes(cv2.imencode(".jpg", img)[1].tobytes())
    (root / "c0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    lines = [f"{i}\t{i % 4}.000000\tc{i % 4}/{i:04d}.jpg\n" for i in range(count)]
    lines.insert(count // 3, f"{count}\t0.000000\tc0/broken.jpg\n")
    (base / "lists").mkdir()
    (base / "lists" / "data.lst").write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same list packed without interruption."""
    base = tmp_path_factory.mktemp("reference")
    root = make_dataset(base, COUNT)
    pack.pack_lists(
        [base / "lists" / "data.lst"], root, PackOptions(resize=128, quality=85, num_thread=2)
    )
    return base, root


def outputs(folder: pathlib.Path) -> dict[str, bytes]:
    return {
        name: (folder / name).read_bytes() for name in ("data.rec", "data.idx", "data.skipped.tsv")
    }


def fresh_copy(reference, tmp_path) -> pathlib.Path:
    base, _ = reference
    (tmp_path / "lists").mkdir()
    shutil.copy(base / "lists" / "data.lst", tmp_path / "lists" / "data.lst")
    return tmp_path / "lists"


def wait_for(condition, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


def lines_done(lists: pathlib.Path) -> int:
    try:
        return json.loads((lists / "data.pack.json").read_text())["lines_done"]
    except (OSError, ValueError, KeyError):
        return 0


# `imgscale pack` that stops itself (SIGSTOP) right after its N-th durable commit (the manifest
# write that ends PackChunk.save), so the test SIGKILLs it at a known record count, not a guessed time.
STOP_AFTER_COMMITS = r"""
import os, signal, sys
limit, commits = int(os.environ["STOP_AFTER_COMMITS"]), 0

def watch(frame, event, arg):
    global commits
    code = frame.f_code
    if event == "return" and code.co_name == "save" and code.co_filename.endswith("pack.py"):
        commits += 1
        if commits == limit:
            os.kill(os.getpid(), signal.SIGSTOP)

sys.setprofile(watch)
from engine.cli import main
sys.exit(main())
"""
COMMITS = 2  # batches durable before the kill


def kill_mid_run(lists: pathlib.Path, root: pathlib.Path, threads: str) -> int:
    """Run a real `imgscale pack` until COMMITS batches are durable, SIGKILL it there, and check its
    workers go too; the list lines done at the kill."""
    argv = ["pack", lists / "data", root, *OPTIONS, "--num-thread", threads, "--quiet"]
    env = {**ENV, "STOP_AFTER_COMMITS": str(COMMITS)}
    proc = start_until_it_stops(STOP_AFTER_COMMITS, argv, env, lists / "pack.log")
    done_at_stop = lines_done(lists)  # observed from the output: the manifest's durable count
    workers = psutil.Process(proc.pid).children()
    sigkill(proc)
    assert 0 < done_at_stop < COUNT and lines_done(lists) == done_at_stop
    assert not (lists / "data.rec").exists() and (lists / "data.rec.part").exists()
    wait_for(lambda: all(map(exited, workers)), "the workers to exit")  # end-of-file on their pipe
    return done_at_stop


def exited(process: psutil.Process) -> bool:
    """Gone, or a zombie nobody has reaped yet (orphans here may go to a PID 1 that never reaps)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_the_same_bytes(reference, tmp_path):
    lists = fresh_copy(reference, tmp_path)
    kill_mid_run(lists, reference[1], threads="2")
    done = subprocess.run(
        imgscale("pack", str(lists / "data"), str(reference[1]), *OPTIONS, "--num-thread", "1"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "resuming at list line" in done.stderr
    assert outputs(lists) == outputs(reference[0] / "lists")
    assert not list(lists.glob("*.part"))


@pytest.mark.slow
def test_torn_tail_after_kill_is_cut_off(reference, tmp_path):
    lists = fresh_copy(reference, tmp_path)
    done_at_kill = kill_mid_run(lists, reference[1], threads="1")
    for name in ("data.rec.part", "data.idx.part", "data.skipped.tsv.part"):
        with open(lists / name, "ab") as part:  # a write the kill cut in half
            part.write(b"\x0a\x23\xd7\xce half a record")
    result = pack.pack_lists(
        [lists / "data.lst"], reference[1], PackOptions(resize=128, quality=85)
    )
    assert result.chunks[0].resumed_at_line == done_at_kill
    assert outputs(lists) == outputs(reference[0] / "lists")


def test_finished_chunk_is_not_packed_again_but_changed_options_repack(reference, tmp_path):
    lists = fresh_copy(reference, tmp_path)
    root = reference[1]
    first = pack.pack_lists([lists / "data.lst"], root, PackOptions(resize=128, quality=85))
    stamp = (lists / "data.rec").stat().st_mtime_ns
    again = pack.pack_lists(
        [lists / "data.lst"], root, PackOptions(resize=128, quality=85, num_thread=2)
    )
    assert again.chunks[0].already_done and again.records == first.records == COUNT
    assert (lists / "data.rec").stat().st_mtime_ns == stamp
    other = pack.pack_lists([lists / "data.lst"], root, PackOptions(resize=32, quality=85))
    assert not other.chunks[0].already_done
    assert (lists / "data.rec").stat().st_size < len(outputs(reference[0] / "lists")["data.rec"])


def test_a_second_packer_of_the_same_chunk_is_refused(reference, tmp_path):
    lists = fresh_copy(reference, tmp_path)
    chunk = pack.Chunk(lists / "data.lst", str(reference[1]), PackOptions())
    try:
        with pytest.raises(UserError, match="being packed by another process"):
            pack.pack_lists([lists / "data.lst"], reference[1], PackOptions())
    finally:
        chunk.close()


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_file_size_limit_stops_cleanly_and_resumes(reference, tmp_path):
    lists = fresh_copy(reference, tmp_path)
    full = subprocess.run(
        imgscale("pack", str(lists / "data"), str(reference[1]), *OPTIONS, "--quiet"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        preexec_fn=_limit_file_size(200_000),
        check=False,
    )
    assert full.returncode == 2, full.stderr
    assert "disk full" in full.stderr and len(full.stderr.strip().splitlines()) == 1, full.stderr
    assert not (lists / "data.rec").exists() and not (lists / "data.idx").exists()
    resumed = pack.pack_lists(
        [lists / "data.lst"], reference[1], PackOptions(resize=128, quality=85)
    )
    assert resumed.chunks[0].resumed_at_line > 0
    assert outputs(lists) == outputs(reference[0] / "lists")


@pytest.fixture
def tiny_tmpfs(tmp_path):
    with tmpfs(tmp_path / "small", size="256k") as mount:
        yield mount


def test_full_tmpfs_leaves_nothing_that_looks_complete(reference, tmp_path, tiny_tmpfs):
    shutil.copy(reference[0] / "lists" / "data.lst", tiny_tmpfs / "data.lst")
    with pytest.raises(UserError, match="disk full"):
        pack.pack_lists(
            [tiny_tmpfs / "data.lst"], reference[1], PackOptions(resize=128, quality=85)
        )
    assert not (tiny_tmpfs / "data.rec").exists() and not (tiny_tmpfs / "data.idx").exists()
    assert json.loads((tiny_tmpfs / "data.pack.json").read_text())["complete"] is False
