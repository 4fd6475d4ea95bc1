"""The workspace folder: TOML written by our tiny writer reads back with tomllib; options keep their types; state survives."""

from __future__ import annotations

import threading
import tomllib

import pytest

from engine import workspace as wsmod
from engine.errors import UserError


def test_toml_writer_round_trips_what_workspaces_hold():
    data = {
        "name": 'demo "quoted" \\ path',
        "root": "data/images\nnewline\ttab\x01ctl",
        "hosts": "",
        "ratio": 0.25,
        "count": 3,
        "on": True,
        "args": ["--min-random-scale", "0.533"],
        "stages": {
            "filter": {"min_images": 500},
            "split": {"val_per_class": 50, "seed": 1},
            "empty": {},
        },
        "train": {"kv_store": "dist_sync", "gpus": "0,1"},
        "weird key": {"a.b": 1},
    }
    assert tomllib.loads(wsmod.dumps_toml(data)) == data


def test_unwritable_value_is_refused():
    with pytest.raises(TypeError):
        wsmod.dumps_toml({"x": object()})


def test_create_load_and_options_keep_their_types(tmp_path):
    ws = wsmod.create(tmp_path / "w", {"root": "images"})
    assert ws.root == tmp_path / "w" / "images"
    ws.set_stage_options("filter", {"min_images": "20"})
    ws.set_train_options({"mirror": "yes", "lr": "0.05", "extra_args": "--a 1"})
    again = wsmod.load(tmp_path / "w")
    assert again.stage_options("filter").min_images == 20
    assert again.train_options().train.mirror is True
    assert again.train_options().train.lr == 0.05
    assert again.train_options().job.extra_args == ["--a", "1"]


def test_bad_option_value_names_the_option(tmp_path):
    ws = wsmod.create(tmp_path / "w", {"root": "images"})
    with pytest.raises(UserError, match=r"filter\.min_images: 'many'"):
        ws.set_stage_options("filter", {"min_images": "many"})
    with pytest.raises(UserError, match="has no options"):
        ws.set_stage_options("train", {"x": 1})


def test_missing_or_broken_config_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="no workspace.toml"):
        wsmod.load(tmp_path)
    (tmp_path / "workspace.toml").write_text("root = \n")
    with pytest.raises(UserError, match="workspace.toml"):
        wsmod.load(tmp_path)
    (tmp_path / "workspace.toml").write_text('name = "x"\n')
    with pytest.raises(UserError, match="missing `root"):
        wsmod.load(tmp_path)


def test_create_refuses_to_overwrite(tmp_path):
    wsmod.create(tmp_path, {"root": "a"})
    with pytest.raises(UserError, match="already exists"):
        wsmod.create(tmp_path, {"root": "b"})


def test_changing_options_makes_done_stages_from_there_stale(tmp_path):
    ws = wsmod.create(tmp_path, {"root": "images"})
    for name in ("disk", "extract", "filter", "split", "list"):
        ws.update_stage(name, state="done")
    ws.set_stage_options("split", {"val_per_class": "5"})
    states = {s.name: s.state for s in wsmod.load(tmp_path).stage_statuses()}
    assert states == {
        "disk": "done",
        "extract": "done",
        "filter": "done",
        "split": "stale",
        "list": "stale",
        "pack": "pending",
        "place": "pending",
        "train": "pending",
    }


