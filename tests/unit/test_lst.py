"""The list stage writes the same .lst bytes as MXNet's `im2rec.py --list`, and reports what it cannot list."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from engine.errors import UserError
from engine.events import SkippedItem
from engine.prep import lst
from engine.prep.report import read_report

IM2REC = pathlib.Path(sys.prefix) / "lib/python3.11/site-packages/mxnet/tools/im2rec.py"

COMBOS = {
    "recursive": ["--recursive"],
    "chunks-no-shuffle": ["--recursive", "--chunks", "3", "--no-shuffle"],
    "chunks-train-test-val": [
        "--recursive",
        "--chunks",
        "2",
        "--train-ratio",
        "0.6",
        "--test-ratio",
        "0.2",
    ],
    "flat": [],
    "train-val-exts": ["--recursive", "--train-ratio", "0.8", "--exts", ".jpg", ".jpeg"],
    "train-test-only": [
        "--recursive",
        "--chunks",
        "4",
        "--train-ratio",
        "0.5",
        "--test-ratio",
        "0.5",
    ],
    "many-chunks": ["--recursive", "--chunks", "7"],
}

# Runs the reference im2rec's own argument parsing and make_list for each combo in one process,
# so mxnet is imported once.
DRIVER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("im2rec", sys.argv[1])
im2rec = importlib.util.module_from_spec(spec); spec.loader.exec_module(im2rec)
for argv in json.loads(sys.argv[2]):
    sys.argv = ["im2rec.py", "--list"] + argv
    print("#", json.dumps(argv)); im2rec.make_list(im2rec.parse_args())
"""


def make_tree(root: pathlib.Path) -> pathlib.Path:
    """A class tree with mixed-case extensions, a nested folder, root-level images and a linked class."""
    for cls, count in (("n01", 5), ("n02", 3), ("n03", 6), ("n04/sub", 4)):
        folder = root / cls
        folder.mkdir(parents=True)
        for i in range(count):
            ext = (".JPEG", ".jpg", ".png", ".jpeg")[i % 4]
            (folder / f"img_{i:02d}{ext}").write_bytes(b"x")
        (folder / "notes.txt").write_text("not an image")
    (root / "n04" / "top.jpg").write_bytes(b"x")
    (root / "loose.jpg").write_bytes(b"x")
    (root / "aa_linked").symlink_to(root / "n02", target_is_directory=True)  # im2rec follows links
    return root


def run_im2rec(tmp_path, root, combos):
    prefixes = {}
    argvs = []
    for name, options in combos.items():
        out = tmp_path / "ref" / name
        out.mkdir(parents=True)
        prefixes[name] = out / "data"
        argvs.append([str(out / "data"), str(root), *options])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(IM2REC), json.dumps(argvs)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    return prefixes, done.stdout


def run_ours(tmp_path, name, root, options):
    from engine.prep.cli_pack import build_list_parser, write_lists_from

    args = build_list_parser().parse_args(
        [str(tmp_path / "ours" / name / "data"), str(root), *options]
    )
    return write_lists_from(args)


