"""Pre-flight check (`imgscale check`): training options against the data, hosts and disk; each finding says what to change.

The checks are pure functions over Facts, so each is unit-tested; engine.train.facts defines and gathers them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from engine import options as opt
from engine.errors import UserError
from engine.train.checkpoints import kept_epochs, saved_epochs
from engine.train.facts import Facts, gather_facts
from engine.train.launch import registry
from engine.train.launch.engines import is_distributed
from engine.train.options import CheckOptions, TrainOptions, build_train_parser

ERROR, WARNING, INFO = "error", "warning", "info"
TUTORIAL_EDGE = 480  # the tutorial packs with im2rec --resize 480
# Approximate parameters (millions) for 1000 classes, to size checkpoints without building the network.
PARAMS_M = {
    ("resnet", 18): 11.7,
    ("resnet", 34): 21.8,
    ("resnet", 50): 25.6,
    ("resnet", 101): 44.5,
    ("resnet", 152): 60.2,
    ("alexnet", 0): 61.1,
    ("inception-v3", 0): 23.9,
    ("vgg", 0): 138.4,
    ("mobilenet", 0): 4.2,
}


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning | info
    what: str  # what is wrong (or worth knowing), with the numbers
    change: str = ""  # what to change

    def line(self) -> str:
        return f"{self.level:<7} {self.what}" + (
            f"\n        -> {self.change}" if self.change else ""
        )


# --- the checks: each returns a list of findings ---


def check_num_classes(f: Facts) -> list[Finding]:
    if f.label_map_classes is None:
        if f.max_label is not None and f.max_label >= f.train.num_classes:
            return [
                Finding(
                    ERROR,
                    f"--num-classes {f.train.num_classes} but the lists use label {f.max_label}",
                    f"set --num-classes {f.max_label + 1}",
                )
            ]
        return [
            Finding(
                INFO,
                "no label map (PREFIX_labels.txt) found next to the lists; --num-classes not checked",
                "pass --label-map FILE to check it",
            )
        ]
    if f.label_map_classes != f.train.num_classes:
        return [
            Finding(
                ERROR,
                f"--num-classes {f.train.num_classes} but {f.label_map} has {f.label_map_classes} classes",
                f"set --num-classes {f.label_map_classes}",
            )
        ]
    return [Finding(INFO, f"--num-classes {f.train.num_classes} matches {f.label_map}")]


def check_labels(f: Facts) -> list[Finding]:
    """Labels training would refuse (outside 0..--num-classes-1) or that the label map does not give."""
    out = []
    for source, labels in (("records", f.data_labels), ("lists", f.list_labels)):
        if labels is None:
            continue
        low, high = labels
        if low < 0 or high >= f.train.num_classes:
            bad = _label_text(low if low < 0 else high)
            out.append(
                Finding(
                    ERROR,
                    f"the training {source} hold label {bad}, outside 0..{f.train.num_classes - 1} "
                    f"(--num-classes {f.train.num_classes}): training stops at it",
                    "list and pack the data again with `imgscale list`/`pack`"
                    if low < 0 or high > 100_000
                    else f"set --num-classes {int(high) + 1}, or list and pack the data again",
                )
            )
            break
        if f.label_map_labels and not {int(low), int(high)} <= f.label_map_labels:
            bad = _label_text(low if int(low) not in f.label_map_labels else high)
            out.append(
                Finding(
                    ERROR,
                    f"the training {source} hold label {bad}, which {f.label_map} does not give "
                    "any class: the data was listed with another label map",
                    "give the label map `imgscale list` wrote for this data (--label-map)",
                )
            )
            break
    return out


def _label_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def check_lists(f: Facts) -> list[Finding]:
    """Lines the packer reads anyway (paths outside ROOT) or skips (NaN/inf labels): say so."""
    return [
        Finding(
            WARNING,
            f"{lst}: {len(lines)} line(s) to look at, e.g. {lines[0]}",
            "paths outside ROOT are read as im2rec reads them; lines with NaN/inf labels are "
            "skipped by pack and listed in its skip report",
        )
        for lst, lines in f.list_oddities.items()
    ]


def check_num_examples(f: Facts) -> list[Finding]:
    if f.examples_found is None:
        return [
            Finding(
                INFO,
                "no .idx/.lst files found for --data-train; --num-examples not checked",
                "pass --lst FILE (repeatable) to check it",
            )
        ]
    if f.examples_found == f.train.num_examples:
        return [Finding(INFO, f"--num-examples {f.train.num_examples} matches {f.example_source}")]
    off = abs(f.train.num_examples - f.examples_found) / max(1, f.examples_found)
    return [
        Finding(
            ERROR if off > 0.01 else WARNING,
            f"--num-examples {f.train.num_examples} but {f.example_source} hold {f.examples_found} images "
            f"({off:.1%} off): the epoch length and learning-rate steps would be wrong",
            f"set --num-examples {f.examples_found}",
        )
    ]


def check_batch(f: Facts) -> list[Finding]:
    ngpu = max(1, len(f.train.gpus))
    workers = f.num_workers or 1
    if f.train.batch_size % ngpu:
        return [
            Finding(
                ERROR,
                f"--batch-size {f.train.batch_size} is not a multiple of the {ngpu} GPUs of each worker",
                f"use --batch-size {ngpu * max(1, f.train.batch_size // ngpu)}",
            )
        ]
    per_gpu = f.train.batch_size // ngpu
    out = [
        Finding(
            INFO,
            f"batch: {per_gpu} per {'GPU' if f.train.gpus else 'device'}, {f.train.batch_size} per worker "
            f"(--batch-size is per worker), {f.train.batch_size * workers} global over {workers} worker(s)",
        )
    ]
    if per_gpu < 8:
        out.append(
            Finding(
                WARNING,
                f"only {per_gpu} images per GPU: BatchNorm statistics get noisy and GPUs idle",
                f"use --batch-size {8 * ngpu} or more",
            )
        )
    if per_gpu > 256 and f.train.network != "alexnet":
        out.append(
            Finding(
                WARNING,
                f"{per_gpu} images per GPU is likely to run out of GPU memory for {f.train.network} "
                "(the tutorial's 8192 is a per-worker batch over many GPUs, not per GPU)",
                f"use --batch-size {32 * ngpu} (32 per GPU) and scale --lr with the global batch",
            )
        )
    batches = f.train.num_examples // (f.train.batch_size * workers)
    if batches < 1:
        out.append(
            Finding(
                ERROR,
                f"{f.train.num_examples} examples make no full global batch of {f.train.batch_size * workers}",
                "lower --batch-size or use fewer workers",
            )
        )
    return out


def check_scale(f: Facts) -> list[Finding]:
    crop = min(f.train.image_shape[1:])
    out = []
    # MXNet's symbols have fixed pooling windows; the torch nets pool adaptively and take any size
    smallest = registry.engine_named(f.train.engine).min_image_side(f.train.network)
    if crop < smallest:
        out.append(
            Finding(
                ERROR,
                f"--image-shape {','.join(map(str, f.train.image_shape))} is too small for {f.train.network}",
                f"use sides of at least {smallest}",
            )
        )
    if f.packed_edge is None or f.train.random_resized_crop:
        return out
    edge = f.packed_edge
    if edge < crop:
        out.append(
            Finding(
                WARNING,
                f"data packed at short edge {edge} ({f.packed_edge_source}) is smaller than the "
                f"{crop}-pixel input: every image is upscaled",
                f"pack with --resize at least {crop}",
            )
        )
    elif edge * f.train.min_random_scale < crop:
        out.append(
            Finding(
                ERROR,
                f"--min-random-scale {f.train.min_random_scale} shrinks {edge}-pixel images to "
                f"{edge * f.train.min_random_scale:.0f} pixels, below the {crop}-pixel crop",
                f"set --min-random-scale {crop / edge:.3f} or more",
            )
        )
    elif f.train.min_random_scale >= 1.0 and edge >= 1.5 * crop:
        suggest = round(crop * 256 / 224) / edge
        out.append(
            Finding(
                WARNING,
                f"crops of {crop} from images packed at {edge} ({f.packed_edge_source}) see only "
                f"{crop / edge:.0%} of each side",
                f"set --min-random-scale {suggest:.3f} (the tutorial uses 0.533 for 224 crops at 480)",
            )
        )
    return out


def check_data_dirs(f: Facts) -> list[Finding]:
    out = [
        Finding(ERROR, f"{path}: no such file or directory", "pack the data first, or fix the path")
        for path in f.missing_data
    ]
    out += [
        Finding(ERROR, problem, "pack the data with `imgscale pack`, or fix the path")
        for problem in f.bad_data
    ]
    for folder, names in f.stray.items():
        shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
        out.append(
            Finding(
                WARNING,
                f"{folder} holds {len(names)} non-.rec file(s): {shown}; imgscale ignores them, "
                "but MXNet's train_imagenet.py would read them as image data",
                f"move them out of {folder} (`imgscale place` keeps indexes beside it)",
            )
        )
    return out


def check_hosts(f: Facts) -> list[Finding]:
    out = []
    workers = f.num_workers
    # torch ranks all-reduce among themselves: no kvstore, no servers
    ps_lite = registry.engine_named(f.train.engine).has_servers
    if ps_lite and workers is not None and workers > 1 and not is_distributed(f.train.kv_store):
        out.append(
            Finding(
                ERROR,
                f"-n {workers} workers with --kv-store {f.train.kv_store}: they would train separately",
                "use --kv-store dist_sync (or dist_device_sync, dist_async)",
            )
        )
    if ps_lite and is_distributed(f.train.kv_store) and f.num_servers == 0:
        out.append(
            Finding(
                ERROR,
                f"--kv-store {f.train.kv_store} needs parameter servers but -s is 0",
                "use -s equal to the number of hosts (one server per host)",
            )
        )
    if f.hosts is None or workers is None:
        return out
    slots = [s for _, s, _ in f.hosts]
    if any(s is not None for s in slots):
        total = sum(s or 1 for s in slots)
        if workers > total:
            out.append(
                Finding(
                    ERROR,
                    f"-n {workers} workers but the hosts offer {total} slots",
                    f"use -n {total} or add slots/hosts",
                )
            )
    elif workers > len(f.hosts):
        out.append(
            Finding(
                WARNING,
                f"-n {workers} workers on {len(f.hosts)} hosts: several workers share a host "
                "and its GPUs",
                f"give each host slots=N and split GPUs with gpus=, or use -n {len(f.hosts)}",
            )
        )
    if f.num_servers and f.num_servers > 2 * len(f.hosts):
        out.append(
            Finding(
                WARNING,
                f"-s {f.num_servers} servers on {len(f.hosts)} hosts",
                f"one server per host is usual: -s {len(f.hosts)}",
            )
        )
    return out


def check_gpus(f: Facts) -> list[Finding]:
    out = []
    for name, _, allowed in f.hosts or []:
        if allowed is not None and f.train.gpus and not set(f.train.gpus) <= set(allowed):
            out.append(
                Finding(
                    ERROR,
                    f"--gpus {_ids(f.train.gpus)} but the hosts file allows gpus={_ids(allowed)} on {name}",
                    f"use --gpus within {_ids(allowed)}",
                )
            )
    for name, count in sorted(f.host_gpu_counts.items()):
        if count is None:
            out.append(Finding(INFO, f"{name}: GPU count unknown (not probed)"))
        elif f.train.gpus and max(f.train.gpus) >= count:
            have = f"GPUs 0-{count - 1}" if count else "no GPU"
            out.append(
                Finding(
                    ERROR,
                    f"--gpus {_ids(f.train.gpus)} but {name} has {have}",
                    f"use --gpus {_ids(range(count))}"
                    if count
                    else "leave --gpus empty to train on CPU",
                )
            )
        elif not f.train.gpus and count:
            out.append(
                Finding(
                    WARNING,
                    f"{name} has {count} GPU(s) but --gpus is empty: training runs on CPU",
                    f"add --gpus {_ids(range(count))}",
                )
            )
    return out


def _ids(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in values)


def check_mxnet(f: Facts) -> list[Finding]:
    builds = {k: v for k, v in f.host_mxnet.items()}
    if not builds:
        return []
    out = [
        Finding(
            ERROR,
            f"{host}: mxnet not importable",
            "install the same mxnet build there (pip install mxnet==1.9.1 or mxnet-cu112==1.9.1)",
        )
        for host, build in sorted(builds.items())
        if build is None
    ]
    found = {b for b in builds.values() if b is not None}
    if len(found) > 1:
        detail = "; ".join(f"{h}: {b}" for h, b in sorted(builds.items()) if b)
        out.append(
            Finding(
                ERROR,
                f"different mxnet builds across hosts ({detail})",
                "install the same mxnet version and variant on every host",
            )
        )
    if is_distributed(f.train.kv_store):
        for host, build in sorted(builds.items()):
            if build and "dist_kvstore=no" in build:
                out.append(
                    Finding(
                        ERROR,
                        f"{host}: mxnet built without the distributed kvstore",
                        "install a pip mxnet build (they include ps-lite)",
                    )
                )
    return out


def check_ports(f: Facts) -> list[Finding]:
    return [
        Finding(
            ERROR,
            f"port {p} is in use on this host",
            "pick another port or stop what holds it (ss -ltnp)",
        )
        for p in f.busy_ports
    ]


def checkpoint_bytes(f: Facts) -> int:
    """Bytes of the checkpoints a run keeps: params (+ momentum states) per epoch --keep-checkpoints keeps."""
    millions = PARAMS_M.get(
        (f.train.network, f.train.num_layers if f.train.network == "resnet" else 0), 60.0
    )
    per_class = 2048 if f.train.network == "resnet" and f.train.num_layers >= 50 else 512
    params = millions * 1e6 + (f.train.num_classes - 1000) * per_class
    saves = len(
        kept_epochs(
            saved_epochs(f.train.num_epochs, f.train.save_period),
            f.train.keep_checkpoints,
            f.train.save_period,
        )
    )
    return int(params * 4 * 2 * max(1, saves))


def check_old_checkpoints(f: Facts) -> list[Finding]:
    """Training refuses to start over an earlier run's checkpoints unless told what to do."""
    if not f.old_checkpoints:
        return []
    return [
        Finding(
            ERROR,
            f"{f.checkpoint_dir} holds {len(f.old_checkpoints)} checkpoint(s) of an earlier run "
            f"(newest {os.path.basename(f.old_checkpoints[-1])}) under this --model-prefix",
            "add --resume to continue from them, --fresh to delete them and start anew, "
            "or choose a new --model-prefix",
        )
    ]


