"""What a launch would do: the workers' command line, hosts and roles, batch sizes, pre-flight findings.

Built from the workspace's hosts file and training options; shown for confirmation before a launch
and used by engine.api.jobs to start the job.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine import options as opt
from engine import workspace as wsmod
from engine.cluster import hosts
from engine.cluster.hostpool import HostPool
from engine.cluster.slurm.job import SLURM_HOST, preflight_findings
from engine.cluster.slurm.sbatch import SlurmRequest
from engine.errors import UserError
from engine.train import options as train_options
from engine.train.check import preflight
from engine.train.launch import registry
from engine.train.launch.engines import Engine, Layout
from engine.train.launch.preflight_hosts import AcrossHosts, check_across_hosts

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
    engine: str = registry.DEFAULT  # the workspace's engine (torch: ranks, no scheduler or servers)
    engine_label: str = ""  # what the processes are, in the engine's words

    @property
    def default_engine(self) -> bool:
        return self.engine == registry.DEFAULT


def host_specs(ws: wsmod.Workspace) -> list[hosts.HostSpec]:
    if ws.launcher == "slurm":  # SLURM picks the nodes when the job starts
        return [hosts.local_host(SLURM_HOST)]
    if ws.hosts_file is None:
        return [hosts.local_host()]
    return hosts.read_hosts(ws.hosts_file)


def host_names(ws: wsmod.Workspace) -> tuple[str, ...]:
    return tuple(spec.name for spec in host_specs(ws))


def train_command(ws: wsmod.Workspace, mode: str) -> tuple[str, ...]:
    """The `imgscale train` command line every worker runs, from the workspace's training options."""
    opts = ws.train_options()
    lists = ws.lists_dir
    cmd = [sys.executable, "-m", "engine", "train"]
    engine = engine_of(ws)
    if engine.name != registry.DEFAULT:  # the launcher reads the engine from the command too
        cmd += ["--engine", engine.name]
    cmd += opt.to_argv(opts.train, only=train_options.PASSED_AS_IS)
    if mode == "train":  # a benchmark or test-io run must never write over the trained model
        cmd += ["--model-prefix", str(model_prefix(ws))]
    cmd += ["--data-train", str(ws.train_dir), "--data-val", str(ws.val_dir)]
    if opts.train.gpus:
        cmd += opt.to_argv(opts.train, only=("gpus",))
    cmd += list(MODE_FLAGS[mode])
    num_classes, num_examples = data_counts(ws, lists)
    if num_classes:
        cmd += ["--num-classes", str(num_classes)]
    if num_examples:
        cmd += ["--num-examples", str(num_examples)]
    cmd += opts.job.extra_args
    return tuple(cmd)


def model_prefix(ws: wsmod.Workspace) -> Path:
    """Where a training job's checkpoints go: [train] model_prefix, inside the workspace if relative."""
    return ws.resolve(str(ws.train_options().train.model_prefix or ""))


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
        "MXNET_BACKWARD_DO_MIRROR": "1" if opts.train.mirror else "0",
        "OMP_NUM_THREADS": str(opts.job.omp_threads),
    }


def engine_of(ws: wsmod.Workspace) -> Engine:
    """The workspace's training engine: [train] engine = "mxnet" (default) or "torch"."""
    return registry.engine_named(ws.train_options().train.engine)


def plan_roles(ws: wsmod.Workspace) -> tuple[tuple[str, str, int | None], ...]:
    """(host, role, rank) of every process: MXNet's scheduler, servers and workers, or torch's
    ranks host by host (the launcher's own placement, so the dialog shows what will run)."""
    specs = host_specs(ws)
    engine = engine_of(ws)
    places = engine.place(Layout(workers_of(ws), servers_of(ws)), [s.slots for s in specs])
    return tuple((specs[p.host].name, engine.role_name(p.role), p.rank) for p in places)


def plan(ws: wsmod.Workspace, mode: str, pool: HostPool | None = None) -> LaunchPlan:
    """The launch plan shown before launching: placement, batch sizes and pre-flight findings
    (over ``pool``'s connections when given: the console's)."""
    if mode not in MODE_FLAGS:
        raise UserError(f"unknown job mode {mode!r}; one of {', '.join(MODE_FLAGS)}")
    opts = ws.train_options()
    specs = host_specs(ws)
    workers = workers_of(ws)
    gpus = len(opts.train.gpus)
    batch = opts.train.batch_size
    findings = tuple(_preflight(ws, mode, pool))
    return LaunchPlan(
        mode=mode,
        hosts=tuple(s.name for s in specs),
        roles=plan_roles(ws),
        engine=engine_of(ws).name,
        engine_label=engine_of(ws).label,
        gpus_per_worker=gpus,
        batch_per_gpu=batch / max(1, gpus),
        batch_per_worker=batch,
        global_batch=batch * workers,
        mirror=opts.train.mirror,
        data_nthreads=opts.train.data_nthreads,
        command=train_command(ws, mode),
        findings=findings,
        blocking=any(f.startswith("error") for f in findings),
    )


