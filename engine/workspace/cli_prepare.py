"""`imgscale prepare DIR`: every preparation stage on a workspace, in order, resuming and skipping
finished ones (engine.workspace.pipeline underneath)."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from engine import options as opt
from engine.cli_progress import CliProgress
from engine.errors import UserError
from engine.prep import options as prep_options
from engine.prep.cli_stages import command_parser, has_image, is_tar, say
from engine.prep.options import GROUPS, TUTORIAL, console_values
from engine.workspace.pipeline import PrepareResult, prepare


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _prepare_parser(sub)


def _prepare_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(sub, "prepare", "run every preparation stage on a workspace (resumes; skips finished stages)",
                _prepare)  # fmt: skip
    p.add_argument("workspace", metavar="DIR", help="the workspace folder (created when new)")
    p.add_argument(
        "--demo", action="store_true", help="generate a small demo tarball in DIR and prepare it"
    )
    p.add_argument(
        "--source",
        default=None,
        metavar="TAR|FOLDER",
        help="the ImageNet tar or a folder of classes",
    )
    g = p.add_argument_group(
        "stage options (a new workspace saves them; default: the tutorial's values)"
    )
    for options in TUTORIAL.values():
        opt.add_arguments(
            g, type(options), only=console_values(options), base=options, keep_unset=True
        )


def stage_options(args: argparse.Namespace) -> dict[str, dict]:
    """The stage options given on the command line (checked against their bounds), by stage."""
    given = {stage: opt.given(cls, args) for stage, cls in GROUPS.items()}
    for stage, values in given.items():
        prep_options.stage_options(stage, values)
    return given


def _check_prepare_args(args: argparse.Namespace) -> None:
    """Bad numbers or paths are refused before a workspace is created and saves them."""
    folder = Path(args.workspace).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; give a folder for the workspace (DIR)")
    stage_options(args)
    source = Path(args.source).expanduser() if args.source else None
    if source is not None and source.is_file() and not is_tar(source):
        raise UserError(
            f"--source {source} is not a tar archive; give the ImageNet tar or a class tree"
        )
    if source is not None and source.is_dir() and not has_image(source):
        raise UserError(f"--source {source} holds no images; give a folder of class folders")


def _prepare(args: argparse.Namespace) -> int:
    _check_prepare_args(args)
    start = time.monotonic()
    result = prepare(args.workspace, source=args.source, demo=args.demo, options=stage_options(args),
                     on_event=CliProgress())  # fmt: skip
    for line in summary_lines(result, time.monotonic() - start):
        say(line)
    return 0


def summary_lines(result: PrepareResult, seconds: float) -> list[str]:
    new = "ran " + ", ".join(result.ran) if result.ran else "nothing left to do"
    lines = [
        "",
        f"Prepared {result.workspace} in {seconds:.1f} s ({new}).",
        f"  {result.num_classes} classes, {result.num_examples} training and {result.val_examples} validation images",
        f"  training data    {result.train_dir}   (only .rec files: give this folder as --data-train)",
        f"  validation data  {result.val_dir}",
        f"  lists, indexes and the class->label map: {result.lists_dir}",
    ]
    for report in result.reports:
        lines.append(f"  skipped files are listed in {report}")
    lines.append(
        f"Training needs: --num-classes {result.num_classes} --num-examples {result.num_examples}"
    )
    lines += next_commands(result)
    return lines


def next_commands(result: PrepareResult) -> list[str]:
    """What to run next: the console on this workspace, or a training run on this machine."""
    train = (
        f"imgscale train --data-train {shlex.quote(str(result.train_dir))} "
        f"--data-val {shlex.quote(str(result.val_dir))} --num-classes {result.num_classes} "
        f"--num-examples {result.num_examples} --kv-store local"
    )
    return [
        "Next:",
        f"  imgscale-tui {shlex.quote(str(result.workspace))}    (then l: launch training)",
        f"  or {train}",
    ]
