"""train_imagenet-compatible options as composable argparse groups, a --config file, and the saved run options."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tomllib
from collections.abc import Callable, Sequence
from typing import Any, cast

from engine.errors import UserError

NETWORKS = ("resnet", "alexnet", "inception-v3", "vgg", "mobilenet")
# Smallest input side each network accepts (its strides and pooling windows must still fit).
MIN_SIDE = {"resnet": 32, "alexnet": 67, "inception-v3": 299, "vgg": 32, "mobilenet": 32}
RESNET_DEPTHS = (18, 34, 50, 101, 152)
KV_STORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")
OPTIMIZERS = ("sgd", "nag", "adam", "rmsprop", "adagrad", "adadelta", "ftml", "lamb", "signum")
DTYPES = ("float32", "float16")


# --- typed list options: validated when parsed, stored as lists (never as "30,60" strings) ---


def int_list(text: str | list) -> list[int]:
    """'30,60,90' -> [30, 60, 90]; '' -> []."""
    if isinstance(text, list):
        return [int(x) for x in text]
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 30,60, got {text!r}"
        )


def gpu_list(text: str | list) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; '' (or 'cpu') -> [] meaning CPU."""
    if isinstance(text, list):
        return [int(x) for x in text]
    if str(text).strip().lower() in ("", "cpu", "none"):
        return []
    values = int_list(text)
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"GPU ids must be distinct and >= 0, got {text!r}")
    return values


def image_shape(text: str | list) -> list[int]:
    """'3,224,224' -> [3, 224, 224]; channels 1 or 3, sides >= 8."""
    shape = int_list(text)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape[1:]) < 8:
        raise argparse.ArgumentTypeError(
            f"expected C,H,W with C 1 or 3 and H,W >= 8, such as 3,224,224; got {text!r}"
        )
    return shape


