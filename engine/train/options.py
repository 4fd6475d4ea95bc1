"""train_imagenet-compatible options as composable argparse groups, a --config file, and the saved run options."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from engine import options as opt
from engine.errors import UserError
from engine.paths import write_text_atomic
from engine.train.checkpoints import DEFAULT_KEEP, refuse_overwrite
from engine.train.launch import registry

NETWORKS = ("resnet", "alexnet", "inception-v3", "vgg", "mobilenet")
# Smallest input side each network accepts (its strides and pooling windows must still fit).
RESNET_DEPTHS = (18, 34, 50, 101, 152)
KV_STORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")
OPTIMIZERS = ("sgd", "nag", "adam", "rmsprop", "adagrad", "adadelta", "ftml", "lamb", "signum")
DTYPES = ("float32", "float16")


# --- typed list options: validated when parsed, stored as lists (never as "30,60" strings) ---


def _numbers(text: str | list, kind: Callable[[Any], Any], what: str) -> list:
    """A comma-separated list of ``kind`` (or a list read back from JSON); '' -> []."""
    if isinstance(text, list):
        return [kind(x) for x in text]
    try:
        return [kind(x) for x in str(text).split(",") if x.strip()]
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")


def int_list(text: str | list) -> list[int]:
    """'30,60,90' -> [30, 60, 90]; '' -> []."""
    return _numbers(text, int, "integers such as 30,60")


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


# Largest input side: 15x the biggest network input here (inception-v3's 299); a batch of larger
# images is gigabytes per image before the first step.
MAX_SIDE = 4096


def image_shape(text: str | list) -> list[int]:
    """'3,224,224' -> [3, 224, 224]; channels 1 or 3, sides 8 to MAX_SIDE."""
    shape = int_list(text)
    if (
        len(shape) != 3
        or shape[0] not in (1, 3)
        or not 8 <= min(shape[1:]) <= max(shape[1:]) <= MAX_SIDE
    ):
        raise argparse.ArgumentTypeError(
            f"expected C,H,W with C 1 or 3 and H,W from 8 to {MAX_SIDE}, such as 3,224,224; got {text!r}"
        )
    return shape


def float_list(text: str | list) -> list[float]:
    """'0.1,0.5' -> [0.1, 0.5]; '' -> []; nan and inf are refused."""
    return _numbers(text, opt.finite, "finite numbers")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def switch(text: str) -> bool:
    """An on/off flag's optional value, as train_imagenet.py writes it (1/0) or in words."""
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: give 1 or 0 (or leave the value out for 1)")


# --- the options: one dataclass, grouped as MXNet's common/fit.py and common/data.py group them ---
FIT, DATA, AUG, TORCH = "Training", "Data", "Augmentation", "Torch engine"
# A field made with ``console=True`` is one of a workspace's [train] keys: CLUSTER's value is the
# workspace's until its workspace.toml says otherwise, the console's training form shows it and
# every worker gets it as a flag. The other fields keep their values unless extra_args set them.


def _fit(default: Any, help: str = "", console: bool = False, **spec: Any) -> Any:
    return opt.option(default, help, group=FIT, console=console, **spec)


def _data(default: Any, help: str = "", console: bool = False, **spec: Any) -> Any:
    return opt.option(default, help, group=DATA, console=console, **spec)


def _aug(default: Any, help: str = "", console: bool = False, **spec: Any) -> Any:
    return opt.option(default, help, group=AUG, console=console, **spec)


def _torch(default: Any, help: str = "", console: bool = False, **spec: Any) -> Any:
    return opt.option(default, help, group=TORCH, console=console, **spec)


