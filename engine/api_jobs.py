"""How the console's Session reaches the cluster: hosts, telemetry, launch plans, jobs and leftovers.

Thin glue over engine.cluster (hosts, probes, launcher, kill) and engine.train (options, pre-flight
check) with the workspace's hosts file and training options.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from engine import workspace as wsmod
from engine.train import options as train_options
from engine.errors import UserError
from engine.events import Event, Failure, HostSample, HostState

Emit = Callable[[Event], None]
PROBE_INTERVAL_S = 1.0
MODE_FLAGS = {"train": (), "benchmark": ("--benchmark",), "test-io": ("--test-io",)}


def _optional(name: str) -> Any:
    """A module of another area, or None while it is not written yet."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None


def host_specs(ws: wsmod.Workspace) -> list[Any]:
    from engine.cluster import hosts

    if ws.hosts_file is None:
        return [hosts.local_host()]
    return hosts.read_hosts(ws.hosts_file)


def host_names(ws: wsmod.Workspace) -> tuple[str, ...]:
    return tuple(spec.name for spec in host_specs(ws))


# ---- telemetry ---------------------------------------------------------------------------------
async def watch_hosts(ws: wsmod.Workspace, emit: Emit) -> None:
    """Probe every host about once a second until cancelled (engine.cluster.probes when present)."""
    probes = _optional("engine.cluster.probes")
    specs = host_specs(ws)
    if probes is None or not hasattr(probes, "ProbeSet"):
        await _watch_local(specs, emit, str(ws.path))
        return
    probe_set = probes.ProbeSet(specs, emit, interval=PROBE_INTERVAL_S)
    await probe_set.start()
    try:
        await asyncio.Event().wait()  # until the session cancels this task
    finally:
        await probe_set.stop()


async def _watch_local(specs: list[Any], emit: Emit, data_path: str) -> None:
    """Until the probes module exists: this machine's CPU, memory and disk; other hosts unknown."""
    import psutil

    local = [s for s in specs if s.is_local]
    for spec in specs:
        if not spec.is_local:
            emit(HostState(spec.name, False, "probes not available in this build"))
    psutil.cpu_percent(None)
    while True:
        for spec in local:
            emit(HostState(spec.name, True))
            emit(_local_sample(spec.name, data_path, psutil))
        await asyncio.sleep(PROBE_INTERVAL_S)  # re-armed after each sample: polls never overlap


def _local_sample(name: str, data_path: str, psutil: Any) -> HostSample:
    mem = psutil.virtual_memory()
    disk = psutil.disk_usage(data_path)
    return HostSample(
        host=name,
        cpu_percent=psutil.cpu_percent(None),
        cpu_count=os.cpu_count(),
        mem_used_bytes=mem.total - mem.available,
        mem_total_bytes=mem.total,
        load1=os.getloadavg()[0],
        disk_used_bytes=disk.used,
        disk_total_bytes=disk.total,
        gpu_count=0 if not _has_nvidia_smi() else None,
    )


def _has_nvidia_smi() -> bool:
    import shutil

    return shutil.which("nvidia-smi") is not None


# ---- training command ----------------------------------------------------------------------------
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
    "keep_checkpoints",
)


def train_command(ws: wsmod.Workspace, mode: str) -> tuple[str, ...]:
    """The `imgscale train` command line every worker runs, from the workspace's training options."""
    opts = ws.train_options()
    lists = ws.lists_dir
    cmd = [sys.executable, "-m", "engine", "train"]
    if engine_of(ws) == "torch":  # the launcher reads the engine from the command too
        cmd += ["--engine", "torch"]
    for key in TRAIN_KEYS:
        cmd += ["--" + key.replace("_", "-"), train_options.flag_text(key, opts[key])]
    if mode == "train":  # a benchmark or test-io run must never write over the trained model
        cmd += ["--model-prefix", str(ws.resolve(str(opts["model_prefix"])))]
    cmd += ["--data-train", str(ws.train_dir), "--data-val", str(ws.val_dir)]
    if opts.get("gpus"):
        cmd += ["--gpus", train_options.flag_text("gpus", opts["gpus"])]
    cmd += list(MODE_FLAGS[mode])
    num_classes, num_examples = _data_counts(ws, lists)
    if num_classes:
        cmd += ["--num-classes", str(num_classes)]
    if num_examples:
        cmd += ["--num-examples", str(num_examples)]
    cmd += [str(a) for a in opts.get("extra_args", [])]
    return tuple(cmd)


def _data_counts(ws: wsmod.Workspace, lists: Path) -> tuple[int | None, int | None]:
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


def engine_of(ws: wsmod.Workspace) -> str:
    """The workspace's training engine: [train] engine = "mxnet" (default) or "torch"."""
    return str(ws.train_options().get("engine") or "mxnet")


