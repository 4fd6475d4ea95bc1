"""One home per option (issue 13 item 2): every flag, workspace default, form field and remote argv of an
option group comes from its dataclass, so a default, bound or help text is written in one place."""

from __future__ import annotations

import argparse
import pathlib
import re

import pytest

from engine import cli
from engine import options as opt
from engine import workspace as wsmod
from engine.api import plan
from engine.cluster.process.alerts import AlertOptions
from engine.cluster.slurm.sbatch import SlurmRequest
from engine.prep import options as prep_options
from engine.prep.options import GROUPS, TUTORIAL, ListOptions, PackOptions
from engine.prep.pack_remote import pack_args
from engine.train import options as train_options
from engine.train.facts import Facts
from engine.train.launch.launch import LaunchSpec
from engine.train.options import CheckOptions, JobOptions, TrainOptions
from engine.workspace import stages

ENGINE = pathlib.Path(opt.__file__).parent


def subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subs.choices[name]


def flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def field_names(cls) -> set[str]:
    return {f.name for f, _ in opt.fields(cls)}


@pytest.mark.parametrize(
    "command, groups, own",
    [
        ("pack", (PackOptions,), {"hosts", "quiet"}),
        ("list", (ListOptions,), {"quiet"}),
        ("train", (TrainOptions,), set()),
        ("check", (TrainOptions, CheckOptions), set()),
        (
            "launch",
            (LaunchSpec, SlurmRequest, AlertOptions),
            {"env", "env_server", "env_worker", "detach", "dry_run", "quiet"},
        ),
    ],
)
def test_every_flag_of_a_command_is_a_field_of_its_dataclass(command, groups, own):
    flags = set(flag_actions(subparser(command)))
    declared = set().union(*(field_names(g) for g in groups))
    assert flags - own == declared


@pytest.mark.parametrize("command", ["pack", "disk", "prepare", "filter", "split", "list"])
def test_shared_flags_carry_the_dataclass_help_and_bounds(command):
    for dest, action in flag_actions(subparser(command)).items():
        group = next((g for g in GROUPS.values() if dest in field_names(g)), None)
        if group is None:
            continue
        spec = opt.spec_of(group, dest)
        assert action.help and action.help.startswith(spec.help), (command, dest)


def test_the_one_resize_flag_has_one_default_per_purpose():
    defaults = {c: subparser(c).get_default("resize") for c in ("pack", "disk", "prepare")}
    # im2rec's default, the tutorial's 480 for estimates, and "the workspace's" for prepare
    assert defaults == {
        "pack": PackOptions().resize,
        "disk": TUTORIAL["pack"].resize,
        "prepare": None,
    }
    assert TUTORIAL["pack"].resize == 480 and PackOptions().resize == 0


# Same spelling, another option: demo-data's seed, the hosts file of pack/probe/kill, the --config
# pre-parser. The bench's sweep flags are their own group (--gpus 1,2,4 counts GPUs there).
OTHER_MEANING = {
    ("prep/cli_stages.py", "--seed"),
    ("prep/cli_pack.py", "--hosts"),
    ("cluster/cli_hosts.py", "--hosts"),
    ("cluster/cli_hosts.py", "--job"),  # a running job to probe, not the new job's name
    ("cluster/cli_hosts.py", "--json"),  # the probed grid as JSON, not the check's findings
    ("train/launch/cli_jobs.py", "--hosts"),
    ("train/options.py", "--config"),
}


def test_no_module_declares_an_option_flag_of_a_dataclass_by_hand():
    flags = {
        opt.spec_of(cls, f.name).flag(f.name)
        for cls in (*GROUPS.values(), TrainOptions, CheckOptions, LaunchSpec, SlurmRequest)
        for f, _ in opt.fields(cls)
    }
    hand_made = re.compile(r"add_argument\(\s*(?:\"-\w\",\s*)?\"(--[\w-]+)\"")
    offenders = []
    for path in ENGINE.rglob("*.py"):
        where = path.relative_to(ENGINE).as_posix()
        if where.startswith("bench/"):
            continue
        for flag in hand_made.findall(path.read_text()):
            if flag in flags and (where, flag) not in OTHER_MEANING:
                offenders.append(f"{where}: {flag}")
    assert offenders == []


