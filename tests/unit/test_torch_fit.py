"""Pure parts of the torch trainer: lr schedule, checkpoint names, train_imagenet flags -> augmentation."""

import pytest

pytest.importorskip("torch", reason="the torch engine is an extra: pip install -e .[torch]")

from engine.errors import UserError
from engine.train.torch import fit
from engine.train.torch.run import build_parser


def test_lr_steps_down_at_each_step_epoch_and_warms_up_linearly():
    def at(epoch, warmup=0):
        return fit.lr_multiplier(epoch * 100, 100, [30, 60], 0.1, warmup)

    assert [at(0), at(29.99), at(30), at(59), at(60), at(90)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    assert fit.lr_multiplier(49, 100, [30], 0.1, warmup_epochs=1) == pytest.approx(0.5)
    assert fit.lr_multiplier(100, 100, [30], 0.1, warmup_epochs=1) == pytest.approx(1.0)


def test_checkpoints_are_listed_oldest_first_and_temp_files_never(tmp_path):
    prefix = str(tmp_path / "run" / "m")
    (tmp_path / "run").mkdir()
    for name in (
        "m-0002.pt",
        "m-0001.pt",
        "m-0002.b000040.pt",
        "m-0003.pt.tmp123",
        "other-0009.pt",
    ):
        (tmp_path / "run" / name).write_bytes(b"x")
    assert fit.list_checkpoints(prefix) == [(1, 0), (2, 0), (2, 40)]
    assert fit.checkpoint_path(prefix, 2, 40) == f"{prefix}-0002.b000040.pt"


def test_load_epoch_that_does_not_exist_lists_what_does(tmp_path):
    prefix = str(tmp_path / "m")
    (tmp_path / "m-0001.pt").write_bytes(b"x")
    args = build_parser().parse_args(["--benchmark", "--model-prefix", prefix, "--load-epoch", "5"])
    with pytest.raises(
        UserError, match=r"--load-epoch 5: .*m-0005.pt does not exist \(checkpoints: 1\)"
    ):
        fit.resume_checkpoint(args)


@pytest.mark.parametrize(
    ("flags", "mode", "aspect"),
    [
        (["--random-resized-crop", "1", "--min-random-area", "0.08"], "resized", (3 / 4, 4 / 3)),
        (
            ["--random-resized-crop", "1", "--max-random-aspect-ratio", "0.25"],
            "resized",
            (0.75, 1.25),
        ),
        (
            [
                "--random-resized-crop",
                "1",
                "--min-random-aspect-ratio",
                "0.5",
                "--max-random-aspect-ratio",
                "2",
            ],
            "resized",
            (0.5, 2.0),
        ),
        (["--min-random-scale", "0.533"], "scale", None),  # the tutorial's setting
        (["--random-crop", "0"], "centre", None),
    ],
)
def test_train_imagenet_augmentation_flags_pick_the_crop(flags, mode, aspect):
    args = build_parser().parse_args(["--benchmark", *flags])
    aug = fit.augment(args, train=True)
    assert aug.mode == mode and aug.size == 224 and aug.mirror
    if aspect:
        assert (aug.min_aspect, aug.max_aspect) == pytest.approx(aspect)
    if mode == "scale":
        assert (aug.min_scale, aug.max_scale) == (0.533, 1.0)
    assert fit.augment(args, train=False).mode == "centre"


def test_batch_size_is_per_worker_split_over_its_gpus_as_in_mxnet():
    args = build_parser().parse_args(["--benchmark", "--batch-size", "512", "--gpus", "0,1,2,3"])
    assert fit.per_process_batch(args) == 128
    assert (
        fit.per_process_batch(build_parser().parse_args(["--benchmark", "--batch-size", "64"]))
        == 64
    )