def test_state_writes_from_many_threads_never_corrupt_the_file(tmp_path):
    ws = wsmod.create(tmp_path, {"root": "images"})

    def writer(stage: str) -> None:
        for i in range(50):
            ws.update_stage(stage, state="running", done=i)

    threads = [threading.Thread(target=writer, args=(s,)) for s in ("disk", "extract", "filter")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    states = wsmod.load(tmp_path).stage_statuses()
    assert [s.done for s in states[:3]] == [49, 49, 49]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "toml, names",
    [
        ("root = 5\n", "root = 5 must be text"),
        ('root = "i"\nstages = 4\n', "stages must be a table"),
        ('root = "i"\n[stages]\nlist = 3\n', "stages.list must be a table"),
        (
            'root = "i"\n[stages.list]\nchunks = "many"\n',
            "stages.list.chunks = 'many' must be a whole number",
        ),
        ('root = "i"\n[stages.pack]\nresize = 480.5\n', "stages.pack.resize = 480.5"),
        ('root = "i"\n[train]\nmirror = "yes"\n', "train.mirror = 'yes' must be true or false"),
    ],
)
def test_hand_edited_config_of_the_wrong_type_names_the_key(tmp_path, toml, names):
    (tmp_path / wsmod.CONFIG_NAME).write_text(toml)
    with pytest.raises(UserError, match=names.replace(".", r"\.")) as exc:
        wsmod.load(tmp_path)
    assert str(tmp_path / wsmod.CONFIG_NAME) in str(exc.value)


def test_config_of_the_right_types_loads(tmp_path):
    toml = 'root = "i"\n[stages.disk]\nmargin = 1\n[train]\nlr = 0.5\nextra_args = ["--x"]\n'
    (tmp_path / wsmod.CONFIG_NAME).write_text(toml)
    assert wsmod.load(tmp_path).stage_options("disk").margin == 1


@pytest.mark.parametrize(
    "toml, says",
    [
        ('root = "i"\nlauncer = "ssh"\n', "unknown key launcer (did you mean launcher?)"),
        (
            'root = "i"\n[train]\nlr_step_epoch = "30"\n',
            "train.lr_step_epoch (did you mean lr_step_epochs?)",
        ),
        ('root = "i"\n[stages.pack]\nqualty = 80\n', "stages.pack.qualty (did you mean quality?)"),
        ('root = "i"\n[stages.pak]\nquality = 80\n', "stages.pak (did you mean pack?)"),
    ],
)
def test_misspelt_config_key_is_named_with_the_nearest_known_key(tmp_path, toml, says):
    """A typo in workspace.toml was silently ignored: the option kept its default."""
    (tmp_path / wsmod.CONFIG_NAME).write_text(toml)
    with pytest.raises(UserError) as exc:
        wsmod.load(tmp_path)
    assert says in str(exc.value) and str(tmp_path / wsmod.CONFIG_NAME) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_broken_state_file_is_one_clear_line(tmp_path):
    wsmod.create(tmp_path, {"root": "images"})
    (tmp_path / wsmod.STATE_NAME).write_text("{bad")
    with pytest.raises(UserError, match="state.json: not valid JSON"):
        wsmod.load(tmp_path)


def test_binary_config_or_state_of_the_wrong_shape_is_one_clear_line(tmp_path):
    (tmp_path / wsmod.CONFIG_NAME).write_bytes(b"\xa5\xff binary")
    with pytest.raises(UserError, match="workspace.toml: not a text file"):
        wsmod.load(tmp_path)
    (tmp_path / wsmod.CONFIG_NAME).write_text('root = "i"\n')
    (tmp_path / wsmod.STATE_NAME).write_text("[1]")
    with pytest.raises(UserError, match="state.json: not a stages record"):
        wsmod.load(tmp_path)
    (tmp_path / wsmod.STATE_NAME).write_bytes(b"\x91\xff")
    with pytest.raises(UserError, match="state.json: not valid JSON"):
        wsmod.load(tmp_path)


def test_a_file_where_the_workspace_folder_should_be(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        wsmod.load(tmp_path / "f")
    with pytest.raises(UserError, match="is a file"):
        wsmod.create(tmp_path / "f", {"root": "images"})
    with pytest.raises(UserError, match="a file is in the way"):
        wsmod.create(tmp_path / "f" / "ws", {"root": "images"})
    with pytest.raises(UserError, match="does not exist"):
        wsmod.load(tmp_path / "nope")
