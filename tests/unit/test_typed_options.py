"""Typed options end to end (issue 20 item 3): every field the console shows is one the engine reads,
a training option is declared once, and the records the pre-flight and pack pass around are typed."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

from engine import options as opt
from engine import workspace as wsmod
from engine.api import jobs, plan
from engine.errors import StageRefused, UserError
from engine.prep import disk, extract, lst, pack, place, split
from engine.prep import filter as filter_stage
from engine.prep.demo import make_demo_tree
from engine.prep.pack import parse_line
from engine.prep.pack_worker import Item
from engine.train.launch.preflight_hosts import AcrossHosts
from engine.workspace import stages

REPO = pathlib.Path(__file__).resolve().parents[2]

# What the preparation stages call in the engine: each records its arguments instead of working.
STAGE_CALLS = {
    disk: ("estimate_space", "totals_by_mount", "format_table"),
    extract: ("extract_archive",),
    filter_stage: ("filter_classes",),
    split: ("split_validation",),
    lst: ("write_lists",),
    pack: ("pack_lists",),
    place: ("place_records",),
}
ANSWERS = {"estimate_space": [], "totals_by_mount": {}, "format_table": "total"}


def record_stage_calls(monkeypatch) -> list:
    calls: list = []
    for module, names in STAGE_CALLS.items():
        for name in names:

            def record(*args, _name=name, **kwargs):
                # event sinks are made afresh each run: what the stage was told is the rest
                told = [a for a in args if not callable(a)]
                calls.append((_name, told, {k: v for k, v in kwargs.items() if not callable(v)}))
                return ANSWERS.get(_name)

            monkeypatch.setattr(module, name, record)
    return calls


def other_value(field: opt.FormField) -> str:
    """Another valid value for a form field, as a person would type it."""
    if field.kind == "choice":
        return next(c for c in field.choices if c != field.value)
    if field.kind == "bool":
        return "false" if field.value == "true" else "true"
    if field.kind == "int":
        value = int(field.value) + 1
        return str(value if field.high is None or value <= field.high else int(field.value) - 1)
    if field.kind == "float":
        return str(min(float(field.value) * 1.5 or 0.5, field.high or float("inf")))
    if field.kind == "list":
        return {"gpus": "0", "image_shape": "3,64,64", "extra_args": "--lr 0.5"}.get(
            field.name, field.value + " .gif"
        )
    return field.value + "-other"


def what_the_engine_does(ws: wsmod.Workspace, stage: str, calls: list) -> object:
    """A stage's calls into the engine, or what a training launch would run (command, spec, roles)."""
    if stage == "train":
        return jobs.launch_spec(ws, "train"), plan.plan_roles(ws)
    calls.clear()
    stages.run_stage(ws, stage, lambda event: None)
    return list(calls)


def new_workspace(folder: pathlib.Path) -> wsmod.Workspace:
    ws = wsmod.create(folder, {"root": "images"})
    (ws.root / "c").mkdir(parents=True)
    ws.lists_dir.mkdir(parents=True)
    (ws.lists_dir / "train.lst").write_text("0\t0\tc/a.jpg\n")  # the pack stage's input
    return ws


def test_every_field_the_console_shows_changes_what_the_engine_does(tmp_path, monkeypatch):
    calls = record_stage_calls(monkeypatch)
    template = new_workspace(tmp_path / "shown")
    shown = [(stage, field) for stage in wsmod.STAGES for field in template.option_fields(stage)]
    unread = []
    for n, (stage, field) in enumerate(shown):
        ws = new_workspace(tmp_path / str(n))  # one change at a time, from a new workspace's values
        before = what_the_engine_does(ws, stage, calls)
        change = {field.name: other_value(field)}
        ws.set_train_options(change) if stage == "train" else ws.set_stage_options(stage, change)
        if what_the_engine_does(ws, stage, calls) == before:
            unread.append(f"{stage}.{field.name}")
    names = {f"{stage}.{field.name}" for stage, field in shown}
    assert {"disk.margin", "pack.resize", "train.num_servers"} <= names and len(names) > 20
    assert unread == []


def test_the_disk_stage_asks_for_the_workspace_margin(tmp_path, monkeypatch):
    ws = wsmod.create(tmp_path / "ws", {"root": "images"})
    make_demo_tree(ws.root, classes=2, images_per_class=(3, 3), max_side=32)
    rows = disk.estimate_space(ws.root, ws.path, ws.stage_options("pack"), extract_root=ws.root)
    (need, _free), *_ = disk.totals_by_mount(rows, 1.0).values()
    mount = pathlib.Path("/fake-mount")
    monkeypatch.setattr(disk, "free_space", lambda path: (int(need * 1.5), mount))
    stages.run_stage(ws, "disk", lambda event: None)  # 5% more fits in 50% more
    ws.set_stage_options("disk", {"margin": "2"})
    with pytest.raises(StageRefused, match="free space or move the workspace"):
        stages.run_stage(ws, "disk", lambda event: None)