@dataclass(frozen=True)
class TrainOptions:
    """train_imagenet.py's options (names, defaults and meaning), plus the torch engine's own."""

    engine: str = opt.option(
        registry.DEFAULT,
        "training engine: mxnet (this one) or torch (PyTorch DDP)",
        choices=tuple(registry.ENGINES),
    )
    # Training: model and optimisation (common/fit.py)
    network: str = _fit("resnet", "the network to train", choices=NETWORKS, console=True)
    num_layers: int = _fit(50, "resnet depth: 18, 34, 50, 101 or 152", console=True)
    gpus: list[int] = _fit(
        [], "GPU ids such as 0,1,2,3; empty means CPU", parse=gpu_list, console=True
    )
    kv_store: str = _fit("device", "key-value store type", choices=KV_STORES, console=True)
    num_epochs: int = _fit(
        80, "total epochs (counted from 0)", parse=positive_int, low=1, console=True
    )
    lr: float = _fit(0.1, "initial learning rate", low=0, high=100, console=True)
    lr_factor: float = _fit(0.1, "lr multiplier at each step epoch", low=0, high=1)
    lr_step_epochs: list[int] = _fit(
        [30, 60], "epochs at which lr steps, e.g. 30,60", parse=int_list
    )
    initializer: str = _fit("default", choices=("default", "xavier", "msra"))
    optimizer: str = _fit("sgd", choices=OPTIMIZERS)
    mom: float = _fit(0.9, "momentum (sgd, nag)", low=0, high=1)
    wd: float = _fit(0.0001, "weight decay", low=0, high=1)
    batch_size: int = _fit(
        128,
        "batch size PER WORKER, split evenly across its --gpus (as MXNet defines it)",
        parse=positive_int,
        low=1,
        console=True,
    )
    disp_batches: int = _fit(
        20, "log speed every N batches", parse=positive_int, low=1, console=True
    )
    model_prefix: str | None = _fit(
        None,
        "checkpoint prefix: PREFIX-symbol.json, PREFIX-NNNN.params",
        flags=("--model-prefix", "--model"),
        console=True,
    )
    tensorboard_dir: str | None = _fit(
        None,
        "TensorBoard event files (one run per rank: DIR/rankR); default PREFIX-tb beside "
        "--model-prefix, none without one; 'off': none (needs tensorboardX: imgscale[tb])",
        metavar="DIR",
    )
    save_period: int = _fit(1, "checkpoint every N epochs", parse=positive_int, low=1)
    keep_checkpoints: int = _fit(
        DEFAULT_KEEP,
        "keep the newest N epoch checkpoints (0: all) and every --save-period multiple above 1",
        metavar="N",
        low=0,
        console=True,
    )
    save_batches: int = _fit(
        0,
        "also checkpoint every N batches within an epoch (0: off), for resume mid-epoch",
        parse=int,
        low=0,
    )
    load_epoch: int | None = _fit(
        None, "resume from PREFIX-NNNN.params at this epoch", parse=int, low=0
    )
    resume: bool = _fit(
        False,
        "resume from the newest complete checkpoint of --model-prefix (epoch or batch), if any",
    )
    fresh: bool = _fit(
        False,
        "train from scratch although --model-prefix holds checkpoints: they are deleted first "
        "(without --resume, --fresh or a new prefix, such a run is refused)",
    )
    top_k: int = _fit(0, "also report top-k accuracy (0: off)")
    loss: str = _fit("", "extra metric: ce (cross-entropy)")
    dtype: str = _fit("float32", "float16 trains in half precision", choices=DTYPES)
    mirror: bool = _fit(
        False,
        "set MXNET_BACKWARD_DO_MIRROR=1: recompute cheap layers in backward to save memory",
        console=True,
    )
    # train_imagenet.py spells these `--test-io 1` and `--benchmark 1`: both forms are accepted.
    test_io: bool = _fit(
        False, "read and decode the data only; report images/s", parse=switch, metavar="1|0"
    )
    benchmark: bool = _fit(
        False,
        "train on synthetic data: compute and communication only, no IO",
        parse=switch,
        metavar="1|0",
    )
    num_batches: int = _fit(
        0, "stop each epoch after N batches (test-io, benchmark; 0: a full epoch)"
    )
    seed: int | None = _fit(None, "random seed (mxnet, numpy, shuffling)", parse=int)
    config: str | None = _fit(None, "TOML or JSON file of option defaults; flags override it")
    # Data: the RecordIO input (common/data.py)
    data_train: str | None = _data(None, "a .rec file or a directory of .rec chunks")
    data_val: str | None = _data(None, "a .rec file or a directory of .rec chunks")
    rgb_mean: list[float] = _data([123.68, 116.779, 103.939], parse=float_list)
    rgb_std: list[float] = _data([1.0, 1.0, 1.0], parse=float_list)
    pad_size: int = _data(0, low=0, high=MAX_SIDE)
    fill_value: int = _data(127, low=0, high=255)
    image_shape: list[int] = _data(
        [3, 224, 224], "C,H,W of the network input", parse=image_shape, console=True
    )
    num_classes: int = _data(1000, "must match the label map", parse=positive_int, low=1)
    num_examples: int = _data(
        1281167,
        "training images in all chunks; sets the epoch length and lr schedule",
        parse=positive_int,
        low=1,
    )
    max_bad_images: float = _data(
        0.01,
        "torch engine: largest share of a worker's images in an epoch that may fail to decode "
        "(each is trained as a black image) before training stops and names the file; MXNet's "
        "reader stops at the first",
        low=0,
        high=1,
    )
    data_nthreads: int = _data(
        4,
        "decoding threads per worker",
        parse=positive_int,
        low=1,
        high=opt.PROCESS_CAP,
        high_why=opt.PROCESS_WHY,
        console=True,
    )
    # Augmentation, named as ImageRecordIter names it (common/data.py)
    random_crop: int = _aug(0, "1: random crop, 0: centre crop")
    random_mirror: int = _aug(0, "1: random horizontal flip")
    max_random_h: int = _aug(0, "max hue change", low=0, high=180)
    max_random_s: int = _aug(0, "max saturation change", low=0, high=255)
    max_random_l: int = _aug(0, "max lightness change", low=0, high=255)
    min_random_aspect_ratio: float | None = _aug(None, parse=opt.finite, low=0.01, high=100)
    max_random_aspect_ratio: float = _aug(0.0, low=0, high=100)
    max_random_rotate_angle: int = _aug(0, low=0, high=360)
    max_random_shear_ratio: float = _aug(0.0, low=0, high=1)
    max_random_scale: float = _aug(1.0, low=0.01, high=100)
    min_random_scale: float = _aug(
        1.0,
        "for data packed at short edge 480 and 224 crops the tutorial uses 0.533",
        low=0.01,
        high=100,
    )
    max_random_area: float = _aug(1.0, low=0.01, high=1)
    min_random_area: float = _aug(1.0, low=0.01, high=1)
    min_crop_size: int = _aug(-1)
    max_crop_size: int = _aug(-1)
    brightness: float = _aug(0.0, low=0, high=1)
    contrast: float = _aug(0.0, low=0, high=1)
    saturation: float = _aug(0.0, low=0, high=1)
    pca_noise: float = _aug(0.0, low=0, high=1)
    random_resized_crop: int = _aug(
        0, "1: Inception-style crop of random area and aspect ratio, resized to the input"
    )
    # The torch engine's own; the MXNet engine ignores them
    amp: str = _torch(
        "auto",
        "bf16 autocast: auto = on for GPUs, off on the CPU",
        choices=("auto", "bf16", "off"),
    )
    compile: bool = _torch(False, "torch.compile the network (slower start, faster steps)")
    width: int = _torch(
        64, "resnet base width (64 is the standard network; smaller for quick tests)", low=1
    )
    decode: str = _torch(
        "auto",
        "JPEG decoding on GPUs: gpu = nvJPEG (needs torchvision), cpu = OpenCV in "
        "--data-nthreads worker processes; auto = gpu when torchvision is importable",
        choices=("auto", "cpu", "gpu"),
    )
    warmup_epochs: float = _torch(0.0, "linear learning-rate warm-up, in epochs", low=0, high=1000)
    dist_timeout: float = _torch(
        5.0,
        "seconds a training step's all-reduce waits for the other ranks before the job fails "
        "(a dead or hung rank is noticed this fast); raise it for slow shared storage",
        low=1,
        high=3600,
    )


