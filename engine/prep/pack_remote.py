"""Distributed packing: `imgscale pack --hosts FILE` spreads the chunk .lst files over the hosts at once.

The data lives on a filesystem every host sees (the tutorial's shared EFS). Each host gets a share
of the chunks (balanced by list lines, weighted by ``slots=``) and runs ``imgscale pack`` on them,
one chunk after the other, as one detached, supervised job process (role ``pack``, rank = host
index), so the output is exactly a local pack's: ``.rec``/``.idx``/``.skipped.tsv`` beside each
list, resumable. Progress comes from each chunk's ``.pack.json`` manifest, read through the host's
transport about once a second, as per-chunk and per-host ``StageProgress`` events.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import options as opt
from engine.cluster.hostpool import HostPool
from engine.cluster.hosts import HostSpec, read_hosts
from engine.cluster.process import jobs
from engine.cluster.process.detach import DetachedProcess
from engine.cluster.process.supervisor import Job, Planned, SuperviseOptions
from engine.cluster.remote_cmd import join_argv, shell_path
from engine.cluster.transport.base import TransportError
from engine.errors import UserError
from engine.events import EventSink, StageProgress, StageState, ignore
from engine.prep.options import PackOptions
from engine.prep.pack import ChunkResult, PackResult

if TYPE_CHECKING:
    from engine.cluster.process.supervisor import Planner

PROGRESS_S = 1.0
MANIFEST_MARK = "@@imgscale-manifest@@"


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def assign(chunks: Sequence[Path], hosts: Sequence[HostSpec]) -> dict[str, list[Path]]:
    """Chunks per host: the biggest chunk first to the host with the least work per slot."""
    load = {h.name: 0.0 for h in hosts}
    weight = {h.name: float(h.slots or 1) for h in hosts}
    share: dict[str, list[Path]] = {h.name: [] for h in hosts}
    sized = sorted(((count_lines(c), str(c), c) for c in chunks), reverse=True)
    for lines, _name, chunk in sized:
        host = min(load, key=lambda n: (load[n] / weight[n], list(load).index(n)))
        share[host].append(chunk)
        load[host] += max(lines, 1)
    return {h: sorted(c) for h, c in share.items() if c}


def pack_args(options: PackOptions) -> list[str]:
    """``imgscale pack`` flags reproducing ``options``, derived from the option dataclass."""
    return opt.to_argv(options)


def host_script(python: str, chunks: Sequence[str], root: str, args: Sequence[str]) -> str:
    """The shell script a host runs: its chunks one after another, stopping at the first failure."""
    lines = ["set -e"]
    for chunk in chunks:
        lines.append(join_argv([python, "-m", "engine.cli", "pack", chunk, root, *args, "--quiet"]))
    return "\n".join(lines)


def pack_planner(record: jobs.JobRecord, pool: HostPool) -> Planner:
    """The Planner of a distributed pack job (also used to relaunch it: chunks resume)."""
    args = record.launch_args

    async def plan(attempt: int, host_names: Sequence[str]) -> list[Planned]:
        share = args["assignment"]
        if set(share) - set(host_names):  # a host was excluded: spread everything again
            share = {
                h: [str(c) for c in cs]
                for h, cs in assign(
                    [Path(c) for c in args["lists"]], [pool.spec(n) for n in host_names]
                ).items()
            }
        planned = []
        for rank, host in enumerate(host_names):
            if host not in share:
                continue
            spec = pool.spec(host)
            script = host_script(spec.python, share[host], args["root"], args["pack_args"])
            prefix = jobs.run_prefix(args["run_root"], record.job, attempt, f"pack-{rank}")
            env = {
                "IMGSCALE_JOB": record.job,
                "IMGSCALE_ROLE": "pack",
                "IMGSCALE_RANK": str(rank),
                "IMGSCALE_HOST": host,
                "IMGSCALE_ATTEMPT": str(attempt),
            }
            proc = DetachedProcess(prefix, args["root"], ("sh", "-c", script), env)
            planned.append(Planned(jobs.ProcRecord(host, "pack", rank, prefix), proc))
        return planned

    return plan


def manifest_path(lst: str) -> str:
    return str(Path(lst).with_suffix("")) + ".pack.json"


def read_manifests_command(lists: Sequence[str]) -> str:
    parts = [
        f"cat {shell_path(manifest_path(c))} 2>/dev/null; echo; echo {MANIFEST_MARK}" for c in lists
    ]
    return "; ".join(parts)


def parse_manifests(output: str, lists: Sequence[str]) -> dict[str, dict]:
    """Chunk path -> its manifest (absent while a chunk has not started)."""
    found = {}
    for lst, text in zip(lists, output.split(MANIFEST_MARK), strict=False):
        try:
            found[lst] = json.loads(text)
        except ValueError:
            continue
    return found


class ProgressReader:
    """Per-chunk, per-host and overall StageProgress from the chunks' manifests."""

    def __init__(
        self,
        pool: HostPool,
        share: dict[str, list[str]],
        totals: dict[str, int],
        on_event: EventSink,
    ) -> None:
        self.pool, self.share, self.totals, self.on_event = pool, share, totals, on_event
        self.latest: dict[str, dict] = {}

    async def run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(PROGRESS_S)  # the progress refresh period

    async def poll(self) -> None:
        await asyncio.gather(*(self._host(h, cs) for h, cs in self.share.items()))
        done = sum(m.get("lines_done", 0) for m in self.latest.values())
        self.on_event(
            StageProgress(
                "pack",
                done,
                sum(self.totals.values()),
                bytes_done=self._bytes(self.latest.values()),
                skipped=sum(m.get("skipped", 0) for m in self.latest.values()),
            )
        )

    async def _host(self, host: str, chunks: list[str]) -> None:
        try:
            transport = await self.pool.get(host)
            result = await transport.run(read_manifests_command(chunks), timeout=20)
        except TransportError:
            return  # the supervisor reports unreachable hosts
        manifests = parse_manifests(result.stdout, chunks)
        self.latest.update(manifests)
        for chunk, m in manifests.items():
            self.on_event(
                StageProgress(
                    "pack",
                    m.get("lines_done", 0),
                    self.totals[chunk],
                    bytes_done=m.get("sizes", {}).get("rec", 0),
                    skipped=m.get("skipped", 0),
                    part=Path(chunk).stem,
                    host=host,
                )
            )
        mine = [self.latest[c] for c in chunks if c in self.latest]
        self.on_event(
            StageProgress(
                "pack",
                sum(m.get("lines_done", 0) for m in mine),
                sum(self.totals[c] for c in chunks),
                bytes_done=self._bytes(mine),
                skipped=sum(m.get("skipped", 0) for m in mine),
                host=host,
            )
        )

    @staticmethod
    def _bytes(manifests: Iterable[dict[str, Any]]) -> int:
        return sum(m.get("sizes", {}).get("rec", 0) for m in manifests)


