"""Every user count is bounded (issue 11 item 2): worker processes, decoding threads, list chunks,
launch and probe fan-out are refused above a sane ceiling with one line naming the flag and the limit."""

from __future__ import annotations

import pytest
from test_cli_errors import assert_one_line
from tree_helpers import make_tree

from engine import options as opt
from engine import workspace as wsmod
from engine.cluster.hosts import parse_hosts
from engine.errors import UserError
from engine.prep import lst
from engine.prep.options import PackOptions
from engine.train.launch.launch import LOCAL_CAP
from engine.train.options import build_train_parser, parse_with_config, validate

ABOVE = opt.PROCESS_CAP + 1  # the smallest refused count: harmless if an old build starts them


def test_pack_options_refuse_a_process_count_above_four_per_core():
    with pytest.raises(UserError, match=rf"--num-thread 99999999: give at most {opt.PROCESS_CAP}"):
        PackOptions(num_thread=99999999)
    assert PackOptions(num_thread=opt.PROCESS_CAP).num_thread == opt.PROCESS_CAP
    assert PackOptions(num_thread=16).num_thread == 16  # the tutorial's, on any machine


def test_pack_command_refuses_too_many_workers_before_starting_any(tmp_path, capsys):
    root = make_tree(tmp_path / "images", {"n1": 3})
    (tmp_path / "d.lst").write_text("0\t0\tn1/n1_0.JPEG\n")
    line = assert_one_line(
        capsys,
        ["pack", str(tmp_path / "d.lst"), str(root), "--num-thread", str(ABOVE)],
        f"--num-thread {ABOVE}: give at most {opt.PROCESS_CAP}",
    )
    assert "cores" in line
    assert not list(tmp_path.glob("d.rec*")) and not (tmp_path / "d.pack.json").exists()


def test_list_refuses_more_chunks_than_images_and_writes_no_list(tmp_path, capsys):
    root = make_tree(tmp_path / "images", {"n1": 4, "n2": 3})
    assert_one_line(
        capsys,
        ["list", str(tmp_path / "out" / "d"), str(root), "--recursive", "--chunks", "50"],
        "--chunks 50: there are only 7 images",
    )
    assert not list(tmp_path.glob("out/*.lst"))


def test_list_chunks_have_a_fixed_ceiling_too(tmp_path):
    root = make_tree(tmp_path / "images", {"n1": 2})
    with pytest.raises(UserError, match="--chunks 5000: give at most 4096"):
        lst.write_lists(tmp_path / "d", root, recursive=True, chunks=5000)


def test_prepare_refuses_counts_above_their_bounds_before_creating_a_workspace(tmp_path, capsys):
    make_tree(tmp_path / "tree", {"n1": 3})
    for flag, value in (("--num-thread", "99999999"), ("--chunks", "5000")):
        argv = ["prepare", str(tmp_path / "ws"), "--source", str(tmp_path / "tree"), flag, value]
        assert_one_line(capsys, argv, f"{flag} {value}: give at most")
    assert not (tmp_path / "ws").exists()


def test_data_nthreads_is_capped_for_train_and_in_the_console(tmp_path):
    args = parse_with_config(build_train_parser(), ["--benchmark", "--data-nthreads", "100000"])
    with pytest.raises(UserError, match=rf"--data-nthreads 100000: give at most {opt.PROCESS_CAP}"):
        validate(args)
    ws = wsmod.create(tmp_path / "w", {"root": "images"})
    with pytest.raises(UserError, match="--data-nthreads 100000"):
        ws.set_train_options({"data_nthreads": "100000"})
    assert "data_nthreads" not in wsmod.load(tmp_path / "w").config.get("train", {})


def test_console_stage_options_are_checked_against_the_same_bounds(tmp_path):
    ws = wsmod.create(tmp_path / "w", {"root": "images"})
    with pytest.raises(UserError, match="--num-thread 99999999: give at most"):
        ws.set_stage_options("pack", {"num_thread": "99999999"})
    with pytest.raises(UserError, match="--quality 500"):
        ws.set_stage_options("pack", {"quality": "500"})
    assert "stages" not in wsmod.load(tmp_path / "w").config


@pytest.mark.parametrize(
    "argv, culprit",
    [
        (["launch", "-n", "5000", "-H", "{hosts}", "--dry-run", "--", "true"], "-n 5000"),
        (
            ["launch", "-n", str(LOCAL_CAP + 1), "-s", "0", "--dry-run", "--", "true"],
            "processes on this machine",
        ),
        (["check", "--benchmark", "-n", "5000"], "-n 5000: give at most"),
    ],
)
def test_launch_and_check_fan_out_is_bounded(tmp_path, capsys, argv, culprit):
    (tmp_path / "hosts").write_text("127.0.0.1 slots=1\n")
    argv = [a.replace("{hosts}", str(tmp_path / "hosts")) for a in argv]
    assert_one_line(capsys, argv, culprit)


def test_a_hosts_file_beyond_the_fan_out_ceiling_is_refused_naming_the_file():
    text = "".join(f"node-{i}\n" for i in range(opt.FANOUT_CAP + 1))
    with pytest.raises(UserError, match=rf"big.hosts: {opt.FANOUT_CAP + 1} hosts; give at most"):
        parse_hosts(text, "big.hosts")
    assert len(parse_hosts(text.split("\n", 1)[1], "ok.hosts")) == opt.FANOUT_CAP


def test_bound_messages_name_the_flag_and_the_limit():
    spec = opt.Spec(help="", low=1, high=8, high_why="4 x 2 cores")
    with pytest.raises(UserError) as exc:
        opt.check_value(spec, "num_thread", 9)
    assert str(exc.value) == "--num-thread 9: give at most 8 (4 x 2 cores)"
    with pytest.raises(UserError, match="--num-thread 0: give 1 or more"):
        opt.check_value(spec, "num_thread", 0)


def test_a_hand_edited_workspace_beyond_a_bound_is_refused_when_opened(tmp_path):
    (tmp_path / wsmod.CONFIG_NAME).write_text('root = "i"\n[stages.pack]\nnum_thread = 99999999\n')
    with pytest.raises(UserError, match=r"workspace.toml: --num-thread 99999999: give at most"):
        wsmod.load(tmp_path)
    (tmp_path / wsmod.CONFIG_NAME).write_text('root = "i"\n[train]\ndata_nthreads = 5000\n')
    with pytest.raises(UserError, match=r"workspace.toml: --data-nthreads 5000"):
        wsmod.load(tmp_path)
