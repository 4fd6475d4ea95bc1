"""What a launch would do: the workers' command line, hosts and roles, batch sizes, pre-flight findings.

Built from the workspace's hosts file and training options; shown for confirmation before a launch
and used by engine.api.jobs to start the job.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from engine import workspace as wsmod
from engine.cli import build_parser
from engine.cluster import hosts, placement
from engine.errors import UserError
from engine.train.check import preflight

MODE_FLAGS = {"train": (), "benchmark": ("--benchmark",), "test-io": ("--test-io",)}


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch would do, shown for confirmation: hosts, roles, batches and pre-flight findings."""

    mode: str  # train | benchmark | test-io
    hosts: tuple[str, ...]
    roles: tuple[tuple[str, str, int | None], ...]  # (host, role, rank)
    gpus_per_worker: int
    batch_per_gpu: float
    batch_per_worker: int
    global_batch: int
    mirror: bool
    data_nthreads: int
    command: tuple[str, ...]
    findings: tuple[str, ...] = ()
    blocking: bool = False  # a finding that makes the launch pointless


def host_specs(ws: wsmod.Workspace) -> list[hosts.HostSpec]:
    if ws.hosts_file is None:
        return [hosts.local_host()]
    return hosts.read_hosts(ws.hosts_file)


def host_names(ws: wsmod.Workspace) -> tuple[str, ...]:
    return tuple(spec.name for spec in host_specs(ws))


# Workspace training options every worker gets as ``--key value`` (underscores become dashes).
TRAIN_KEYS = (
    "network",
    "num_layers",
    "batch_size",
    "kv_store",
    "num_epochs",
    "lr",
    "image_shape",
    "data_nthreads",
    "disp_batches",
)


def train_command(ws: wsmod.Workspace, mode: str) -> tuple[str, ...]:
    """The `imgscale train` command line every worker runs, from the workspace's training options."""
    opts = ws.train_options()
    lists = ws.lists_dir
    cmd = [sys.executable, "-m", "engine", "train"]
    for key in TRAIN_KEYS:
        cmd += ["--" + key.replace("_", "-"), str(opts[key])]
    if mode == "train":  # a benchmark or test-io run must never write over the trained model
        cmd += ["--model-prefix", str(ws.resolve(str(opts["model_prefix"])))]
    cmd += ["--data-train", str(ws.train_dir), "--data-val", str(ws.val_dir)]
    if opts.get("gpus"):
        cmd += ["--gpus", str(opts["gpus"])]
    cmd += list(MODE_FLAGS[mode])
    num_classes, num_examples = data_counts(ws, lists)
    if num_classes:
        cmd += ["--num-classes", str(num_classes)]
    if num_examples:
        cmd += ["--num-examples", str(num_examples)]
    cmd += [str(a) for a in opts.get("extra_args", [])]
    return tuple(cmd)


def data_counts(ws: wsmod.Workspace, lists: Path) -> tuple[int | None, int | None]:
    """Classes and training images from the .lst files (so the epoch length and schedule are right)."""
    train_lists = sorted(lists.glob("train*.lst")) if lists.is_dir() else []
    if not train_lists:
        return None, None
    labels, examples = set(), 0
    for path in train_lists:
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                labels.add(parts[1])
                examples += 1
    return len(labels) or None, examples or None


def job_env(ws: wsmod.Workspace) -> dict[str, str]:
    opts = ws.train_options()
    return {
        "MXNET_BACKWARD_DO_MIRROR": "1" if opts.get("mirror") else "0",
        "OMP_NUM_THREADS": str(opts.get("omp_threads", 1)),
    }


def gpu_count(gpus: str) -> int:
    return len([g for g in str(gpus).split(",") if g.strip()])


def plan(ws: wsmod.Workspace, mode: str) -> LaunchPlan:
    """The launch plan shown before launching: placement, batch sizes and pre-flight findings."""
    if mode not in MODE_FLAGS:
        raise UserError(f"unknown job mode {mode!r}; one of {', '.join(MODE_FLAGS)}")
    opts = ws.train_options()
    specs = host_specs(ws)
    workers, servers = workers_of(ws), servers_of(ws)
    places = placement.place(workers, servers, [s.slots for s in specs])
    gpus = gpu_count(opts.get("gpus", ""))
    batch = int(opts["batch_size"])
    findings = tuple(_preflight(ws, mode))
    return LaunchPlan(
        mode=mode,
        hosts=tuple(s.name for s in specs),
        roles=tuple((specs[p.host].name, p.role, p.rank) for p in places),
        gpus_per_worker=gpus,
        batch_per_gpu=batch / max(1, gpus),
        batch_per_worker=batch,
        global_batch=batch * workers,
        mirror=bool(opts.get("mirror")),
        data_nthreads=int(opts["data_nthreads"]),
        command=train_command(ws, mode),
        findings=findings,
        blocking=any(f.startswith("error") for f in findings),
    )


def _preflight(ws: wsmod.Workspace, mode: str) -> list[str]:
    """engine.train.check's findings for this command, hosts and data ("error …", "warning …")."""
    findings = []
    if mode != "benchmark" and not any(ws.train_dir.glob("*.rec")):
        findings.append(
            f"error   no .rec files in {ws.train_dir}; run the preparation stages first (a on the Stages pane)"
        )
        return findings
    try:
        argv = ["check", *train_command(ws, mode)[4:], *_check_args(ws)]
        args = build_parser().parse_args(argv)
        findings.extend(f.line().replace("\n        ", " ") for f in preflight(args))
    except UserError as exc:
        findings.append(f"error   {exc}")
    except SystemExit:  # argparse refused an option: say which command line it was
        findings.append("error   the training options do not parse; edit them with T")
    except Exception as exc:  # noqa: BLE001 - the check advises; its own fault must not block a launch
        findings.append(f"warning the pre-flight check could not run ({type(exc).__name__}: {exc})")
    return findings


def _check_args(ws: wsmod.Workspace) -> list[str]:
    opts = ws.train_options()
    args = ["-n", str(workers_of(ws)), "-s", str(servers_of(ws))]
    if ws.hosts_file is not None:
        args += ["--hosts", str(ws.hosts_file)]
    labels = ws.lists_dir / "train_labels.txt"
    if labels.is_file():
        args += ["--label-map", str(labels)]
    for lst in sorted(ws.lists_dir.glob("train*.lst")):
        args += ["--lst", str(lst)]
    del opts
    return args


def workers_of(ws: wsmod.Workspace) -> int:
    return int(ws.train_options().get("workers") or len(host_specs(ws)))


def servers_of(ws: wsmod.Workspace) -> int:
    opts = ws.train_options()
    return int(opts.get("num_servers", 1)) if str(opts["kv_store"]).startswith("dist") else 0


def check_hosts_file(path: str | Path) -> None:
    """Raise UserError (one line naming the file and line) if ``path`` is not a usable hosts file."""
    hosts.read_hosts(path)