def with_flags(train: TrainOptions, argv: Sequence[str]) -> TrainOptions:
    """``train`` with more flags typed by a user applied on top (a workspace's extra_args)."""
    if not argv:
        return train
    parser = build_train_parser(argparse.ArgumentParser(prog="imgscale train", add_help=False))
    parser.set_defaults(**dataclasses.asdict(train))
    try:
        args = parser.parse_args(list(argv))
    except SystemExit:  # argparse printed what is wrong
        raise UserError(f"extra training flags not valid: {' '.join(argv)}") from None
    return opt.from_args(TrainOptions, args)


@dataclass(frozen=True)
class JobOptions:
    """What the console adds to training when it launches a job on the workspace's hosts."""

    num_servers: int = opt.option(
        1, "parameter servers (dist kv-stores only)", low=0, high=opt.FANOUT_CAP
    )
    workers: int = opt.option(
        0, "workers in all (0: one per host)", low=0, high=opt.FANOUT_CAP, console=False
    )
    omp_threads: int = opt.option(
        1,
        "OMP_NUM_THREADS of every process",
        low=1,
        high=opt.PROCESS_CAP,
        high_why=opt.PROCESS_WHY,
        console=False,
    )
    max_restarts: int = opt.option(
        0, "relaunch after a fault up to K times", low=0, high=1000, console=False
    )
    extra_args: list[str] = opt.option([], "more `imgscale train` flags, as typed")


@dataclass(frozen=True)
class CheckOptions:
    """What `imgscale check` checks the training options against (its "Pre-flight" group)."""

    hosts: str | None = opt.option(
        None, "hosts file (launch.py format, slots=N)", flags=("--hosts", "-H")
    )
    num_workers: int | None = opt.num_workers_option(None, "total workers")
    num_servers: int | None = opt.num_servers_option("total servers")
    label_map: str | None = opt.option(None, "the PREFIX_labels.txt written by `imgscale list`")
    lst: list[str] | None = opt.option(None, "a training .lst file (repeatable)", append=True)
    packed_edge: int | None = opt.option(
        None,
        "short edge the data was packed at (default: read from the first records)",
        parse=positive_int,
        low=1,
    )
    port: int | None = opt.option(
        None,
        "scheduler port to check is free (DMLC_PS_ROOT_PORT)",
        parse=int,
        low=1,
        high=65535,
    )
    json: bool = opt.option(False, "print the findings as JSON")


