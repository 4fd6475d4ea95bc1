"""Worker processes for `pack`: submit batches, collect results as they come, survive a worker crash.

Each worker is a plain ``python -m engine.prep.pack_worker`` child talking over two pipes that only
this process holds, so a worker sees end-of-file and exits whenever the packer dies. A worker that
dies mid-batch (a decoder crash, the OOM killer) is replaced and its batches are retried one image
at a time; an image that kills a worker on its own is reported as skipped instead of retried forever.
"""

from __future__ import annotations

import collections
import fcntl
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, cast

CRASH_REASON = "crashed the image decoder (worker process died with status {status})"
STOP_WAIT_S = 5.0
# Batches queued per worker: on a busy machine the packer (one process among many) may wait for
# its turn on a core, and the workers keep encoding meanwhile instead of running dry.
DEPTH = 8
# Once the list is nearly all handed out, queues this short let whichever worker is free take the
# last batches: with full queues one worker sat idle for up to 60 ms while the other caught up.
TAIL_DEPTH = 2
PIPE_BYTES = (
    1 << 20
)  # room for a whole batch of records, so a worker rarely waits for the packer to read


def _widen(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size: the default 64 KiB still works, only slower


class Worker:
    """One worker process, its two pipe ends, and the task keys it holds, oldest first."""

    def __init__(self, init: bytes, env: dict[str, str]) -> None:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        _widen(result_w)
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.prep.pack_worker"],
            stdin=task_r,
            stdout=result_w,
            stderr=self.stderr,
            env=env,
            close_fds=True,
        )
        os.close(task_r)
        os.close(result_w)
        self.tasks = Connection(task_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.held: collections.deque = collections.deque()
        self.tasks.send_bytes(init)

    def send(self, key: Any, items: list) -> None:
        self.held.append((key, items))
        try:
            self.tasks.send_bytes(pickle.dumps((key, items), protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass  # it died while idle: its result pipe reads end-of-file and collect() replaces it

    def exit_status(self) -> int | None:
        try:
            return self.proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def stop(self) -> None:
        self.tasks.close()  # end-of-file on its tasks: the worker exits
        self.results.close()
        if self.proc.poll() is None:
            self.exit_status()
        self.stderr.close()


class Pool:
    """``submit(key, items)``; ``collect()`` yields ``(key, results)`` as batches finish, in any order.

    A result list has, per item, the framed record bytes or the reason (str) it was skipped.
    """

    def __init__(self, processes: int, setup: object, depth: int = DEPTH) -> None:
        self.init = pickle.dumps(setup)  # a pack_worker.Setup: typed options, not a free-form dict
        self.env = dict(os.environ)
        self.env.setdefault("OMP_NUM_THREADS", "1")
        self.env.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        # Keep freed image buffers in the heap: otherwise glibc hands each ~1 MB decode/resize/encode
        # buffer back to the kernel and every image pays ~70 fresh page faults (about 10% of the time).
        self.env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 << 20))
        self.env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 << 20))
        self.depth = depth
        self.workers = [Worker(self.init, self.env) for _ in range(max(1, processes))]
        self.retries: dict = {}  # batch key -> [results or None] while retried image by image

    def room(self, unsent: int) -> int:
        """How many more batches to submit now, with ``unsent`` batches still to come."""
        depth = (
            self.depth if unsent > len(self.workers) * self.depth else min(TAIL_DEPTH, self.depth)
        )
        return len(self.workers) * depth - sum(len(w.held) for w in self.workers)

    def submit(self, key: Any, items: list) -> None:
        min(self.workers, key=lambda w: len(w.held)).send(key, items)

    def busy(self) -> bool:
        return any(w.held for w in self.workers)

    def collect(self) -> Iterator[tuple[Any, list]]:
        """Wait for at least one finished batch and yield every batch that is complete."""
        by_conn = {w.results: w for w in self.workers if w.held}
        for conn in cast(list[Connection], wait(list(by_conn))):  # wait() returns what it was given
            worker = by_conn[conn]
            try:
                key, results = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                yield from self._replace(worker)
                continue
            worker.held.popleft()
            yield from self._finish(key, results)

    def _finish(self, key: Any, results: list) -> Iterator[tuple[Any, list]]:
        if not (isinstance(key, tuple) and key and key[0] == "retry"):
            yield key, results
            return
        _, batch_key, index = key
        slots = self.retries[batch_key]
        slots[index] = results[0]
        if all(slot is not None for slot in slots):
            del self.retries[batch_key]
            yield batch_key, slots

    def _replace(self, dead: Worker) -> Iterator[tuple[Any, list]]:
        """Start a new worker in place of a dead one and retry what the dead one held."""
        status = dead.exit_status()
        held = list(dead.held)
        dead.held.clear()
        dead.stop()
        self.workers[self.workers.index(dead)] = Worker(self.init, self.env)
        for key, items in held:
            if isinstance(key, tuple) and key and key[0] == "retry":
                yield from self._finish(key, [CRASH_REASON.format(status=status)])
                continue
            self.retries[key] = [None] * len(items)
            for index, item in enumerate(items):
                self.submit(("retry", key, index), [item])

    def close(self) -> None:
        for worker in self.workers:  # every worker sees end-of-file first, so they exit together
            worker.tasks.close()
        for worker in self.workers:
            worker.stop()
