"""Training that cannot be right must not start (issue 21 item 1): every float option is finite and
within its range, and absurd sizes are one line before training, from the options' one home."""

from __future__ import annotations

import math

import pytest
from test_cli_errors import assert_one_line

from engine import options as opt
from engine.errors import UserError
from engine.train.options import TrainOptions, WorkspaceTrain

# a run that finishes in a second where an option is let through (what the old code did)
BENCH = ["train", "--engine", "torch", "--benchmark", "--num-epochs", "1", "--num-batches", "1",
         "--num-layers", "18", "--width", "4", "--image-shape", "3,8,8", "--batch-size", "2",
         "--num-classes", "2", "--kv-store", "local"]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "culprit"),
    [
        (["--lr", "inf"], "--lr"),
        (["--mom", "nan"], "--mom"),
        (["--mom", "inf"], "--mom"),
        (["--wd", "inf"], "--wd"),
        (["--lr-factor", "nan", "--lr-step-epochs", "1"], "--lr-factor"),
        (["--warmup-epochs", "nan"], "--warmup-epochs"),
        (["--max-random-h", "999"], "--max-random-h 999: give at most 180"),
        (["--lr", "1e308"], "--lr 1e+308: give at most 100"),
        (["--image-shape", "3,100000,100000"], "--image-shape"),
        (["--rgb-std", "1,nan,1"], "--rgb-std"),
        (["--min-random-aspect-ratio", "nan"], "--min-random-aspect-ratio"),
    ],
)
def test_a_float_option_that_cannot_train_is_refused_naming_the_flag(capsys, flags, culprit):
    assert_one_line(capsys, [*BENCH, *flags], culprit)


def test_every_float_option_refuses_nan_and_inf_and_has_bounds():
    floats = [(f, s) for f, s in opt.fields(TrainOptions) if isinstance(opt.default_of(f), float)]
    assert floats
    for f, spec in floats:
        assert spec.low is not None and spec.high is not None, f.name
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(UserError, match=spec.flag(f.name)):
                opt.check_value(spec, f.name, bad)


def test_the_console_refuses_a_non_finite_value_too():
    with pytest.raises(UserError, match="lr"):
        WorkspaceTrain.build({"lr": math.nan})
    with pytest.raises(UserError, match="not a valid finite number"):
        opt.coerce(TrainOptions, "lr", "inf")