def _preflight(ws: wsmod.Workspace, mode: str, pool: HostPool | None = None) -> list[str]:
    """engine.train.check's findings for this command, hosts and data ("error …", "warning …")."""
    findings = []
    if mode != "benchmark" and not any(ws.train_dir.glob("*.rec")):
        findings.append(
            f"error   no .rec files in {ws.train_dir}; run the preparation stages first (a on the Stages pane)"
        )
        return findings
    try:
        train = options_of(ws, mode)
        found = [*preflight(train, _check_options(ws)), *_across_hosts(ws, train, pool)]
        findings.extend(f.line().replace("\n        ", " ") for f in found)
        if ws.launcher == "slurm":
            findings.extend(_slurm_findings(ws))
    except UserError as exc:
        findings.append(f"error   {exc}")
    except Exception as exc:  # noqa: BLE001 - the check advises; its own fault must not block a launch
        findings.append(f"warning the pre-flight check could not run ({type(exc).__name__}: {exc})")
    return findings


def _across_hosts(
    ws: wsmod.Workspace, train: train_options.TrainOptions, pool: HostPool | None = None
) -> list[Any]:
    """With a hosts file: reach every host, compare versions and data, time an all-reduce (torch)."""
    if ws.hosts_file is None or ws.launcher != "ssh":
        return []
    return check_across_hosts(
        AcrossHosts(
            hosts=str(ws.hosts_file),
            engine=engine_of(ws).name,
            data_train=train.data_train,
            data_val=train.data_val,
            gpus=train.gpus,
            port=None,
            num_workers=workers_of(ws),
        ),
        pool,
    )


def _slurm_findings(ws: wsmod.Workspace) -> list[str]:
    """`sinfo` against the workspace's [slurm] table (partition, GPUs per node, time limit)."""
    try:
        base = SlurmRequest(tasks=workers_of(ws))
        request = opt.build(SlurmRequest, ws.slurm_options(), base=base, where="slurm.")
    except UserError as exc:
        return [f"error   {ws.path / wsmod.CONFIG_NAME}: {exc}"]
    return preflight_findings(request)


def options_of(ws: wsmod.Workspace, mode: str) -> train_options.TrainOptions:
    """The options every worker will train with: the workspace's, its data and the mode."""
    opts = ws.train_options()
    values = {k: getattr(opts.train, k) for k in train_options.WORKSPACE_FIELDS}
    num_classes, num_examples = data_counts(ws, ws.lists_dir)
    values.update(
        # a benchmark or test-io run is not given the model's prefix (train_command's rule)
        model_prefix=str(model_prefix(ws)) if mode == "train" else None,
        data_train=str(ws.train_dir),
        data_val=str(ws.val_dir),
        test_io=mode == "test-io",
        benchmark=mode == "benchmark",
        num_classes=num_classes or train_options.IMAGENET.num_classes,
        num_examples=num_examples or train_options.IMAGENET.num_examples,
    )
    train = replace(train_options.IMAGENET, **values)
    return train_options.with_flags(train, opts.job.extra_args)


def _check_options(ws: wsmod.Workspace) -> train_options.CheckOptions:
    labels = ws.lists_dir / "train_labels.txt"
    return train_options.CheckOptions(
        hosts=str(ws.hosts_file) if ws.hosts_file is not None else None,
        num_workers=workers_of(ws),
        num_servers=servers_of(ws),
        label_map=str(labels) if labels.is_file() else None,
        lst=[str(p) for p in sorted(ws.lists_dir.glob("train*.lst"))] or None,
    )


def workers_of(ws: wsmod.Workspace) -> int:
    return ws.train_options().job.workers or len(host_specs(ws))


def servers_of(ws: wsmod.Workspace) -> int:
    opts = ws.train_options()
    return engine_of(ws).servers(opts.job.num_servers, opts.train.kv_store)


def check_hosts_file(path: str | Path) -> None:
    """Raise UserError (one line naming the file and line) if ``path`` is not a usable hosts file."""
    hosts.read_hosts(path)
