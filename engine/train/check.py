"""Pre-flight check (`imgscale check`): training options against the data, hosts and disk; each finding says what to change.

The checks are pure functions over gathered Facts, so each is unit-tested; gather_facts does the reading.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from engine.train.networks import MIN_SIDE

ERROR, WARNING, INFO = "error", "warning", "info"
TUTORIAL_EDGE = 480  # the tutorial packs with im2rec --resize 480
# Approximate parameters (millions) for 1000 classes, to size checkpoints without building the network.
PARAMS_M = {("resnet", 18): 11.7, ("resnet", 34): 21.8, ("resnet", 50): 25.6, ("resnet", 101): 44.5,
            ("resnet", 152): 60.2, ("alexnet", 0): 61.1, ("inception-v3", 0): 23.9, ("vgg", 0): 138.4,
            ("mobilenet", 0): 4.2}


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning | info
    what: str  # what is wrong (or worth knowing), with the numbers
    change: str = ""  # what to change

    def line(self) -> str:
        return f"{self.level:<7} {self.what}" + (f"\n        -> {self.change}" if self.change else "")


@dataclass
class Facts:
    """Everything the checks look at; None where it could not be found out."""

    network: str = "resnet"
    num_layers: int = 50
    num_classes: int = 1000
    num_examples: int = 1281167
    batch_size: int = 128
    gpus: list[int] = field(default_factory=list)
    kv_store: str = "device"
    image_shape: list[int] = field(default_factory=lambda: [3, 224, 224])
    min_random_scale: float = 1.0
    max_random_scale: float = 1.0
    random_resized_crop: int = 0
    num_epochs: int = 80
    save_period: int = 1
    dtype: str = "float32"
    label_map: str | None = None
    label_map_classes: int | None = None
    max_label: int | None = None  # largest label in the training lists
    example_source: str | None = None  # the .idx/.lst files counted
    examples_found: int | None = None
    packed_edge: int | None = None
    packed_edge_source: str = ""
    stray: dict[str, list[str]] = field(default_factory=dict)  # data directory -> non-.rec files in it
    missing_data: list[str] = field(default_factory=list)
    hosts: list[tuple[str, int | None, list[int] | None]] | None = None  # (name, slots, gpus=)
    num_workers: int | None = None
    num_servers: int | None = None
    host_gpu_counts: dict[str, int | None] = field(default_factory=dict)  # from probes
    host_mxnet: dict[str, str | None] = field(default_factory=dict)  # "1.9.1 dist_kvstore=yes"
    busy_ports: list[int] = field(default_factory=list)
    checkpoint_dir: str | None = None
    free_disk_bytes: int | None = None


# --- the checks: each returns a list of findings ---


def check_num_classes(f: Facts) -> list[Finding]:
    if f.label_map_classes is None:
        if f.max_label is not None and f.max_label >= f.num_classes:
            return [Finding(ERROR, f"--num-classes {f.num_classes} but the lists use label {f.max_label}",
                            f"set --num-classes {f.max_label + 1}")]
        return [Finding(INFO, "no label map (PREFIX_labels.txt) found next to the lists; --num-classes not checked",
                        "pass --label-map FILE to check it")]
    if f.label_map_classes != f.num_classes:
        return [Finding(ERROR, f"--num-classes {f.num_classes} but {f.label_map} has {f.label_map_classes} classes",
                        f"set --num-classes {f.label_map_classes}")]
    return [Finding(INFO, f"--num-classes {f.num_classes} matches {f.label_map}")]


def check_num_examples(f: Facts) -> list[Finding]:
    if f.examples_found is None:
        return [Finding(INFO, "no .idx/.lst files found for --data-train; --num-examples not checked",
                        "pass --lst FILE (repeatable) to check it")]
    if f.examples_found == f.num_examples:
        return [Finding(INFO, f"--num-examples {f.num_examples} matches {f.example_source}")]
    off = abs(f.num_examples - f.examples_found) / max(1, f.examples_found)
    return [Finding(ERROR if off > 0.01 else WARNING,
                    f"--num-examples {f.num_examples} but {f.example_source} hold {f.examples_found} images "
                    f"({off:.1%} off): the epoch length and learning-rate steps would be wrong",
                    f"set --num-examples {f.examples_found}")]


def check_batch(f: Facts) -> list[Finding]:
    ngpu = max(1, len(f.gpus))
    workers = f.num_workers or 1
    if f.batch_size % ngpu:
        return [Finding(ERROR, f"--batch-size {f.batch_size} is not a multiple of the {ngpu} GPUs of each worker",
                        f"use --batch-size {ngpu * max(1, f.batch_size // ngpu)}")]
    per_gpu = f.batch_size // ngpu
    out = [Finding(INFO, f"batch: {per_gpu} per {'GPU' if f.gpus else 'device'}, {f.batch_size} per worker "
                         f"(--batch-size is per worker), {f.batch_size * workers} global over {workers} worker(s)")]
    if per_gpu < 8:
        out.append(Finding(WARNING, f"only {per_gpu} images per GPU: BatchNorm statistics get noisy and GPUs idle",
                           f"use --batch-size {8 * ngpu} or more"))
    if per_gpu > 256 and f.network != "alexnet":
        out.append(Finding(WARNING, f"{per_gpu} images per GPU is likely to run out of GPU memory for {f.network} "
                                    "(the tutorial's 8192 is a per-worker batch over many GPUs, not per GPU)",
                           f"use --batch-size {32 * ngpu} (32 per GPU) and scale --lr with the global batch"))
    batches = f.num_examples // (f.batch_size * workers)
    if batches < 1:
        out.append(Finding(ERROR, f"{f.num_examples} examples make no full global batch of {f.batch_size * workers}",
                           "lower --batch-size or use fewer workers"))
    return out


def check_scale(f: Facts) -> list[Finding]:
    crop = min(f.image_shape[1:])
    out = []
    if crop < MIN_SIDE.get(f.network, 1):
        out.append(Finding(ERROR, f"--image-shape {','.join(map(str, f.image_shape))} is too small for {f.network}",
                           f"use sides of at least {MIN_SIDE[f.network]}"))
    if f.packed_edge is None or f.random_resized_crop:
        return out
    edge = f.packed_edge
    if edge < crop:
        out.append(Finding(WARNING, f"data packed at short edge {edge} ({f.packed_edge_source}) is smaller than the "
                                    f"{crop}-pixel input: every image is upscaled", "pack with --resize at least "
                                                                                    f"{crop}"))
    elif edge * f.min_random_scale < crop:
        out.append(Finding(ERROR, f"--min-random-scale {f.min_random_scale} shrinks {edge}-pixel images to "
                                  f"{edge * f.min_random_scale:.0f} pixels, below the {crop}-pixel crop",
                           f"set --min-random-scale {crop / edge:.3f} or more"))
    elif f.min_random_scale >= 1.0 and edge >= 1.5 * crop:
        suggest = round(crop * 256 / 224) / edge
        out.append(Finding(WARNING, f"crops of {crop} from images packed at {edge} ({f.packed_edge_source}) see only "
                                    f"{crop / edge:.0%} of each side",
                           f"set --min-random-scale {suggest:.3f} (the tutorial uses 0.533 for 224 crops at 480)"))
    return out


def check_data_dirs(f: Facts) -> list[Finding]:
    out = [Finding(ERROR, f"{path}: no such file or directory", "pack the data first, or fix the path")
           for path in f.missing_data]
    for folder, names in f.stray.items():
        shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
        out.append(Finding(WARNING, f"{folder} holds {len(names)} non-.rec file(s): {shown}; imgscale ignores them, "
                                    "but MXNet's train_imagenet.py would read them as image data",
                           f"move them out of {folder} (`imgscale place` keeps indexes beside it)"))
    return out


def check_hosts(f: Facts) -> list[Finding]:
    out = []
    workers = f.num_workers
    if workers is not None and workers > 1 and "dist" not in f.kv_store:
        out.append(Finding(ERROR, f"-n {workers} workers with --kv-store {f.kv_store}: they would train separately",
                           "use --kv-store dist_sync (or dist_device_sync, dist_async)"))
    if "dist" in f.kv_store and f.num_servers == 0:
        out.append(Finding(ERROR, f"--kv-store {f.kv_store} needs parameter servers but -s is 0",
                           "use -s equal to the number of hosts (one server per host)"))
    if f.hosts is None or workers is None:
        return out
    slots = [s for _, s, _ in f.hosts]
    if any(s is not None for s in slots):
        total = sum(s or 1 for s in slots)
        if workers > total:
            out.append(Finding(ERROR, f"-n {workers} workers but the hosts offer {total} slots",
                               f"use -n {total} or add slots/hosts"))
    elif workers > len(f.hosts):
        out.append(Finding(WARNING, f"-n {workers} workers on {len(f.hosts)} hosts: several workers share a host "
                                    "and its GPUs", "give each host slots=N and split GPUs with gpus=, or use -n "
                                                    f"{len(f.hosts)}"))
    if f.num_servers and f.num_servers > 2 * len(f.hosts):
        out.append(Finding(WARNING, f"-s {f.num_servers} servers on {len(f.hosts)} hosts",
                           f"one server per host is usual: -s {len(f.hosts)}"))
    return out


def check_gpus(f: Facts) -> list[Finding]:
    out = []
    for name, _, allowed in f.hosts or []:
        if allowed is not None and f.gpus and not set(f.gpus) <= set(allowed):
            out.append(Finding(ERROR, f"--gpus {_ids(f.gpus)} but the hosts file allows gpus={_ids(allowed)} on {name}",
                               f"use --gpus within {_ids(allowed)}"))
    for name, count in sorted(f.host_gpu_counts.items()):
        if count is None:
            out.append(Finding(INFO, f"{name}: GPU count unknown (not probed)"))
        elif f.gpus and max(f.gpus) >= count:
            have = f"GPUs 0-{count - 1}" if count else "no GPU"
            out.append(Finding(ERROR, f"--gpus {_ids(f.gpus)} but {name} has {have}",
                               f"use --gpus {_ids(range(count))}" if count else "leave --gpus empty to train on CPU"))
        elif not f.gpus and count:
            out.append(Finding(WARNING, f"{name} has {count} GPU(s) but --gpus is empty: training runs on CPU",
                               f"add --gpus {_ids(range(count))}"))
    return out


def _ids(values) -> str:
    return ",".join(str(v) for v in values)


def check_mxnet(f: Facts) -> list[Finding]:
    builds = {k: v for k, v in f.host_mxnet.items()}
    if not builds:
        return []
    out = [Finding(ERROR, f"{host}: mxnet not importable", "install the same mxnet build there (pip install mxnet==1.9.1"
                                                           " or mxnet-cu112==1.9.1)")
           for host, build in sorted(builds.items()) if build is None]
    found = {b for b in builds.values() if b is not None}
    if len(found) > 1:
        detail = "; ".join(f"{h}: {b}" for h, b in sorted(builds.items()) if b)
        out.append(Finding(ERROR, f"different mxnet builds across hosts ({detail})",
                           "install the same mxnet version and variant on every host"))
    if "dist" in f.kv_store:
        for host, build in sorted(builds.items()):
            if build and "dist_kvstore=no" in build:
                out.append(Finding(ERROR, f"{host}: mxnet built without the distributed kvstore",
                                   "install a pip mxnet build (they include ps-lite)"))
    return out


def check_ports(f: Facts) -> list[Finding]:
    return [Finding(ERROR, f"port {p} is in use on this host", "pick another port or stop what holds it (ss -ltnp)")
            for p in f.busy_ports]


def checkpoint_bytes(f: Facts) -> int:
    """Bytes of the checkpoints a run keeps: params (+ momentum states) per saved epoch."""
    millions = PARAMS_M.get((f.network, f.num_layers if f.network == "resnet" else 0), 60.0)
    per_class = 2048 if f.network == "resnet" and f.num_layers >= 50 else 512
    params = millions * 1e6 + (f.num_classes - 1000) * per_class
    saves = max(1, f.num_epochs // max(1, f.save_period))
    return int(params * 4 * 2 * saves)


def check_disk(f: Facts) -> list[Finding]:
    if f.free_disk_bytes is None or f.checkpoint_dir is None:
        return []
    need = checkpoint_bytes(f)
    gib = 1 << 30
    if need > f.free_disk_bytes:
        return [Finding(ERROR, f"checkpoints need about {need / gib:.1f} GiB but {f.checkpoint_dir} has "
                               f"{f.free_disk_bytes / gib:.1f} GiB free",
                        "free space, raise --save-period, or point --model-prefix at a bigger disk")]
    if need > 0.8 * f.free_disk_bytes:
        return [Finding(WARNING, f"checkpoints would fill {need / f.free_disk_bytes:.0%} of the free space in "
                                 f"{f.checkpoint_dir}", "raise --save-period or free space")]
    return [Finding(INFO, f"checkpoints: about {need / gib:.1f} GiB of {f.free_disk_bytes / gib:.1f} GiB free")]


CHECKS = (check_num_classes, check_num_examples, check_batch, check_scale, check_data_dirs, check_hosts, check_gpus,
          check_mxnet, check_ports, check_disk)


def run_checks(facts: Facts) -> list[Finding]:
    findings = [finding for check in CHECKS for finding in check(facts)]
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(findings, key=lambda x: order[x.level])


# --- gathering the facts (file system, hosts, ports) ---


def data_files(path: str | None) -> tuple[list[str], list[str], bool]:
    """(.rec files, stray non-.rec names, exists) of a --data-train/--data-val path."""
    if not path:
        return [], [], True
    if os.path.isfile(path):
        return [path], [], True
    if not os.path.isdir(path):
        return [], [], False
    names = sorted(os.listdir(path))
    return [os.path.join(path, n) for n in names if n.endswith(".rec")], [n for n in names if not n.endswith(".rec")], True


def _candidates(rec: str, suffixes: Sequence[str]) -> list[str]:
    """Where a chunk's .idx/.lst may live: beside it, in its parent folder, or in a sibling folder."""
    folder, stem = os.path.dirname(os.path.abspath(rec)), os.path.basename(rec)[: -len(".rec")]
    parent = os.path.dirname(folder)
    dirs = [folder, parent] + sorted(os.path.join(parent, d) for d in _listdir(parent)
                                     if os.path.isdir(os.path.join(parent, d)) and os.path.join(parent, d) != folder)
    return [os.path.join(d, stem + s) for s in suffixes for d in dirs]


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def count_examples(recs: list[str], lsts: Sequence[str] | None) -> tuple[int | None, str | None, int | None]:
    """(images, where counted, largest label) from the chunks' .idx files (what was packed) or .lst files."""
    if lsts:
        return _count_lines(lsts), ", ".join(lsts), _max_label(lsts)
    found, source, lists = 0, [], []
    for rec in recs:
        idx = next((p for p in _candidates(rec, (".idx",)) if os.path.isfile(p)), None)
        lst = next((p for p in _candidates(rec, (".lst",)) if os.path.isfile(p)), None)
        if idx is None and lst is None:
            return None, None, None
        found += _count_lines([idx or lst])
        source.append(os.path.basename(idx or lst))
        if lst:
            lists.append(lst)
    where = f"{len(source)} index file(s) ({', '.join(source[:3])}{' …' if len(source) > 3 else ''})"
    return (found, where, _max_label(lists) if lists else None) if recs else (None, None, None)


