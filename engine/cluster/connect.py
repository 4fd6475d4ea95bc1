"""From hosts-file lines to transports: one Transport per host, kept in a pool and shared.

pool = HostPool(read_hosts("hosts"))      # or HostPool.local() without a hosts file
errors = await pool.connect_all()         # {name: TransportError | None}; failures isolated
result = await pool["node1"].run("hostname")
await pool.close()                        # or: async with HostPool(...) as pool
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

from .hosts import HostSpec, local_host
from .transport import Transport, TransportError


def transport_for(spec: HostSpec) -> Transport:
    """LocalTransport for ``transport=local`` lines, srun steps for a SLURM job's nodes, else SSH."""
    if spec.option("transport") == "srun":
        from .srun import SrunTransport

        return SrunTransport(spec)
    if spec.is_local:
        from .local import LocalTransport

        return LocalTransport(spec.name, env=spec.env, path_prepend=spec.path_prepend)
    from .ssh import SshTransport

    return SshTransport(spec)


class HostPool:
    """One transport (so one SSH connection) per host, created on first use and reused."""

    def __init__(self, hosts: Sequence[HostSpec]) -> None:
        self.hosts = list(hosts)
        self._specs = {h.name: h for h in self.hosts}
        self._transports: dict[str, Transport] = {}

    @classmethod
    def local(cls) -> HostPool:
        """This machine only: the embedded default when no hosts file is given."""
        return cls([local_host()])

    def spec(self, name: str) -> HostSpec:
        return self._specs[name]

    def __getitem__(self, name: str) -> Transport:
        if name not in self._transports:
            self._transports[name] = transport_for(self._specs[name])
        return self._transports[name]

    def __iter__(self) -> Iterator[Transport]:
        return (self[h.name] for h in self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    async def connect_all(self) -> dict[str, TransportError | None]:
        """Connect to every host at once; one host's failure never stops the others."""
        names = [h.name for h in self.hosts]
        results = await asyncio.gather(*(self._connect(n) for n in names))
        return dict(zip(names, results, strict=True))

    async def _connect(self, name: str) -> TransportError | None:
        try:
            await self[name].connect()
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