def test_text_typed_in_a_form_and_values_read_from_the_file_type_alike(tmp_path):
    ws = wsmod.create(tmp_path / "ws", {"root": "images"})
    ws.set_train_options(
        {"gpus": "0,1", "image_shape": "3,64,64", "extra_args": "--rgb-mean 1,2,3"}
    )
    ws.set_stage_options("list", {"exts": ".jpg .png"})
    again = wsmod.load(ws.path).train_options()
    assert again.train.gpus == [0, 1] and again.train.image_shape == [3, 64, 64]
    assert again.job.extra_args == ["--rgb-mean", "1,2,3"]  # a comma stays inside its word
    assert wsmod.load(ws.path).stage_options("list").exts == [".jpg", ".png"]
    with pytest.raises(UserError, match=r"train\.batch_size: 'many': not a valid int"):
        ws.set_train_options({"batch_size": "many"})
    with pytest.raises(UserError, match=r"train\.kv_stor is not a training or job option"):
        ws.set_train_options({"kv_stor": "local"})


def test_a_training_option_declared_once_reaches_the_cli_the_workspace_and_the_form(tmp_path):
    """One new field in TrainOptions (made with console=True), nothing else: the CLI's `imgscale
    train` takes it, workspace.toml's [train] defaults hold it and its value there reaches every
    worker's command, the console's form shows it and the pre-flight's Facts carry it."""
    script = textwrap.dedent(
        f"""
        import importlib.util, sys, tomllib
        spec = importlib.util.find_spec("engine.train.options")
        source = open(spec.origin).read()
        anchor = "    dist_timeout: float = _torch("
        assert source.count(anchor) == 1
        new = '    label_smoothing: float = _fit(0.0, "soften the targets", console=True)\\n'
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        exec(compile(source.replace(anchor, new + anchor), spec.origin, "exec"), module.__dict__)

        from engine import cli, workspace
        from engine.api import plan
        from engine.train.facts import Facts
        print("defaults", workspace.DEFAULT_TRAIN["label_smoothing"])
        folder = {str(tmp_path / "ws")!r}
        ws = workspace.create(folder, {{"root": "images", "train": {{"label_smoothing": 0.2}}}})
        print("command", " ".join(plan.train_command(workspace.load(folder), "train")))
        ws.set_train_options({{"label_smoothing": "0.1"}})
        print("form", [f.value for f in ws.option_fields("train") if f.name == "label_smoothing"])
        print("facts", Facts().train.label_smoothing)
        cli.main(["train", "--help"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "defaults 0.0" in lines and "form ['0.1']" in lines and "facts 0.0" in lines
    assert "--label-smoothing 0.2" in next(x for x in lines if x.startswith("command"))
    assert "--label-smoothing" in out.stdout.split("facts", 1)[1]  # `imgscale train --help`


def test_the_launch_plan_asks_the_hosts_with_a_typed_record(tmp_path, monkeypatch):
    ws = wsmod.create(tmp_path / "ws", {"root": "images", "hosts": "hosts"})
    (ws.path / "hosts").write_text("localhost slots=2\n")
    ws.set_train_options({"gpus": "0", "workers": "2"})
    asked = []
    monkeypatch.setattr(
        plan, "check_across_hosts", lambda across, pool=None: asked.append(across) or []
    )
    plan._across_hosts(ws, plan.options_of(ws, "train"))
    assert asked == [
        AcrossHosts(
            hosts=str(ws.path / "hosts"),
            engine="mxnet",
            data_train=str(ws.train_dir),
            data_val=str(ws.val_dir),
            gpus=[0],
            port=None,
            num_workers=2,
        )
    ]


def test_a_malformed_list_line_is_an_item_with_a_reason_not_a_path():
    good, short, nan = (
        parse_line(n, raw) for n, raw in enumerate((b"7\t1\ta.jpg", b"8\tb", b"9\tnan\tc.jpg"), 1)
    )
    assert good == Item(1, 7, "a.jpg", (1.0,)) and not good.malformed
    assert short.malformed and short.path == "" and "2 tab-separated fields" in short.reason
    assert nan.malformed and nan.path == "" and "not a finite number" in nan.reason


def test_a_slurm_table_key_that_is_unknown_or_not_a_number_is_one_line_naming_it(tmp_path):
    ws = wsmod.create(tmp_path / "ws", {"root": "images", "launcher": "slurm"})
    ws.config["slurm"] = {"nodes": "two"}
    assert plan._slurm_findings(ws) == [
        f"error   {ws.path / wsmod.CONFIG_NAME}: slurm.nodes: 'two': not a valid int (a whole number)"
    ]
    ws.config["slurm"] = {"node": 2}
    (finding,) = plan._slurm_findings(ws)
    assert "unknown option slurm.node; options: nodes, gpus_per_node" in finding
