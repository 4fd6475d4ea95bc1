"""The pre-flight Facts and gathering them: lists, label map, first records, hosts file, GPUs, mxnet builds, ports, disk."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from engine import options as opt
from engine.cluster.hosts import read_hosts
from engine.errors import UserError
from engine.train.checkpoints import existing_files, refuse_overwrite
from engine.train.launch import registry
from engine.train.launch.engines import Engine, is_distributed
from engine.train.options import CheckOptions, TrainOptions
from engine.train.recfiles import Survey, check_magic, survey


@dataclass
class Facts:
    """Everything the checks look at: the training options as given, and what was found out about
    the data, hosts and machine (None where it could not be found out)."""

    train: TrainOptions = field(default_factory=TrainOptions)
    label_map: str | None = None
    label_map_classes: int | None = None
    max_label: int | None = None  # largest label in the training lists
    # (smallest, largest) label of the training records themselves, what training reads
    data_labels: tuple[float, float] | None = None
    list_labels: tuple[float, float] | None = None  # the same of the training lists
    label_map_labels: set[int] | None = None  # the labels the label map gives its classes
    example_source: str | None = None  # the .idx/.lst files counted
    examples_found: int | None = None
    packed_edge: int | None = None
    packed_edge_source: str = ""
    stray: dict[str, list[str]] = field(
        default_factory=dict
    )  # data directory -> non-.rec files in it
    missing_data: list[str] = field(default_factory=list)
    # empty data folders, files that are not RecordIO
    bad_data: list[str] = field(default_factory=list)
    # .lst -> its lines with a path leaving ROOT or a NaN/inf label
    list_oddities: dict[str, list[str]] = field(default_factory=dict)
    hosts: list[tuple[str, int | None, list[int] | None]] | None = None  # (name, slots, gpus=)
    num_workers: int | None = None
    num_servers: int | None = None
    host_gpu_counts: dict[str, int | None] = field(default_factory=dict)  # from probes
    host_mxnet: dict[str, str | None] = field(default_factory=dict)  # "1.9.1 dist_kvstore=yes"
    busy_ports: list[int] = field(default_factory=list)
    checkpoint_dir: str | None = None
    # an earlier run's checkpoints under --model-prefix, when this run neither resumes nor is --fresh
    old_checkpoints: list[str] = field(default_factory=list)
    free_disk_bytes: int | None = None


def data_files(path: str | None) -> tuple[list[str], list[str], bool]:
    """(.rec files, stray non-.rec names, exists) of a --data-train/--data-val path."""
    if not path:
        return [], [], True
    if os.path.isfile(path):
        return [path], [], True
    if not os.path.isdir(path):
        return [], [], False
    names = sorted(os.listdir(path))
    return (
        [os.path.join(path, n) for n in names if n.endswith(".rec")],
        [n for n in names if not n.endswith(".rec")],
        True,
    )


def _candidates(rec: str, suffixes: Sequence[str]) -> list[str]:
    """Where a chunk's .idx/.lst may live: beside it, in its parent folder, or in a sibling folder."""
    folder, stem = os.path.dirname(os.path.abspath(rec)), os.path.basename(rec)[: -len(".rec")]
    parent = os.path.dirname(folder)
    dirs = [folder, parent] + sorted(
        os.path.join(parent, d)
        for d in _listdir(parent)
        if os.path.isdir(os.path.join(parent, d)) and os.path.join(parent, d) != folder
    )
    return [os.path.join(d, stem + s) for s in suffixes for d in dirs]


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def count_examples(
    recs: list[str], lsts: Sequence[str] | None
) -> tuple[int | None, str | None, int | None]:
    """(images, where counted, largest label) from the chunks' .idx files (what was packed) or .lst files."""
    if lsts:
        return _count_lines(lsts), ", ".join(lsts), _max_label(lsts)
    found, source, lists = 0, [], []
    for rec in recs:
        idx = next((p for p in _candidates(rec, (".idx",)) if os.path.isfile(p)), None)
        lst = next((p for p in _candidates(rec, (".lst",)) if os.path.isfile(p)), None)
        counted = idx or lst
        if counted is None:
            return None, None, None
        found += _count_lines([counted])
        source.append(os.path.basename(counted))
        if lst:
            lists.append(lst)
    where = (
        f"{len(source)} index file(s) ({', '.join(source[:3])}{' …' if len(source) > 3 else ''})"
    )
    return (found, where, _max_label(lists) if lists else None) if recs else (None, None, None)


def _lists_beside(recs: list[str]) -> list[str]:
    found = (
        next((p for p in _candidates(rec, (".lst",)) if os.path.isfile(p)), None) for rec in recs
    )
    return [p for p in found if p]


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
                except (IndexError, ValueError, OverflowError):  # short line, text, NaN or inf
                    continue
                best = label if best is None else max(best, label)
    return best