# A new workspace trains a small network on its own cluster: the console=True fields are its own.
WORKSPACE_FIELDS = tuple(f.name for f, spec in opt.fields(TrainOptions) if spec.console)
# Of those, what every worker gets as ``--key value`` as it is; the others are set apart: the engine
# picks the command, --gpus only when set, mirror travels in the environment, model_prefix by mode.
SET_APART = ("engine", "gpus", "mirror", "model_prefix")
PASSED_AS_IS = tuple(f for f in WORKSPACE_FIELDS if f not in SET_APART)
JOB_FIELDS = tuple(f.name for f, _ in opt.fields(JobOptions))
WORKSPACE_KEYS = (*WORKSPACE_FIELDS, *JOB_FIELDS)  # what a [train] table may set
IMAGENET = TrainOptions(random_crop=1, random_mirror=1)  # the parser's: augmentation level 1
CLUSTER = TrainOptions(
    num_layers=18, batch_size=32, kv_store="dist_sync", num_epochs=1, model_prefix="model/resnet"
)


@dataclass(frozen=True)
class WorkspaceTrain:
    """A workspace's [train] table, typed: the training options (CLUSTER's where the table is
    silent) and the job the console launches with them."""

    train: TrainOptions = CLUSTER
    job: JobOptions = JobOptions()

    @classmethod
    def build(cls, values: dict[str, Any], base: WorkspaceTrain | None = None) -> WorkspaceTrain:
        """From [train] values (stored or typed in) over ``base``: typed, checked, unknown keys
        refused."""
        base = base or cls()
        unknown = sorted(set(values) - set(WORKSPACE_KEYS))
        if unknown:
            raise UserError(
                f"train.{unknown[0]} is not a training or job option; "
                f"options: {', '.join(WORKSPACE_KEYS)}"
            )
        train = {k: v for k, v in values.items() if k in WORKSPACE_FIELDS}
        job = {k: v for k, v in values.items() if k in JOB_FIELDS}
        return cls(
            train=opt.build(TrainOptions, train, base=base.train, where="train."),
            job=opt.build(JobOptions, job, base=base.job, where="train."),
        )

    def value(self, name: str) -> Any:
        """One [train] key's value, from the group that declares it."""
        return getattr(self.job if name in JOB_FIELDS else self.train, name)

    def values(self) -> dict[str, Any]:
        """The [train] keys a workspace shows and saves, with their values."""
        train = {name: getattr(self.train, name) for name in WORKSPACE_FIELDS}
        return {
            **train,
            **{f.name: getattr(self.job, f.name) for f, s in opt.fields(JobOptions) if s.console},
        }


def workspace_defaults() -> dict[str, Any]:
    """workspace.toml's [train] table of a new workspace."""
    return WorkspaceTrain().values()


def overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Other values for existing [train] options (the demo's): typed and checked, never new keys."""
    unknown = sorted(set(values) - set(WORKSPACE_KEYS))
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a training or job option")
    typed = WorkspaceTrain.build(values)
    return {name: typed.value(name) for name in values}


def _add_group(parser: argparse.ArgumentParser, name: str, text: str) -> argparse._ArgumentGroup:
    group = parser.add_argument_group(name, text)
    opt.add_arguments(group, TrainOptions, group=name)
    return group


def add_fit_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Model, optimisation, kvstore, checkpoint and troubleshooting options (common/fit.py)."""
    return _add_group(parser, FIT, "model and optimisation")


def add_data_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Where the data is and what it looks like (common/data.py)."""
    return _add_group(parser, DATA, "the RecordIO input")


def add_aug_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Augmentation, named as ImageRecordIter names it (common/data.py)."""
    return _add_group(parser, AUG, "random transforms of training images")


def add_torch_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Options only the torch engine reads; the MXNet engine ignores them."""
    return _add_group(parser, TORCH, "used with --engine torch")


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
    opt.add_arguments(parser, TrainOptions, only=("engine",))


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
    registry.engine_named(args.engine).check_args(args)
    opt.check(args, TrainOptions)
    if (args.load_epoch is not None or args.resume) and not args.model_prefix:
        raise UserError("--load-epoch/--resume need --model-prefix (where the checkpoints are)")
    if not args.test_io:
        refuse_overwrite(args.model_prefix, args.resume, args.load_epoch, args.fresh)
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
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
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
