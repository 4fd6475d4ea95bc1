"""Issue 11 item 15: --test-io and --benchmark take train_imagenet.py's `1`/`0` as well as no value."""

import argparse

import pytest

from engine.cli import build_parser
from engine.train.options import build_train_parser


@pytest.mark.parametrize(
    "argv, test_io, benchmark",
    [
        ([], False, False),
        (["--benchmark"], False, True),
        (["--benchmark", "1"], False, True),
        (["--benchmark", "0"], False, False),
        (["--test-io", "1"], True, False),
        (["--test-io"], True, False),
        (["--test-io", "0", "--benchmark", "1", "--batch-size", "8"], False, True),
        (["--benchmark", "--batch-size", "8"], False, True),
    ],
)
def test_both_spellings_of_the_mode_flags(argv, test_io, benchmark):
    args = build_train_parser(argparse.ArgumentParser()).parse_args(argv)
    assert (args.test_io, args.benchmark) == (test_io, benchmark)


def test_imgscale_train_takes_benchmark_1_and_names_a_bad_value(capsys):
    args = build_parser().parse_args(["train", "--benchmark", "1", "--num-classes", "10"])
    assert args.benchmark is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--benchmark", "maybe"])
    err = capsys.readouterr().err.strip()
    assert "--benchmark" in err and "give 1 or 0" in err and len(err.splitlines()) == 1