def float_list(text: str | list) -> list[float]:
    if isinstance(text, list):
        return [float(x) for x in text]
    try:
        return [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


# --- the groups, composable as in MXNet's common/fit.py and common/data.py ---


def add_fit_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Model, optimisation, kvstore, checkpoint and troubleshooting options (common/fit.py)."""
    g = parser.add_argument_group("Training", "model and optimisation")
    g.add_argument("--network", default="resnet", choices=NETWORKS, help="the network to train")
    g.add_argument(
        "--num-layers", type=int, default=50, help="resnet depth: 18, 34, 50, 101 or 152"
    )
    g.add_argument(
        "--gpus", type=gpu_list, default=[], help="GPU ids such as 0,1,2,3; empty means CPU"
    )
    g.add_argument("--kv-store", default="device", choices=KV_STORES, help="key-value store type")
    g.add_argument(
        "--num-epochs", type=positive_int, default=80, help="total epochs (counted from 0)"
    )
    g.add_argument("--lr", type=float, default=0.1, help="initial learning rate")
    g.add_argument("--lr-factor", type=float, default=0.1, help="lr multiplier at each step epoch")
    g.add_argument(
        "--lr-step-epochs",
        type=int_list,
        default=[30, 60],
        help="epochs at which lr steps, e.g. 30,60",
    )
    g.add_argument("--initializer", default="default", choices=("default", "xavier", "msra"))
    g.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS)
    g.add_argument("--mom", type=float, default=0.9, help="momentum (sgd, nag)")
    g.add_argument("--wd", type=float, default=0.0001, help="weight decay")
    g.add_argument(
        "--batch-size",
        type=positive_int,
        default=128,
        help="batch size PER WORKER, split evenly across its --gpus (as MXNet defines it)",
    )
    g.add_argument(
        "--disp-batches", type=positive_int, default=20, help="log speed every N batches"
    )
    g.add_argument(
        "--model-prefix",
        "--model",
        dest="model_prefix",
        default=None,
        help="checkpoint prefix: PREFIX-symbol.json, PREFIX-NNNN.params",
    )
    g.add_argument("--save-period", type=positive_int, default=1, help="checkpoint every N epochs")
    g.add_argument(
        "--save-batches",
        type=int,
        default=0,
        help="also checkpoint every N batches within an epoch (0: off), for resume mid-epoch",
    )
    g.add_argument(
        "--load-epoch", type=int, default=None, help="resume from PREFIX-NNNN.params at this epoch"
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="resume from the newest complete checkpoint of --model-prefix (epoch or batch), if any",
    )
    g.add_argument("--top-k", type=int, default=0, help="also report top-k accuracy (0: off)")
    g.add_argument("--loss", default="", help="extra metric: ce (cross-entropy)")
    g.add_argument(
        "--dtype", default="float32", choices=DTYPES, help="float16 trains in half precision"
    )
    g.add_argument(
        "--mirror",
        action="store_true",
        help="set MXNET_BACKWARD_DO_MIRROR=1: recompute cheap layers in backward to save memory",
    )
    g.add_argument(
        "--test-io", action="store_true", help="read and decode the data only; report images/s"
    )
    g.add_argument(
        "--benchmark",
        action="store_true",
        help="train on synthetic data: compute and communication only, no IO",
    )
    g.add_argument(
        "--num-batches",
        type=int,
        default=0,
        help="stop each epoch after N batches (test-io, benchmark; 0: a full epoch)",
    )
    g.add_argument("--seed", type=int, default=None, help="random seed (mxnet, numpy, shuffling)")
    g.add_argument(
        "--config", default=None, help="TOML or JSON file of option defaults; flags override it"
    )
    return g


def add_data_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Where the data is and what it looks like (common/data.py)."""
    g = parser.add_argument_group("Data", "the RecordIO input")
    g.add_argument("--data-train", default=None, help="a .rec file or a directory of .rec chunks")
    g.add_argument("--data-val", default=None, help="a .rec file or a directory of .rec chunks")
    g.add_argument("--rgb-mean", type=float_list, default=[123.68, 116.779, 103.939])
    g.add_argument("--rgb-std", type=float_list, default=[1.0, 1.0, 1.0])
    g.add_argument("--pad-size", type=int, default=0)
    g.add_argument("--fill-value", type=int, default=127)
    g.add_argument(
        "--image-shape", type=image_shape, default=[3, 224, 224], help="C,H,W of the network input"
    )
    g.add_argument(
        "--num-classes", type=positive_int, default=1000, help="must match the label map"
    )
    g.add_argument(
        "--num-examples",
        type=positive_int,
        default=1281167,
        help="training images in all chunks; sets the epoch length and lr schedule",
    )
    g.add_argument(
        "--data-nthreads", type=positive_int, default=4, help="decoding threads per worker"
    )
    return g


# (flag, type, default, help) in --help order; names follow ImageRecordIter (common/data.py)
_AUG_ARGS: tuple[tuple[str, type, float | int | None, str | None], ...] = (
    ("--random-crop", int, 0, "1: random crop, 0: centre crop"),
    ("--random-mirror", int, 0, "1: random horizontal flip"),
    ("--max-random-h", int, 0, "max hue change (0-180)"),
    ("--max-random-s", int, 0, "max saturation change (0-255)"),
    ("--max-random-l", int, 0, "max lightness change (0-255)"),
    ("--min-random-aspect-ratio", float, None, None),
    ("--max-random-aspect-ratio", float, 0.0, None),
    ("--max-random-rotate-angle", int, 0, None),
    ("--max-random-shear-ratio", float, 0.0, None),
    ("--max-random-scale", float, 1.0, None),
    (
        "--min-random-scale",
        float,
        1.0,
        "for data packed at short edge 480 and 224 crops the tutorial uses 0.533",
    ),
    ("--max-random-area", float, 1.0, None),
    ("--min-random-area", float, 1.0, None),
    ("--min-crop-size", int, -1, None),
    ("--max-crop-size", int, -1, None),
    ("--brightness", float, 0.0, None),
    ("--contrast", float, 0.0, None),
    ("--saturation", float, 0.0, None),
    ("--pca-noise", float, 0.0, None),
    (
        "--random-resized-crop",
        int,
        0,
        "1: Inception-style crop of random area and aspect ratio, resized to the input",
    ),
)


def add_aug_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Augmentation, named as ImageRecordIter names it (common/data.py)."""
    g = parser.add_argument_group("Augmentation", "random transforms of training images")
    for flag, kind, default, text in _AUG_ARGS:
        g.add_argument(flag, type=kind, default=default, help=text)
    return g


def set_aug_level(parser: argparse.ArgumentParser, level: int) -> None:
    """Defaults for augmentation levels 1-3, as train_imagenet.py sets them."""
    if level >= 1:
        parser.set_defaults(random_crop=1, random_mirror=1)
    if level >= 2:
        parser.set_defaults(max_random_h=36, max_random_s=50, max_random_l=50)
    if level >= 3:
        parser.set_defaults(
            max_random_rotate_angle=10, max_random_shear_ratio=0.1, max_random_aspect_ratio=0.25
        )


def add_engine_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        default="mxnet",
        choices=("mxnet", "torch"),
        help="training engine: mxnet (this one) or torch (PyTorch DDP)",
    )


def build_train_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The full training parser with train_imagenet.py's ImageNet defaults."""
    parser = parser or argparse.ArgumentParser(prog="imgscale train")
    add_engine_arg(parser)
    add_fit_args(parser)
    add_data_args(parser)
    add_aug_args(parser)
    set_aug_level(parser, 1)
    add_torch_args(parser)
    return parser


def add_torch_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Options only the torch engine reads; the MXNet engine ignores them."""
    g = parser.add_argument_group("Torch engine", "used with --engine torch")
    g.add_argument(
        "--amp",
        default="auto",
        choices=("auto", "bf16", "off"),
        help="bf16 autocast: auto = on for GPUs, off on the CPU",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (slower start, faster steps)",
    )
    g.add_argument(
        "--width",
        type=int,
        default=64,
        help="resnet base width (64 is the standard network; smaller for quick tests)",
    )
    g.add_argument(
        "--decode",
        default="auto",
        choices=("auto", "cpu", "gpu"),
        help="JPEG decoding on GPUs: gpu = nvJPEG (needs torchvision), cpu = OpenCV in "
        "--data-nthreads worker processes; auto = gpu when torchvision is importable",
    )
    g.add_argument(
        "--warmup-epochs", type=float, default=0, help="linear learning-rate warm-up, in epochs"
    )
    return g


# --- --config FILE ---


def load_config(path: str) -> dict[str, Any]:
    """Read a TOML or JSON file of options; keys may use dashes or underscores; a [train] table is used if present."""
    p = pathlib.Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UserError(f"--config {path}: cannot read it ({exc.strerror})")
    except UnicodeDecodeError:
        raise UserError(f"--config {path}: not a text file (not UTF-8); give a TOML or JSON file")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UserError(
            f"--config {path}: not valid {'JSON' if p.suffix.lower() == '.json' else 'TOML'}: {exc}"
        )
    if not isinstance(data, dict):
        raise UserError(
            f"--config {path}: give a table of options (e.g. lr = 0.1), not {type(data).__name__}"
        )
    if isinstance(data.get("train"), dict):
        data = data["train"]
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _config_defaults(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """Config values converted with each option's own type, so a file is validated like the command line."""
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    values = {}
    for key, value in load_config(path).items():
        action = actions.get(key)
        if action is None or key == "config":
            raise UserError(f"--config {path}: unknown option {key!r}; see `imgscale train --help`")
        if action.type is not None and not isinstance(value, (bool,)):
            # every type here is a function; the list ones (int_list …) also take a TOML array
            convert = cast(Callable[[Any], Any], action.type)
            try:
                value = convert(value if isinstance(value, list) else str(value))
            except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
                # TypeError: an array given for a scalar option, e.g. lr = [0.1]
                raise UserError(f"--config {path}: {key}: {exc}")
        if action.choices is not None and value not in action.choices:
            raise UserError(
                f"--config {path}: {key} must be one of {', '.join(map(str, action.choices))}"
            )
        values[key] = value
    return values


def parse_with_config(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse twice: the config file's values become defaults, so flags on the command line win."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**_config_defaults(parser, known.config))
    return parser.parse_args(argv)


# --- checks and derived values ---


def validate(args: argparse.Namespace) -> None:
    """Mistakes that would waste a launch: one clear line naming the flag."""
    if args.network == "resnet" and args.num_layers not in RESNET_DEPTHS:
        raise UserError(
            f"--num-layers {args.num_layers}: resnet depth must be one of 18, 34, 50, 101, 152"
        )
    ngpu = len(args.gpus)
    if ngpu and args.batch_size % ngpu:
        raise UserError(
            f"--batch-size {args.batch_size} is per worker and is split across --gpus {','.join(map(str, args.gpus))};"
            f" make it a multiple of {ngpu} (e.g. {ngpu * max(1, args.batch_size // ngpu)})"
        )
    if args.dtype == "float16" and not args.gpus and args.engine == "mxnet":
        raise UserError(
            "--dtype float16 needs --gpus: MXNet has no float16 matrix multiply on the CPU"
        )
    if args.save_batches < 0:
        raise UserError("--save-batches must be 0 (off) or a positive number of batches")
    if args.load_epoch is not None and args.load_epoch < 0:
        raise UserError("--load-epoch must be >= 0")
    if (args.load_epoch is not None or args.resume) and not args.model_prefix:
        raise UserError("--load-epoch/--resume need --model-prefix (where the checkpoints are)")
    if args.load_epoch is not None and args.load_epoch >= args.num_epochs:
        raise UserError(
            f"--load-epoch {args.load_epoch} is not below --num-epochs {args.num_epochs}: nothing to train"
        )
    if not (args.test_io or args.benchmark) and not args.data_train:
        raise UserError(
            "--data-train is required (a .rec file or a directory of .rec chunks), or use --benchmark"
        )
    for flag, path in (("--data-train", args.data_train), ("--data-val", args.data_val)):
        if path and not args.benchmark and not os.path.exists(path):
            raise UserError(f"{flag} {path}: no such file or directory")
    check_numbers(args)
    if args.min_random_scale > args.max_random_scale:
        raise UserError("--min-random-scale must not exceed --max-random-scale")


def check_numbers(args: argparse.Namespace) -> None:
    """Values argparse's types accept but training cannot use."""
    if not args.lr > 0:
        raise UserError(f"--lr {args.lr}: give a learning rate above 0, e.g. 0.1")
    for flag, values in (("--rgb-mean", args.rgb_mean), ("--rgb-std", args.rgb_std)):
        if len(values) not in (1, 3):
            raise UserError(
                f"{flag} {','.join(map(str, values))}: give 3 values R,G,B (or 1 for all)"
            )
    if any(not v > 0 for v in args.rgb_std):
        raise UserError(
            f"--rgb-std {','.join(map(str, args.rgb_std))}: every value must be above 0"
        )
    prefix = args.model_prefix
    if prefix:
        folder = os.path.dirname(os.path.abspath(prefix))
        blocker = next((p for p in [folder, *_parents(folder)] if os.path.isfile(p)), None)
        if blocker:
            raise UserError(
                f"--model-prefix {prefix}: {blocker} is a file, not a folder; choose another prefix"
            )


def _parents(folder: str) -> list[str]:
    out = []
    while os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
        out.append(folder)
    return out


def batch_sizes(batch_size: int, gpus: Sequence[int], num_workers: int) -> dict[str, int]:
    """Per-GPU, per-worker and global batch; --batch-size is per worker, split across its GPUs."""
    devices = max(1, len(gpus))
    return {
        "per_gpu": batch_size // devices,
        "per_worker": batch_size,
        "global": batch_size * num_workers,
    }


def epoch_size(num_examples: int, batch_size: int, num_workers: int) -> int:
    """Batches per epoch on every worker (same everywhere, so dist_sync never waits on a worker that stopped)."""
    return max(1, num_examples // (batch_size * num_workers))


def save_resolved(args: argparse.Namespace, path: str) -> str:
    """Write the resolved options as JSON (temp name, then rename) so a run can be repeated exactly."""
    data = {k: v for k, v in sorted(vars(args).items()) if not callable(v)}
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)
    return path


def merge_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """For a namespace argparse already filled (the `imgscale` CLI): config values replace options left at
    their defaults. (`python -m engine.train.run` parses twice instead, so there a flag always wins.)"""
    if not getattr(args, "config", None):
        return args
    merged = argparse.Namespace(**vars(args))
    for key, value in _config_defaults(parser, args.config).items():
        if getattr(args, key) == parser.get_default(key):
            setattr(merged, key, value)
    return merged
