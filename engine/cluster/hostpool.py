"""One transport per host of a job, connected on first use and closed together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .connect import transport_for
from .hosts import HostSpec
from .transport import Transport, TransportError

# The transport for a hosts-file entry: the cluster's one factory (connect.transport_for).
make_transport = transport_for


class TransportPool:
    """Transports by host name; ``get`` connects once, concurrent callers share the attempt."""

    def __init__(
        self, hosts: Sequence[HostSpec], factory: Callable[[HostSpec], Transport] = make_transport
    ) -> None:
        self.specs = {h.name: h for h in hosts}
        self.factory = factory
        self._transports: dict[str, Transport] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def spec(self, name: str) -> HostSpec:
        return self.specs[name]

    async def get(self, name: str) -> Transport:
        if name not in self.specs:
            raise TransportError(name, "not in the job's hosts file")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            transport = self._transports.get(name)
            if transport is None:
                transport = self._transports[name] = self.factory(self.specs[name])
            await transport.connect()
            return transport

    async def close(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        await asyncio.gather(*(t.close() for t in transports), return_exceptions=True)