def check_disk(f: Facts) -> list[Finding]:
    if f.free_disk_bytes is None or f.checkpoint_dir is None:
        return []
    need = checkpoint_bytes(f)
    gib = 1 << 30
    if need > f.free_disk_bytes:
        return [
            Finding(
                ERROR,
                f"checkpoints need about {need / gib:.1f} GiB but {f.checkpoint_dir} has "
                f"{f.free_disk_bytes / gib:.1f} GiB free",
                "free space, raise --save-period, or point --model-prefix at a bigger disk",
            )
        ]
    if need > 0.8 * f.free_disk_bytes:
        return [
            Finding(
                WARNING,
                f"checkpoints would fill {need / f.free_disk_bytes:.0%} of the free space in "
                f"{f.checkpoint_dir}",
                "raise --save-period or free space",
            )
        ]
    return [
        Finding(
            INFO,
            f"checkpoints: about {need / gib:.1f} GiB of {f.free_disk_bytes / gib:.1f} GiB free",
        )
    ]


CHECKS = (
    check_num_classes,
    check_labels,
    check_num_examples,
    check_lists,
    check_batch,
    check_scale,
    check_data_dirs,
    check_hosts,
    check_gpus,
    check_mxnet,
    check_ports,
    check_old_checkpoints,
    check_disk,
)
# About the data: a --benchmark run reads none (synthetic batches), so these say nothing about it.
DATA_CHECKS = (check_num_classes, check_labels, check_num_examples, check_scale, check_data_dirs)