def _count_lines(paths: Sequence[str]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            total += sum(1 for line in f if line.strip())
    return total


def _max_label(lsts: Sequence[str]) -> int | None:
    best = None
    for path in lsts:
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.split("\t")
                try:
                    label = int(float(parts[1]))
                except (IndexError, ValueError):
                    continue
                best = label if best is None else max(best, label)
    return best


def find_label_map(recs: list[str], lsts: Sequence[str] | None) -> str | None:
    """PREFIX_labels.txt, which the list stage writes next to the .lst files."""
    dirs = {os.path.dirname(os.path.abspath(p)) for p in (lsts or [])}
    for rec in recs:
        dirs.update(os.path.dirname(p) for p in _candidates(rec, (".lst",)))
    for folder in sorted(dirs):
        maps = sorted(n for n in _listdir(folder) if n.endswith("_labels.txt"))
        if maps:
            return os.path.join(folder, maps[0])
    return None


def count_label_map(path: str) -> int:
    """Classes in a label map: `class<TAB>label` lines (or JSON {class: label})."""
    with open(path, errors="replace") as f:
        text = f.read()
    if path.endswith(".json"):
        return len(set(json.loads(text).values()))
    labels = {line.rsplit("\t", 1)[-1].strip() for line in text.splitlines() if line.strip()}
    return len(labels)


def packed_edge(recs: list[str], samples: int = 8) -> int | None:
    """The short edge of the first images in the first chunk (JPEG/PNG headers only, no decoding)."""
    if not recs:
        return None
    edges = []
    try:
        with open(recs[0], "rb") as f:
            for _ in range(samples):
                payload = _next_record(f)
                if payload is None:
                    break
                size = image_size(_image_bytes(payload))
                if size:
                    edges.append(min(size))
    except OSError:
        return None
    return max(edges) if edges else None


def _next_record(f) -> bytes | None:
    """One RecordIO record (magic, length with continuation flag in the top 3 bits, 4-byte padding)."""
    data = b""
    while True:
        head = f.read(8)
        if len(head) < 8:
            return None
        magic, lrec = struct.unpack("<II", head)
        if magic != 0xCED7230A:
            return None
        length, cflag = lrec & ((1 << 29) - 1), lrec >> 29
        data += f.read(length)
        f.read((4 - length % 4) % 4)
        if cflag in (0, 3):
            return data


def _image_bytes(payload: bytes) -> bytes:
    flag = struct.unpack("<I", payload[:4])[0]
    return payload[24 + 4 * flag:]


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG SOF or PNG IHDR header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    i = 2
    while data[:2] == b"\xff\xd8" and i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def port_busy(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def local_mxnet_build(python: str = sys.executable) -> str | None:
    """'1.9.1 dist_kvstore=yes cuda=no' for the mxnet this interpreter imports, or None."""
    code = ("import mxnet, mxnet.runtime as r; f = r.Features(); yn = lambda k: 'yes' if f.is_enabled(k) else 'no';"
            "print(mxnet.__version__, 'dist_kvstore=' + yn('DIST_KVSTORE'), 'cuda=' + yn('CUDA'))")
    try:
        out = subprocess.run([python, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def local_gpu_count() -> int:
    """GPUs on this machine by `nvidia-smi -L` (0 when there is no nvidia-smi: "no GPU")."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def gather_facts(args, probe_local: bool = True) -> Facts:
    """Read what the checks need: lists, label map, first records, hosts file, ports, free disk."""
    f = Facts(**{k: getattr(args, k) for k in ("network", "num_layers", "num_classes", "num_examples", "batch_size",
                                                "gpus", "kv_store", "image_shape", "min_random_scale",
                                                "max_random_scale", "random_resized_crop", "num_epochs",
                                                "save_period", "dtype")})
    f.num_workers, f.num_servers = getattr(args, "num_workers", None), getattr(args, "num_servers", None)
    recs = _gather_data(f, args)
    lsts = getattr(args, "lst", None)
    f.examples_found, f.example_source, f.max_label = count_examples(recs, lsts)
    f.label_map = getattr(args, "label_map", None) or find_label_map(recs, lsts)
    if f.label_map and os.path.isfile(f.label_map):
        f.label_map_classes = count_label_map(f.label_map)
    f.packed_edge = getattr(args, "packed_edge", None)
    f.packed_edge_source = "--packed-edge" if f.packed_edge else "read from the first records"
    if f.packed_edge is None:
        f.packed_edge = packed_edge(recs)
    _gather_hosts(f, args, probe_local)
    _gather_disk_and_ports(f, args)
    return f


def _gather_data(f: Facts, args) -> list[str]:
    recs = []
    for path in (args.data_train, args.data_val):
        files, stray, exists = data_files(path)
        if not exists:
            f.missing_data.append(path)
        if stray:
            f.stray[path] = stray
        if path == args.data_train:
            recs = files
    return recs


def _gather_hosts(f: Facts, args, probe_local: bool) -> None:
    if getattr(args, "hosts", None):
        from engine.cluster.hosts import read_hosts

        specs = read_hosts(args.hosts)
        f.hosts = [(h.name, h.slots, list(h.gpus) if h.gpus is not None else None) for h in specs]
        if f.num_workers is None:
            f.num_workers = len(specs)
        for h in specs:  # probing remote hosts is the console's job; it fills host_gpu_counts from its probes
            local = h.is_local or h.address in ("localhost", "127.0.0.1")
            f.host_gpu_counts[h.name] = local_gpu_count() if local and probe_local else None
        if probe_local and "dist" in f.kv_store:
            build = local_mxnet_build()
            for h in specs:
                if h.is_local or h.address in ("localhost", "127.0.0.1"):
                    f.host_mxnet[h.name] = build
    elif probe_local and f.gpus:
        f.host_gpu_counts["this host"] = local_gpu_count()


def _gather_disk_and_ports(f: Facts, args) -> None:
    prefix = getattr(args, "model_prefix", None)
    if prefix:
        folder = os.path.dirname(os.path.abspath(prefix))
        while folder and not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        f.checkpoint_dir = folder
        f.free_disk_bytes = shutil.disk_usage(folder).free
    port = getattr(args, "port", None) or int(os.environ.get("DMLC_PS_ROOT_PORT", "0") or 0)
    if port and port_busy(port):
        f.busy_ports.append(port)


def main(args) -> int:
    """`imgscale check`: print the findings; exit status 1 when any is an error."""
    findings = run_checks(gather_facts(args))
    if getattr(args, "json", False):
        print(json.dumps([asdict(x) for x in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
        errors = sum(1 for x in findings if x.level == ERROR)
        warnings = sum(1 for x in findings if x.level == WARNING)
        print(f"{errors} error(s), {warnings} warning(s)")
    return 1 if any(x.level == ERROR for x in findings) else 0