def lst_files(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.lst"))}


@pytest.mark.mxnet
def test_lst_files_identical_to_im2rec_for_each_option_combo(tmp_path):
    root = make_tree(tmp_path / "images")
    prefixes, stdout = run_im2rec(tmp_path, root, COMBOS)
    for name, options in COMBOS.items():
        written = run_ours(tmp_path, name, root, options)
        ours, ref = lst_files(written[0].parent), lst_files(prefixes[name].parent)
        assert ours.keys() == ref.keys(), name
        assert ours == ref, name
        assert sorted(p.name for p in written) == sorted(ours)
    # the label map im2rec only prints is saved by us in the same order
    printed = stdout.split("#")[1].splitlines()[1:]
    saved = lst.labels_path(tmp_path / "ours" / "recursive" / "data").read_text().splitlines()
    assert [line.replace("\t", " ") for line in saved] == printed
    assert saved[:2] == [".\t0", "aa_linked\t1"]  # ROOT's own images come first in walk order


def test_line_format_and_labels_follow_folders(tmp_path):
    root = make_tree(tmp_path / "images")
    written = lst.write_lists(tmp_path / "d", root, recursive=True, shuffle=False)
    lines = written[0].read_text().splitlines()
    assert lines[:2] == ["0\t0.000000\tloose.jpg", "1\t1.000000\taa_linked/img_00.JPEG"]
    labels = dict(
        line.split("\t") for line in lst.labels_path(tmp_path / "d").read_text().splitlines()
    )
    assert {"aa_linked", "n01", "n02", "n03", "n04", "n04/sub", "."} == set(labels)
    for line in lines:
        _, label, path = line.split("\t")
        assert labels[os.path.dirname(path) or "."] == str(int(float(label)))
    assert len(lines) == 5 + 3 + 3 + 6 + 4 + 1 + 1


def test_names_a_list_cannot_hold_are_reported_not_dropped_or_crashing(tmp_path):
    root = tmp_path / "images"
    (root / "c1").mkdir(parents=True)
    (root / "c1" / "good.jpg").write_bytes(b"x")
    os.close(
        os.open(os.path.join(os.fsencode(root / "c1"), b"caf\xe9.jpg"), os.O_CREAT | os.O_WRONLY)
    )
    (root / "c1" / "tab\there.jpg").write_bytes(b"x")
    (root / "c1" / "dangling.jpg").symlink_to(root / "missing.jpg")
    (root / "c1" / "self.jpg").symlink_to(root / "c1" / "self.jpg")
    (root / "c1" / "loop").symlink_to(root / "c1", target_is_directory=True)
    events = []
    written = lst.write_lists(tmp_path / "d", root, recursive=True, on_event=events.append)
    assert written[0].read_text() == "0\t0.000000\tc1/good.jpg\n"
    report = lst.skipped_path(tmp_path / "d").read_text().splitlines()
    assert report[0] == "path\treason"
    by_name = {
        os.path.basename(row["path"]): row["reason"]
        for row in read_report(lst.skipped_path(tmp_path / "d"))
    }
    assert "not valid UTF-8" in by_name["caf\\xe9.jpg"]
    assert "tab or newline" in by_name["tab\\there.jpg"]
    assert "dangling" in by_name["dangling.jpg"] and "loop" in by_name["self.jpg"]
    assert "symlink loop" in by_name["loop"]
    assert len(report) - 1 == len([e for e in events if isinstance(e, SkippedItem)]) == 5
    # a later clean run removes the stale report
    for bad in root.joinpath("c1").iterdir():
        if bad.name != "good.jpg":
            bad.unlink()
    lst.write_lists(tmp_path / "d", root, recursive=True)
    assert not lst.skipped_path(tmp_path / "d").exists()


def test_extensions_match_case_insensitively(tmp_path):
    root = make_tree(tmp_path / "images")
    upper = lst.write_lists(tmp_path / "u", root, recursive=True, exts=(".JPEG",))
    lower = lst.write_lists(tmp_path / "l", root, recursive=True, exts=(".jpeg",))
    assert upper[0].read_bytes() == lower[0].read_bytes() != b""


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"root": "missing"}, "is not a folder"),
        ({"chunks": 0}, "--chunks"),
        ({"train_ratio": 0.8, "test_ratio": 0.5}, "--train-ratio"),
        ({"exts": ("jpg",)}, "--exts"),
        ({"exts": (".gif",)}, "no files ending in .gif"),
    ],
)
def test_user_mistakes_get_one_clear_error(tmp_path, kwargs, message):
    root = make_tree(tmp_path / "images")
    kwargs.setdefault("root", root)
    if kwargs["root"] == "missing":
        kwargs["root"] = tmp_path / "missing"
    with pytest.raises(UserError, match=message):
        lst.write_lists(tmp_path / "d", recursive=True, **kwargs)


def test_cli_list_writes_files_and_reports_bad_flag_in_one_line(tmp_path):
    root = make_tree(tmp_path / "images")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "list",
            str(tmp_path / "c"),
            str(root),
            "--recursive",
            "--chunks",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "c_0.lst").exists() and (tmp_path / "c_1.lst").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "engine.cli", "list", str(tmp_path / "c"), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "is not a folder" in bad.stderr
