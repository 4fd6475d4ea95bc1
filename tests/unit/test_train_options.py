"""train_imagenet-compatible options: typed lists, --config files, validation, batch sizes and the lr schedule."""

import argparse
import json
import pathlib

import pytest

from engine.errors import UserError
from engine.train.logsetup import node_label
from engine.train.mxnet.fit import lr_at_epoch, lr_schedule
from engine.train.options import (
    batch_sizes,
    build_train_parser,
    epoch_size,
    merge_config,
    parse_with_config,
    save_resolved,
    validate,
)


def parse(*argv):
    return parse_with_config(build_train_parser(), list(argv))


def test_defaults_follow_train_imagenet_and_lists_are_real_lists():
    args = parse("--data-train", "x.rec")
    assert (args.network, args.num_layers, args.batch_size, args.kv_store) == (
        "resnet",
        50,
        128,
        "device",
    )
    assert args.lr_step_epochs == [30, 60] and args.image_shape == [3, 224, 224] and args.gpus == []
    assert (args.random_crop, args.random_mirror) == (
        1,
        1,
    )  # aug level 1, as train_imagenet.py sets


def test_model_is_the_tutorials_alias_of_model_prefix():
    assert parse("--model", "ck/resnet").model_prefix == "ck/resnet"


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--lr-step-epochs", "30,sixty"),
        ("--image-shape", "3,224"),
        ("--gpus", "0,0"),
        ("--batch-size", "0"),
        ("--kv-store", "dist"),
    ],
)
def test_malformed_values_are_refused_when_parsed(flag, value, capsys):
    with pytest.raises(SystemExit):
        parse(flag, value)
    assert flag in capsys.readouterr().err


def test_batch_size_must_split_evenly_across_the_workers_gpus():
    args = parse("--data-train", "x.rec", "--gpus", "0,1,2", "--batch-size", "128")
    with pytest.raises(UserError, match="multiple of 3"):
        validate(args)


def test_resume_needs_a_prefix_and_load_epoch_below_num_epochs():
    with pytest.raises(UserError, match="--model-prefix"):
        validate(parse("--data-train", "x.rec", "--load-epoch", "3"))
    with pytest.raises(UserError, match="nothing to train"):
        validate(
            parse(
                "--data-train",
                "x.rec",
                "--model-prefix",
                "p",
                "--load-epoch",
                "5",
                "--num-epochs",
                "5",
            )
        )


def test_data_train_is_required_except_for_benchmark():
    with pytest.raises(UserError, match="--data-train"):
        validate(parse())
    validate(parse("--benchmark"))


def test_per_gpu_per_worker_and_global_batch():
    assert batch_sizes(8192, list(range(16)), 16) == {
        "per_gpu": 512,
        "per_worker": 8192,
        "global": 131072,
    }
    assert batch_sizes(32, [], 2) == {"per_gpu": 32, "per_worker": 32, "global": 64}


def test_epoch_size_is_the_same_for_every_worker_and_at_least_one():
    assert epoch_size(1281167, 256, 4) == 1251
    assert epoch_size(10, 256, 4) == 1


def test_toml_config_supplies_defaults_and_flags_override_it(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        '[train]\nnetwork = "alexnet"\nbatch-size = 64\nlr-step-epochs = "10,20"\ngpus = [0, 1]\n'
    )
    args = parse("--config", str(cfg), "--batch-size", "32")
    assert (args.network, args.batch_size, args.lr_step_epochs, args.gpus) == (
        "alexnet",
        32,
        [10, 20],
        [0, 1],
    )


def test_json_config_and_its_mistakes_name_the_file_and_key(tmp_path):
    good = tmp_path / "run.json"
    good.write_text(json.dumps({"num_layers": 18, "mirror": True}))
    args = parse("--config", str(good))
    assert args.num_layers == 18 and args.mirror is True
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"num_layer": 18}))
    with pytest.raises(UserError, match=r"bad.json: unknown option 'num_layer'"):
        parse("--config", str(bad))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('kv-store = "dist"\n')
    with pytest.raises(UserError, match="kv_store must be one of"):
        parse("--config", str(wrong))


def test_an_array_for_a_scalar_option_is_a_user_error_naming_the_key(tmp_path):
    cfg = tmp_path / "array.toml"
    cfg.write_text("lr = [0.1]\n")  # float([0.1]) raises TypeError, not ValueError
    with pytest.raises(UserError, match=r"array.toml: lr: "):
        parse("--config", str(cfg))


def test_cli_merge_keeps_flags_that_differ_from_defaults(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("num-epochs = 7\nlr = 0.5\n")
    parser = build_train_parser(argparse.ArgumentParser())
    args = merge_config(parser, parser.parse_args(["--config", str(cfg), "--lr", "0.2"]))
    assert (args.num_epochs, args.lr) == (7, 0.2)


def test_resolved_options_are_saved_as_json(tmp_path):
    args = parse("--data-train", "x.rec", "--gpus", "0,1")
    path = save_resolved(args, str(tmp_path / "r-args.json"))
    saved = json.loads(pathlib.Path(path).read_text())
    assert (
        saved["gpus"] == [0, 1] and saved["batch_size"] == 128 and not list(tmp_path.glob("*.tmp*"))
    )


def test_lr_schedule_resumed_mid_way_continues_where_the_first_run_was():
    # 100 batches per epoch, steps at epochs 30 and 60
    assert lr_schedule(0.1, 0.1, [30, 60], 100) == (0.1, [3000, 6000])
    base, steps = lr_schedule(0.1, 0.1, [30, 60], 100, begin_epoch=40)
    assert base == pytest.approx(0.01) and steps == [2000]
    base, steps = lr_schedule(0.1, 0.1, [30, 60], 100, begin_epoch=29, begin_batch=40)
    assert base == pytest.approx(0.1) and steps == [60, 3060]
    assert lr_at_epoch(0.1, 0.1, [30, 60], 60) == pytest.approx(0.001)


def test_node_label_carries_the_host_when_known():
    assert node_label(0, "") == "Node[0]" and node_label(3, "node-b") == "Node[3@node-b]"


def test_float16_on_cpu_is_refused_before_mxnet_fails_deep_inside():
    with pytest.raises(UserError, match="float16 needs --gpus"):
        validate(parse("--benchmark", "--dtype", "float16"))
    validate(parse("--benchmark", "--dtype", "float16", "--gpus", "0"))