def plan_roles(ws: wsmod.Workspace) -> tuple[tuple[str, str, int | None], ...]:
    """(host, role, rank) of every process: MXNet's scheduler, servers and workers, or torch's
    ranks host by host (the launcher's own placement, so the dialog shows what will run)."""
    from engine.cluster import launcher, placement

    specs = host_specs(ws)
    if engine_of(ws) == "torch":
        layout = launcher.torch_layout(workers_of(ws), specs)
        hosts = [host.name for host, count in layout for _ in range(count)]
        return tuple((host, "rank", rank) for rank, host in enumerate(hosts))
    places = placement.place(workers_of(ws), servers_of(ws), [s.slots for s in specs])
    return tuple((specs[p.host].name, p.role, p.rank) for p in places)


def gpu_count(gpus: Any) -> int:
    return len(train_options.workspace_value("gpus", gpus))


def plan(ws: wsmod.Workspace, mode: str) -> Any:
    """The launch plan shown before launching: placement, batch sizes and pre-flight findings."""
    from engine.api import LaunchPlan

    if mode not in MODE_FLAGS:
        raise UserError(f"unknown job mode {mode!r}; one of {', '.join(MODE_FLAGS)}")
    opts = ws.train_options()
    specs = host_specs(ws)
    workers = workers_of(ws)
    gpus = gpu_count(opts.get("gpus", ""))
    batch = int(opts["batch_size"])
    findings = tuple(_preflight(ws, mode))
    return LaunchPlan(
        mode=mode,
        hosts=tuple(s.name for s in specs),
        roles=plan_roles(ws),
        engine=engine_of(ws),
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
        from engine.train.check import preflight

        train = options_of(ws, mode)
        found = [*preflight(train, _check_options(ws)), *_across_hosts(ws, train)]
        findings.extend(f.line().replace("\n        ", " ") for f in found)
    except UserError as exc:
        findings.append(f"error   {exc}")
    except Exception as exc:  # noqa: BLE001 - the check advises; its own fault must not block a launch
        findings.append(f"warning the pre-flight check could not run ({type(exc).__name__}: {exc})")
    return findings


def _across_hosts(ws: wsmod.Workspace, train: train_options.TrainOptions) -> list[Any]:
    """With a hosts file: reach every host, compare versions and data, time an all-reduce (torch)."""
    if ws.hosts_file is None:
        return []
    from engine.cluster.preflight import check_across_hosts

    return check_across_hosts(
        SimpleNamespace(
            hosts=str(ws.hosts_file),
            engine=engine_of(ws),
            data_train=train.data_train,
            data_val=train.data_val,
            gpus=train.gpus,
            port=None,
            num_workers=workers_of(ws),
        )
    )


def options_of(ws: wsmod.Workspace, mode: str) -> train_options.TrainOptions:
    """The options every worker will train with: the workspace's, its data and the mode."""
    opts = ws.train_options()
    values = {k: train_options.workspace_value(k, opts[k]) for k in train_options.WORKSPACE_FIELDS}
    num_classes, num_examples = _data_counts(ws, ws.lists_dir)
    values.update(
        # a benchmark or test-io run is not given the model's prefix (train_command's rule)
        model_prefix=str(ws.resolve(str(opts["model_prefix"]))) if mode == "train" else None,
        data_train=str(ws.train_dir),
        data_val=str(ws.val_dir),
        test_io=mode == "test-io",
        benchmark=mode == "benchmark",
        num_classes=num_classes or train_options.IMAGENET.num_classes,
        num_examples=num_examples or train_options.IMAGENET.num_examples,
    )
    train = replace(train_options.IMAGENET, **values)
    return train_options.with_flags(train, [str(a) for a in opts.get("extra_args", [])])


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
    return int(ws.train_options().get("workers") or len(host_specs(ws)))


def servers_of(ws: wsmod.Workspace) -> int:
    opts = ws.train_options()
    if engine_of(ws) == "torch":  # DDP ranks all-reduce among themselves
        return 0
    return int(opts.get("num_servers", 1)) if str(opts["kv_store"]).startswith("dist") else 0


# ---- jobs ----------------------------------------------------------------------------------------
def _launcher() -> Any:
    launcher = _optional("engine.cluster.launcher")
    if launcher is None:
        raise UserError("the cluster launcher is not part of this build yet")
    return launcher


class ConsoleJob:
    """A launcher Job as the console sees it: its events plus throughput and epochs parsed from its logs."""

    def __init__(
        self, job: Any, mode: str, batch_size: int | None = None, tracker: Any = None
    ) -> None:
        self.job = job
        self.mode = mode
        self.batch_size = batch_size
        self.parsers: dict[tuple[str, int | None], Any] = {}
        self.tracker = tracker  # a training job's progress (engine.train.progress), else None
        self.early: list[Any] = []  # events from before the job's stream was subscribed

    @property
    def id(self) -> str:
        return self.job.job_id

    @property
    def active(self) -> bool:
        return self.job.status().state in ("starting", "running", "stopping", "relaunching")

    async def events(self) -> Any:
        """The job's events with what its workers' lines say (rates, epochs, progress), in order.

        Events the job emitted while re-attaching (kept in ``early``) come first; the job's own
        stream takes over from the moment it is subscribed, so no event is lost or doubled.
        """
        stream = self.job.events()
        first = await stream.__anext__()  # subscribed: from here on the stream has every event
        self.job.sink = None
        for event in [*self.early, first]:
            for out in self._with_parsed(event):
                yield out
        self.early = []
        async for event in stream:
            for out in self._with_parsed(event):
                yield out

    def _with_parsed(self, event: Any) -> list[Any]:
        from engine.events import LogLine

        found = [event]
        if isinstance(event, LogLine) and event.role in ("worker", "local"):
            for parsed in self._parser(event).feed(event.text, time=event.time):
                found.append(parsed)
                progress = self.tracker.add(parsed) if self.tracker is not None else None
                if progress is not None:
                    found.append(progress)
        return found

    def _parser(self, line: Any) -> Any:
        from engine.train.logparse import LogParser

        key = (line.host, line.rank)
        if key not in self.parsers:
            self.parsers[key] = LogParser(line.host, line.rank, self.id, self.batch_size)
        return self.parsers[key]

    async def stop(self) -> Any:
        return await self.job.stop()

    async def relaunch(self) -> Any:
        return await self.job.relaunch()

    async def detach(self) -> None:
        """Stop watching; the processes keep running on their hosts."""
        await self.job.close()


def launch_spec(ws: wsmod.Workspace, mode: str) -> Any:
    from engine.cluster.launcher import LaunchSpec

    opts = ws.train_options()
    hosts_file = str(ws.hosts_file) if ws.hosts_file is not None else None
    # On this machine alone the workspace holds the job's logs and pid records too.
    local_only: dict[str, Any] = {} if hosts_file else {"run_root": str(ws.path / "runs")}
    return LaunchSpec(
        command=train_command(ws, mode),
        num_workers=workers_of(ws),
        num_servers=servers_of(ws),
        hosts_file=hosts_file,
        launcher="ssh" if hosts_file else "local",
        env=job_env(ws),
        cwd=str(ws.path),
        resume_prefix=str(ws.resolve(str(opts["model_prefix"]))) if mode == "train" else None,
        max_restarts=int(opts.get("max_restarts", 0)),
        engine=engine_of(ws),
        **local_only,
    )


async def launch(ws: wsmod.Workspace, mode: str, emit: Emit) -> ConsoleJob:
    """Start the job detached on the workspace's hosts; the workspace remembers it for re-attaching."""
    launcher = _launcher()
    if mode == "train":
        ws.resolve(str(ws.train_options()["model_prefix"])).parent.mkdir(
            parents=True, exist_ok=True
        )
    job = await launcher.launch(launch_spec(ws, mode))
    _remember_mode(ws, job.job_id, mode)
    return console_job(ws, job, mode)


async def attach(ws: wsmod.Workspace, job_id: str, emit: Emit) -> ConsoleJob | None:
    """Re-attach to the workspace's last job (running or not): its state, recent log lines and metrics."""
    launcher = _launcher()
    early: list[
        Event
    ] = []  # a finished job's last lines come during attach(), before anyone listens
    try:
        job = launcher.open_job(job_id, sink=early.append)
    except UserError as exc:
        emit(Failure(source=f"job {job_id}", message=str(exc)))
        return None
    await job.attach()
    mode = ws.state.get("job_modes", {}).get(job_id, "train")
    console = console_job(ws, job, mode)
    console.early = early
    return console


def console_job(ws: wsmod.Workspace, job: Any, mode: str) -> ConsoleJob:
    """The console's view of a launched job; a training job also tracks its progress."""
    from engine.train.options import epoch_size
    from engine.train.progress import TrainTracker

    opts = ws.train_options()
    batch, workers = int(opts["batch_size"]), workers_of(ws)
    tracker = None
    if mode == "train":
        examples = _data_counts(ws, ws.lists_dir)[1]
        batches = epoch_size(examples, batch, workers) if examples else None
        tracker = TrainTracker(job.job_id, int(opts["num_epochs"]), batches, batch, workers)
    return ConsoleJob(job, mode, batch, tracker)


def _remember_mode(ws: wsmod.Workspace, job_id: str, mode: str) -> None:
    with ws.lock:
        ws.state.setdefault("job_modes", {})[job_id] = mode
        wsmod.save_state(ws.path, ws.state)


async def kill_all(ws: wsmod.Workspace, emit: Emit) -> int:
    """End every process imgscale launched on every host (engine.cluster.kill); returns how many."""
    kill = _optional("engine.cluster.kill")
    if kill is None:
        raise UserError("`kill` is not part of this build yet")
    return await kill.kill_everywhere(emit=emit)