def test_workspace_defaults_are_the_dataclass_values():
    for stage, options in TUTORIAL.items():
        assert wsmod.DEFAULT_STAGE_OPTIONS[stage] == prep_options.console_values(options)
        assert set(wsmod.DEFAULT_STAGE_OPTIONS[stage]) <= field_names(GROUPS[stage])
    train_fields = field_names(TrainOptions) | field_names(JobOptions)
    assert set(wsmod.DEFAULT_TRAIN) <= train_fields
    for key, value in wsmod.DEFAULT_TRAIN.items():
        source = train_options.CLUSTER if key in field_names(TrainOptions) else JobOptions()
        assert getattr(source, key) == value, key


def test_the_demo_changes_values_but_declares_no_option():
    for stage, values in stages.DEMO_OPTIONS.items():
        assert set(values) <= field_names(GROUPS[stage])
    assert set(stages.DEMO_TRAIN) <= field_names(TrainOptions) | field_names(JobOptions)
    with pytest.raises(ValueError, match="not a pack option"):
        prep_options.demo_overrides({"pack": {"resize": 64, "sharpen": 1}})
    with pytest.raises(ValueError, match="not a training or job option"):
        train_options.overrides({"kv_stor": "local"})


def test_kv_store_has_one_list_and_one_default():
    assert Facts().train.kv_store == TrainOptions().kv_store == "device"
    for command in ("train", "check"):
        assert (
            tuple(flag_actions(subparser(command))["kv_store"].choices) == train_options.KV_STORES
        )
    bench = subparser("bench")
    subs = next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("scaling", "bandwidth"):
        action = flag_actions(subs.choices[name])["kv_store"]
        assert tuple(action.choices) == train_options.KV_STORES
        assert action.default == train_options.CLUSTER.kv_store


@pytest.mark.parametrize(
    "options",
    [
        PackOptions(resize=480, quality=90, num_thread=2, center_crop=True, reduced_decode=False),
        PackOptions(encoding=".png", quality=3, color=-1, pass_through=True, pack_label=True),
        PackOptions(no_upscale=True, resize=64),
    ],
)
def test_distributed_pack_argv_parses_back_to_the_same_options(options):
    args = subparser("pack").parse_args(["lists/d", "root", *pack_args(options)])
    assert opt.from_args(PackOptions, args) == options


def test_pack_workers_receive_typed_options_not_a_dict(tmp_path):
    import pickle

    from engine.prep.pack_worker import Setup

    setup = pickle.loads(pickle.dumps(Setup(str(tmp_path), PackOptions(resize=32))))
    assert isinstance(setup.options, PackOptions) and setup.options.resize == 32


def test_console_form_fields_come_from_the_dataclasses(tmp_path):
    ws = wsmod.create(tmp_path / "w", {"root": "images"})
    fields = {f.name: f for f in ws.option_fields("pack")}
    assert list(fields) == ["resize", "quality", "num_thread"]
    spec = opt.spec_of(PackOptions, "num_thread")
    assert (fields["num_thread"].high, fields["num_thread"].help) == (spec.high, spec.help)
    assert fields["resize"].default == "480" and fields["resize"].kind == "int"
    train = {f.name: f for f in ws.option_fields("train")}
    assert set(train) == set(wsmod.DEFAULT_TRAIN)
    assert train["kv_store"].choices == train_options.KV_STORES


def test_console_preflight_calls_the_check_without_the_cli_parser(tmp_path, monkeypatch):
    def no_parser(*_args, **_kwargs):
        raise AssertionError("the console must not re-parse its own options")

    train = dict(stages.DEMO_TRAIN, extra_args=[])  # typed-in flags are the one thing parsed
    ws = wsmod.create(tmp_path / "w", {"root": "images", "train": train})
    monkeypatch.setattr(cli, "build_parser", no_parser)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", no_parser)
    findings = plan._preflight(ws, "benchmark")
    assert findings and not any("could not run" in f for f in findings), findings
    options = plan.options_of(ws, "benchmark")
    assert isinstance(options, TrainOptions) and options.benchmark and options.kv_store == "local"


def test_console_training_options_take_the_typed_in_extra_flags(tmp_path):
    ws = wsmod.create(tmp_path / "w", {"root": "images", "train": dict(stages.DEMO_TRAIN)})
    options = plan.options_of(ws, "train")
    assert options.min_random_scale == 0.578 and options.image_shape == [3, 32, 32]
    assert options.model_prefix and options.model_prefix.endswith("model/resnet")
