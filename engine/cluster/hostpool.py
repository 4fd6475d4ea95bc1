"""The cluster's one connection pool: one transport (so one SSH connection) per host, shared by probes,
launcher, supervisor, kill and the distributed pack, created on first use and closed together.

pool = HostPool(read_hosts("hosts"))      # or HostPool.local() without a hosts file
errors = await pool.connect_all()         # {name: TransportError | None}; failures isolated
transport = await pool.get("node1")       # connected (once, however many callers ask at the same time)
await pool.close()                        # or: async with HostPool(...) as pool
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

from engine.errors import UserError

from .hosts import HostSpec, local_host, read_hosts
from .jobs import JobRecord
from .local import LocalTransport
from .srun import SrunTransport
from .ssh import SshTransport
from .transport import Transport, TransportError


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


class HostPool:
    """Transports by host name; ``get`` connects once and concurrent callers share the attempt."""

    def __init__(self, hosts: Sequence[HostSpec]) -> None:
        self.hosts = list(hosts)
        self.specs = {h.name: h for h in self.hosts}
        self._transports: dict[str, Transport] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def local(cls) -> HostPool:
        """This machine only: the embedded default when no hosts file is given."""
        return cls([local_host()])

    def spec(self, name: str) -> HostSpec:
        return self.specs[name]

    def __getitem__(self, name: str) -> Transport:
        """The host's transport, created but not necessarily connected (see ``get``)."""
        if name not in self._transports:
            self._transports[name] = transport_for(self.specs[name])
        return self._transports[name]

    def __iter__(self) -> Iterator[Transport]:
        return (self[h.name] for h in self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    async def get(self, name: str) -> Transport:
        """The host's transport, connected."""
        if name not in self.specs:
            raise TransportError(name, "not in the job's hosts file")
        async with self._locks.setdefault(name, asyncio.Lock()):
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
        transports, self._transports = list(self._transports.values()), {}
        await asyncio.gather(*(t.close() for t in transports), return_exceptions=True)

    async def __aenter__(self) -> HostPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
