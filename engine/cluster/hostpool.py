"""The cluster's one connection pool: one transport (so one SSH connection) per host, shared by probes,
launcher, supervisor, kill and the distributed pack, created on first use and closed together.

pool = HostPool(read_hosts("hosts"))      # or HostPool.local() without a hosts file
errors = await pool.connect_all()         # {name: TransportError | None}; failures isolated
transport = await pool.get("node1")       # connected (once, however many callers ask at the same time)
job_pool = pool.share(job_hosts)          # the same connections for one operation's hosts
await job_pool.close()                    # a shared view closes nothing: its owner's close does
await pool.close()                        # or: async with HostPool(...) as pool
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Hashable, Iterator, Sequence
from typing import Any, TypeVar

from engine.cluster.hosts import HostSpec, local_host, read_hosts
from engine.cluster.process.jobs import JobRecord
from engine.cluster.slurm.srun import SrunTransport
from engine.cluster.transport.base import Transport, TransportError
from engine.cluster.transport.local import LocalTransport
from engine.cluster.transport.ssh import SshTransport
from engine.errors import UserError

T = TypeVar("T")


def transport_for(spec: HostSpec) -> Transport:
    """LocalTransport for ``transport=local`` lines, srun steps for a SLURM job's nodes, else SSH."""
    if spec.option("transport") == "srun":
        return SrunTransport(spec)
    if spec.is_local:
        return LocalTransport(spec.name, env=spec.env, path_prepend=spec.path_prepend)
    return SshTransport(spec)


def record_hosts(record: JobRecord) -> list[HostSpec]:
    """The HostSpecs of a recorded job (its hosts file is read again)."""
    if record.hosts_file is None:
        return [local_host(name) for name in record.host_names]
    by_name = {h.name: h for h in read_hosts(record.hosts_file)}
    missing = [n for n in record.host_names if n not in by_name]
    if missing:
        raise UserError(
            f"{record.hosts_file} no longer lists {', '.join(missing)} (job {record.job})"
        )
    return [by_name[n] for n in record.host_names]


def connection_key(spec: HostSpec) -> Hashable:
    """What makes two host lines one connection: the same host reached the same way (the line
    it came from aside, so two reads of a hosts file share it)."""
    return (spec.name, spec.address, spec.port, spec.user, tuple(sorted(spec.options.items())))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class HostPool:
    """Transports by host name; ``get`` connects once and concurrent callers share the attempt."""

    def __init__(self, hosts: Sequence[HostSpec]) -> None:
        self.hosts = list(hosts)
        self.specs = {h.name: h for h in self.hosts}
        self._transports: dict[str, Transport] = {}  # this pool's hosts, by name
        # Every transport of the pools sharing these connections (see ``share``), by connection.
        self._shared: dict[Hashable, Transport] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._owner = True
        self._loop = _running_loop()  # connections live on the loop that made them

    def share(self, hosts: Sequence[HostSpec]) -> HostPool:
        """A pool over ``hosts`` that uses this pool's connections (a host new to it joins them).

        One console opens one connection per host however many operations (probes, launch,
        attach, kill, pre-flight) it runs; closing the shared pool closes nothing, this one does.
        """
        view = HostPool(hosts)
        view._shared, view._locks, view._owner = self._shared, self._locks, False
        view._loop = self._loop
        return view

    def run_from_thread(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the loop this pool's connections live on, from another thread."""
        if self._loop is None:
            work.close()
            raise RuntimeError("this HostPool was made outside an event loop")
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    @classmethod
    def local(cls) -> HostPool:
        """This machine only: the embedded default when no hosts file is given."""
        return cls([local_host()])

    def spec(self, name: str) -> HostSpec:
        return self.specs[name]

    def __getitem__(self, name: str) -> Transport:
        """The host's transport, created but not necessarily connected (see ``get``)."""
        if name not in self._transports:
            key = connection_key(self.specs[name])
            if key not in self._shared:
                self._shared[key] = transport_for(self.specs[name])
            self._transports[name] = self._shared[key]
        return self._transports[name]

    def __iter__(self) -> Iterator[Transport]:
        return (self[h.name] for h in self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    async def get(self, name: str) -> Transport:
        """The host's transport, connected."""
        if name not in self.specs:
            raise TransportError(name, "not in the job's hosts file")
        async with self._locks.setdefault(connection_key(self.specs[name]), asyncio.Lock()):
            transport = self[name]
            await transport.connect()
            return transport

    async def connect_all(self) -> dict[str, TransportError | None]:
        """Connect to every host at once; one host's failure never stops the others."""
        names = [h.name for h in self.hosts]
        results = await asyncio.gather(*(self._connect(n) for n in names))
        return dict(zip(names, results, strict=True))

    async def _connect(self, name: str) -> TransportError | None:
        try:
            await self.get(name)
        except TransportError as exc:
            return exc
        return None

    async def close(self) -> None:
        """Close every connection; a shared pool only forgets its own (its owner closes them)."""
        self._transports = {}
        if not self._owner:
            return
        transports, self._shared = list(self._shared.values()), {}
        await asyncio.gather(*(t.close() for t in transports), return_exceptions=True)

    async def __aenter__(self) -> HostPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