def new_pack_record(
    hosts_file: str,
    hosts: list[HostSpec],
    lists: list[str],
    root: str,
    options: PackOptions,
    run_root: str,
    job: str | None,
) -> jobs.JobRecord:
    share = assign([Path(c) for c in lists], hosts)
    args = {
        "lists": lists,
        "root": root,
        "pack_args": pack_args(options),
        "run_root": run_root,
        "options": asdict(options),
        "assignment": {h: [str(c) for c in cs] for h, cs in share.items()},
    }
    name = jobs.check_job_name(job) if job else jobs.new_job_id("pack")
    return jobs.JobRecord(
        name,
        "pack",
        ("imgscale", "pack"),
        os.path.abspath(hosts_file),
        tuple(h.name for h in hosts),
        launch_args=args,
    )


async def pack_on_hosts_async(
    hosts_file: str,
    lst_paths: Iterable[str | os.PathLike[str]],
    root: str,
    options: PackOptions,
    on_event: EventSink = ignore,
    *,
    run_root: str = jobs.DEFAULT_RUN_ROOT,
    job: str | None = None,
    max_restarts: int = 0,
) -> PackResult:
    """Pack on every host and wait; returns engine.prep.pack.PackResult, like a local pack."""
    lists = [os.path.abspath(p) for p in lst_paths]
    if not lists:
        raise UserError("no .lst files to pack")
    hosts = read_hosts(hosts_file)
    record = jobs.save(
        new_pack_record(hosts_file, hosts, lists, os.path.abspath(root), options, run_root, job)
    )
    pool = HostPool(hosts)
    started = time.monotonic()
    on_event(
        StageState(
            "pack",
            "running",
            f"{len(lists)} chunks on {len(record.launch_args['assignment'])} hosts",
        )
    )
    supervised = Job(
        record,
        pool,
        planner=pack_planner(record, pool),
        sink=on_event,
        options=SuperviseOptions(max_restarts=max_restarts, lost_timeout_s=20),
    )
    totals = {c: count_lines(Path(c)) for c in lists}
    reader = ProgressReader(pool, record.launch_args["assignment"], totals, on_event)
    progress = asyncio.create_task(reader.run())
    try:
        await supervised.start()
        final = await supervised.wait()
        await reader.poll()
    finally:
        progress.cancel()
        await supervised.close()
    if final.state != "done":
        raise UserError(
            f"distributed pack {record.job} {final.state}: {final.message}; "
            "run the same command again to resume the unfinished chunks"
        )
    result = collect_result(lists, time.monotonic() - started)
    on_event(StageState("pack", "done", f"{result.records} records, {result.skipped} skipped"))
    return result


def collect_result(lists: Sequence[str], seconds: float) -> PackResult:
    """The PackResult a local pack would return, read from the finished chunks' manifests."""
    chunks = []
    for lst in lists:
        manifest = json.loads(Path(manifest_path(lst)).read_text())
        base = str(Path(lst).with_suffix(""))
        chunks.append(
            ChunkResult(
                Path(lst),
                Path(base + ".rec"),
                Path(base + ".idx"),
                Path(base + ".skipped.tsv"),
                manifest["records"],
                manifest["skipped"],
                manifest["sizes"]["rec"],
            )
        )
    return PackResult(tuple(chunks), seconds)


def pack_on_hosts(
    hosts_file: str,
    lst_paths: Iterable[str | os.PathLike[str]],
    root: str,
    options: PackOptions,
    on_event: EventSink = ignore,
    **kwargs: Any,
) -> PackResult:
    """Synchronous entry for `imgscale pack --hosts FILE` (see pack_on_hosts_async)."""
    try:
        return asyncio.run(
            pack_on_hosts_async(hosts_file, lst_paths, root, options, on_event, **kwargs)
        )
    except KeyboardInterrupt:
        raise UserError(
            "interrupted; the hosts keep packing - `imgscale kill` ends them, "
            "the same command again resumes"
        ) from None