def list_oddities(lsts: Sequence[str]) -> dict[str, list[str]]:
    """Per .lst, its lines that pack reads but a person should know about: paths leaving ROOT
    (absolute or through '..'; im2rec reads them, so do we) and NaN/inf labels (pack skips those)."""
    found: dict[str, list[str]] = {}
    for path in lsts:
        with open(path, errors="replace") as f:
            for number, line in enumerate(f, 1):
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 3:
                    continue
                name = parts[-1].strip()
                if name.startswith("/") or ".." in name.replace("\\", "/").split("/"):
                    found.setdefault(path, []).append(f"line {number}: {name} leaves ROOT")
                if any(not math.isfinite(_number(v)) for v in parts[1:-1]):
                    found.setdefault(path, []).append(
                        f"line {number}: label {parts[1].strip()} is not finite"
                    )
    return found


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0  # not a number at all: pack reports that line itself


def find_label_map(recs: list[str], lsts: Sequence[str] | None) -> str | None:
    """PREFIX_labels.txt, which the list stage writes beside PREFIX[_i][_train|_val|_test].lst:
    the map of the lists found, never another run's map that happens to lie nearby."""
    for lst in [*(lsts or []), *_lists_beside(recs)]:
        path = list_prefix(lst) + "_labels.txt"
        if os.path.isfile(path):
            return path
    for rec in recs:  # PREFIX[_i]_train.rec: PREFIX_labels.txt where its lists or indexes live
        name = os.path.basename(list_prefix(rec[: -len(".rec")] + ".lst"))
        for candidate in _candidates(rec, ("",)):
            path = os.path.join(os.path.dirname(candidate), name + "_labels.txt")
            if os.path.isfile(path):
                return path
    return None


def list_prefix(lst: str) -> str:
    """The PREFIX `imgscale list` was given for one of its lists (im2rec's names)."""
    stem = re.sub(r"(_train|_val|_test)?\.lst$", "", os.path.abspath(lst))
    return re.sub(r"_\d+$", "", stem) if not os.path.isfile(stem + "_labels.txt") else stem


def label_range(lsts: Sequence[str]) -> tuple[float, float] | None:
    """(smallest, largest) finite label of the lists' lines."""
    labels = []
    for path in lsts:
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and math.isfinite(value := _number(parts[1])):
                    labels.append(value)
    return (min(labels), max(labels)) if labels else None


def map_labels(path: str) -> set[int] | None:
    """The labels a label map gives its classes (None when they are not whole numbers)."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
        if path.endswith(".json"):
            return {int(v) for v in json.loads(text).values()}
        return {int(line.rsplit("\t", 1)[-1]) for line in text.splitlines() if line.strip()}
    except (ValueError, TypeError, AttributeError):
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


def _next_record(f: BinaryIO) -> bytes | None:
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
    if len(payload) < 24:
        return b""  # not even an image-record header: no image to size
    flag = struct.unpack("<I", payload[:4])[0]
    return payload[24 + 4 * flag :]


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG SOF or PNG IHDR header; None for anything shorter or else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24]) if len(data) >= 24 else None
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
    code = (
        "import mxnet, mxnet.runtime as r; f = r.Features(); yn = lambda k: 'yes' if f.is_enabled(k) else 'no';"
        "print(mxnet.__version__, 'dist_kvstore=' + yn('DIST_KVSTORE'), 'cuda=' + yn('CUDA'))"
    )
    try:
        out = subprocess.run(
            [python, "-c", code], check=False, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def local_gpu_count() -> int:
    """GPUs on this machine by `nvidia-smi -L` (0 when there is no nvidia-smi: "no GPU")."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def gather_facts(
    args: TrainOptions | argparse.Namespace,
    check: CheckOptions | None = None,
    probe_local: bool = True,
) -> Facts:
    """Read what the checks need: lists, label map, first records, hosts file, ports, free disk.

    ``args`` carries the training options (TrainOptions or parsed flags); ``check`` the cluster
    and data to check them against."""
    check = check or CheckOptions()
    train = args if isinstance(args, TrainOptions) else opt.from_args(TrainOptions, args)
    f = Facts(train=train)
    f.num_workers, f.num_servers = check.num_workers, check.num_servers
    recs, surveys = _gather_data(f)
    lsts = check.lst
    f.examples_found, f.example_source, f.max_label = count_examples(recs, lsts)
    counted = [s.records for s in surveys]
    if recs and not lsts and None not in counted and len(counted) == len(recs):
        # the records themselves, not an index that may list fewer of them
        f.examples_found = sum(c for c in counted if c is not None)
        f.example_source = f"the {len(recs)} .rec file(s) of --data-train"
    f.list_oddities = list_oddities(lsts or _lists_beside(recs))
    f.list_labels = label_range(lsts or _lists_beside(recs))
    f.label_map = check.label_map or find_label_map(recs, lsts)
    if f.label_map and os.path.isfile(f.label_map):
        f.label_map_classes = count_label_map(f.label_map)
        f.label_map_labels = map_labels(f.label_map)
    f.packed_edge = check.packed_edge
    f.packed_edge_source = "--packed-edge" if f.packed_edge else "read from the first records"
    if f.packed_edge is None:
        f.packed_edge = packed_edge(recs)
    _gather_hosts(f, check, probe_local)
    _gather_disk_and_ports(f, check)
    return f