def run_checks(facts: Facts) -> list[Finding]:
    checks = [c for c in CHECKS if not (facts.train.benchmark and c in DATA_CHECKS)]
    findings = [finding for check in checks for finding in check(facts)]
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(findings, key=lambda x: order[x.level])


def preflight(
    train: TrainOptions | argparse.Namespace, check: CheckOptions | None = None
) -> list[Finding]:
    """All findings for training options (TrainOptions or parsed flags) against ``check``'s cluster and data."""
    return run_checks(gather_facts(train, check or CheckOptions()))


def preflight_argv(
    train_argv: Sequence[str],
    hosts: str | None = None,
    num_workers: int | None = None,
    num_servers: int | None = None,
    port: int | None = None,
) -> list[Finding]:
    """Findings for a training command line (what the launcher is about to run on every host)."""
    parser = build_train_parser(argparse.ArgumentParser(prog="imgscale train", add_help=False))
    try:
        args = parser.parse_args(list(train_argv))
    except SystemExit:  # argparse printed what is wrong
        raise UserError(f"training options not valid: {' '.join(train_argv)}") from None
    check = CheckOptions(hosts=hosts, num_workers=num_workers, num_servers=num_servers, port=port)
    return preflight(args, check)


def main(args: argparse.Namespace, across_hosts: Sequence[Finding] = ()) -> int:
    """`imgscale check`: print the findings (with those from reaching the hosts, ``across_hosts``);
    exit status 1 when any is an error."""
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    own = preflight(args, opt.from_args(CheckOptions, args))
    findings = sorted([*own, *across_hosts], key=lambda x: order[x.level])
    if args.json:
        print(json.dumps([asdict(x) for x in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
        errors = sum(1 for x in findings if x.level == ERROR)
        warnings = sum(1 for x in findings if x.level == WARNING)
        print(f"{errors} error(s), {warnings} warning(s)")
    return 1 if any(x.level == ERROR for x in findings) else 0