def _gather_data(f: Facts) -> tuple[list[str], list[Survey]]:
    recs: list[str] = []
    train_surveys: list[Survey] = []
    for path in (f.train.data_train, f.train.data_val):
        if not path:
            continue  # not given: nothing to look at
        files, stray, exists = data_files(path)
        if not exists:
            f.missing_data.append(path)
        if stray:
            f.stray[path] = stray
        surveys: list[Survey] = []
        limit = f.train.max_bad_images
        engine = registry.engine_named(f.train.engine)
        f.bad_data += _bad_data(path, files, engine, surveys, limit) if exists else []
        if path == f.train.data_train:
            recs, train_surveys = files, surveys
            f.data_labels = record_labels(surveys)
    return recs, train_surveys


def _bad_data(
    path: str,
    recs: list[str],
    engine: Engine = registry.ENGINES[registry.DEFAULT],
    surveys: list[Survey] | None = None,
    max_bad: float = TrainOptions.max_bad_images,
) -> list[str]:
    """What training could not read in a data path: no .rec at all, files that are not RecordIO,
    records too short for an image, an .idx that does not match its .rec."""
    if not recs:
        return [f"{path}: no .rec files here"]
    problems = []
    for rec in recs:
        try:
            check_magic(rec, "")
            found = survey(rec)
        except UserError as exc:
            problems.append(str(exc).strip().split(";")[0])
            continue
        except OSError as exc:
            problems.append(f"{rec}: cannot read it ({exc.strerror})")
            continue
        problems += found.problems
        # MXNet stops at the first such image; the torch engine above --max-bad-images
        allowed = max_bad * found.images if engine.skips_bad_images else 0
        if found.undecodable > allowed:
            problems.append(
                f"{rec}: {found.undecodable} of {found.images} records looked at hold no image "
                f"OpenCV decodes (the first at offset {found.first_undecodable}, e.g. a GIF "
                "stored by pack --pass-through): training stops on them"
            )
        if surveys is not None:
            surveys.append(found)
        if found.idx is None and engine.reads_by_index:
            problems.append(f"{rec}: no .idx beside it; the {engine.name} engine reads by index")
    return problems


def record_labels(surveys: list[Survey]) -> tuple[float, float] | None:
    """(smallest, largest) label of the surveyed records: what training reads."""
    ranges = [(s.low, s.high) for s in surveys if s.low is not None and s.high is not None]
    return (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None


def _gather_hosts(f: Facts, check: CheckOptions, probe_local: bool) -> None:
    if check.hosts:
        specs = read_hosts(check.hosts)
        f.hosts = [(h.name, h.slots, list(h.gpus) if h.gpus is not None else None) for h in specs]
        if f.num_workers is None:
            f.num_workers = len(specs)
        for h in (
            specs
        ):  # probing remote hosts is the console's job; it fills host_gpu_counts from its probes
            local = h.is_local or h.address in ("localhost", "127.0.0.1")
            f.host_gpu_counts[h.name] = local_gpu_count() if local and probe_local else None
        if probe_local and is_distributed(f.train.kv_store):
            build = local_mxnet_build()
            for h in specs:
                if h.is_local or h.address in ("localhost", "127.0.0.1"):
                    f.host_mxnet[h.name] = build
    elif probe_local and f.train.gpus:
        f.host_gpu_counts["this host"] = local_gpu_count()


def _gather_disk_and_ports(f: Facts, check: CheckOptions) -> None:
    prefix = f.train.model_prefix
    if prefix:
        folder = os.path.dirname(os.path.abspath(prefix))
        while folder and not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        f.checkpoint_dir = folder
        f.free_disk_bytes = shutil.disk_usage(folder).free
        try:
            refuse_overwrite(
                prefix,
                f.train.resume,
                f.train.load_epoch,
                f.train.fresh or f.train.test_io,
            )
        except UserError:
            f.old_checkpoints = existing_files(prefix)
    port = check.port or int(os.environ.get("DMLC_PS_ROOT_PORT", "0") or 0)
    if port and port_busy(port):
        f.busy_ports.append(port)
