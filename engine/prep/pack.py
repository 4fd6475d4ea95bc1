"""The `pack` stage: .lst -> .rec/.idx like im2rec, in worker processes, resumable, with a skip report.

Per chunk ``NAME.lst`` it writes, beside the list, ``NAME.rec`` and ``NAME.idx`` (MXNet RecordIO, records
in .lst order), ``NAME.skipped.tsv`` (``line, id, path, reason`` for every entry that could not be
packed: the .idx and the report together account for every .lst line) and ``NAME.pack.json`` (the
manifest: list checksum, options, counts, and while running the last checkpoint). Data goes to
``*.part`` files that are renamed when the chunk is complete; after each batch the manifest records
(in one in-place write) how many list lines and bytes are durable, so a run killed at any point (even
SIGKILL) truncates the torn tail and resumes, ending with the same bytes as an uninterrupted run.
After a power loss a torn manifest no longer parses and the chunk simply starts over.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import pathlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from engine import recordio
from engine.errors import UserError
from engine.events import EventSink, SkippedItem, StageProgress, StageState, ignore
from engine.paths import start_writeback
from engine.prep import turbojpeg
from engine.prep.journal import lock_or_fail
from engine.prep.options import PackOptions
from engine.prep.pack_worker import Item, Setup
from engine.prep.report import one_field, printable

if TYPE_CHECKING:
    from engine.prep.pack_gpu import Codec, GpuPool
    from engine.prep.pack_pool import Pool

MANIFEST_VERSION = 1
MANIFEST_BLOCK = 4096
BATCH_SIZE = 16  # list lines per worker task and per durable checkpoint
WRITEBACK_BYTES = 8 << 20  # records handed to the disk as they accumulate, not all at the end
ROOT_SAMPLE = 20  # list paths checked up front against ROOT
PROGRESS_INTERVAL_S = 0.2
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
REPORT_HEADER = "line\tid\tpath\treason\n"


@dataclass(frozen=True)
class ChunkResult:
    lst: pathlib.Path
    rec: pathlib.Path
    idx: pathlib.Path
    report: pathlib.Path
    records: int
    skipped: int
    rec_bytes: int
    resumed_at_line: int = 0  # list lines already packed by an earlier, interrupted run
    already_done: bool = False


@dataclass(frozen=True)
class PackResult:
    chunks: tuple[ChunkResult, ...]
    seconds: float

    @property
    def records(self) -> int:
        return sum(c.records for c in self.chunks)

    @property
    def skipped(self) -> int:
        return sum(c.skipped for c in self.chunks)


def find_lists(prefix: str | os.PathLike) -> list[pathlib.Path]:
    """The .lst files im2rec would pack for PREFIX: a folder's lists, or those whose path starts with PREFIX."""
    prefix = os.path.abspath(prefix)
    folder = prefix if os.path.isdir(prefix) else os.path.dirname(prefix)
    if not os.path.isdir(folder):
        raise UserError(f"PREFIX {prefix}: folder {folder} does not exist")
    names = sorted(os.listdir(folder))
    found = [pathlib.Path(folder, n) for n in names if os.path.join(folder, n).startswith(prefix)]
    found = [p for p in found if p.name.endswith(".lst") and p.is_file()]
    if not found:
        raise UserError(
            f"no .lst file matches PREFIX {prefix}; write lists first with `imgscale list`"
        )
    return found


def parse_line(number: int, raw: bytes) -> Item | None:
    """im2rec's read_list for one line (None for a blank one); a malformed line is an Item with its reason."""
    text = raw.decode("utf-8", "surrogateescape")  # undecodable names still reach the file system
    if not text.strip():
        return None
    parts = [p.strip() for p in text.strip().split("\t")]
    if len(parts) < 3:
        return Item(
            number,
            reason=f"malformed .lst line: {len(parts)} tab-separated fields, need id, label(s), path",
        )
    try:
        labels = tuple(float(v) for v in parts[1:-1])
        entry = Item(number, int(parts[0]), parts[-1], labels)
    except ValueError as exc:
        return Item(number, reason=f"malformed .lst line: {exc}")
    if not all(math.isfinite(v) for v in labels):  # a NaN label would train on garbage silently
        return Item(number, reason=f"label {'/'.join(parts[1:-1])} is not a finite number")
    return entry


def read_entries(lst: pathlib.Path) -> tuple[list[Item], str]:
    """All entries of a .lst (blank lines ignored) and the checksum of its bytes."""
    data = lst.read_bytes()
    entries = [e for n, raw in enumerate(data.split(b"\n"), 1) if (e := parse_line(n, raw))]
    return entries, hashlib.sha256(data).hexdigest()


def _write_all(handle: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[handle.write(view) :]


class Chunk:
    """One .lst being packed: its files, its resume point and its counters."""

    def __init__(self, lst: pathlib.Path, root: str, options: PackOptions) -> None:
        self.lst, self.name = lst, lst.stem
        base = lst.with_suffix("")
        self.final = {k: pathlib.Path(f"{base}.{k}") for k in ("rec", "idx", "skipped.tsv")}
        self.part = {k: pathlib.Path(f"{v}.part") for k, v in self.final.items()}
        self.manifest = pathlib.Path(f"{base}.pack.json")
        self.entries, checksum = read_entries(lst)
        self.identity = {"lst_sha256": checksum, "root": root, "options": options.record_options()}
        self.lines_done = self.records = self.skipped = 0
        self.sizes = {k: 0 for k in self.final}
        self.written_back = 0  # .rec bytes the disk was told to start writing
        self.files: dict = {}
        self.resumed_at = 0
        self.already_done = False
        self.manifest_fd: int | None = None
        self.lock = self._lock()

    def _lock(self) -> IO[Any]:
        handle = open(self.lst, "rb")  # noqa: SIM115 - held until the chunk is closed
        busy = f"{self.lst} is being packed by another process; wait for it or stop it"
        return lock_or_fail(handle, busy)

    def _load_manifest(self) -> dict:
        try:
            state = json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return {}
        same = (
            all(state.get(k) == v for k, v in self.identity.items())
            and state.get("version") == MANIFEST_VERSION
        )
        return state if same else {}

    def prepare(self) -> None:
        """Skip a finished chunk, resume an interrupted one, or start afresh."""
        state = self._load_manifest()
        finished = state.get("complete") and all(p.exists() for p in self.final.values())
        if finished and self.final["rec"].stat().st_size == state["sizes"]["rec"]:
            self._adopt(state)
            self.already_done = True
            return
        if state and not state.get("complete") and self._recover_parts(state):
            self._adopt(state)
            self.resumed_at = self.lines_done
        else:
            self._start_fresh()
        self._open_parts()

    def _recover_parts(self, state: dict) -> bool:
        """Bring back files an interrupted finish had renamed; True if every part holds its recorded bytes."""
        for key in self.final:
            if not self.part[key].exists() and self.final[key].exists():
                os.replace(self.final[key], self.part[key])
        ok = all(
            self.part[k].exists() and self.part[k].stat().st_size >= state["sizes"][k]
            for k in self.final
        )
        if ok:
            for key in self.final:
                os.truncate(self.part[key], state["sizes"][key])  # drop a torn tail
        return ok

    def _adopt(self, state: dict) -> None:
        self.lines_done = state["lines_done"]
        self.records, self.skipped = state["records"], state["skipped"]
        self.sizes = dict(state["sizes"])

    def _start_fresh(self) -> None:
        for path in (*self.final.values(), *self.part.values()):
            path.unlink(missing_ok=True)  # a stale .rec beside a new list would mislead readers
        self.part["skipped.tsv"].write_text(REPORT_HEADER)
        self.sizes["skipped.tsv"] = len(REPORT_HEADER)
        self.part["rec"].touch()
        self.part["idx"].touch()
        self.save(complete=False)

    def _open_parts(self) -> None:
        self.files = {k: open(self.part[k], "r+b", buffering=0) for k in self.final}  # noqa: SIM115
        for key, handle in self.files.items():
            handle.seek(self.sizes[key])

    def remaining(self) -> list[Item]:
        return [] if self.already_done else self.entries[self.lines_done :]

    def write(self, items: list[Item], results: list) -> list[tuple[Item, str]]:
        """Append one batch in list order; return the (item, reason) pairs that were skipped."""
        rec, idx, report, skipped = [], [], [], []
        offset = self.sizes["rec"]
        for item, result in zip(items, results):
            if isinstance(result, str):
                skipped.append((item, result))
                key = "" if item.malformed else item.id
                path = "" if item.malformed else printable(item.path)
                report.append(f"{item.line}\t{key}\t{path}\t{one_field(result)}\n")
                continue
            idx.append(recordio.index_line(item.id, offset))
            rec.append(result)
            offset += len(result)
        for key, data in (
            ("rec", b"".join(rec)),
            ("idx", "".join(idx).encode()),
            ("skipped.tsv", "".join(report).encode("utf-8", "surrogateescape")),
        ):
            _write_all(self.files[key], data)
            self.sizes[key] += len(data)
        if self.sizes["rec"] - self.written_back >= WRITEBACK_BYTES:
            start = self.written_back
            start_writeback(self.files["rec"].fileno(), start, self.sizes["rec"] - start)
            self.written_back = self.sizes["rec"]
        self.lines_done += len(items)
        self.records += len(rec)
        self.skipped += len(skipped)
        self.save(complete=False)
        return skipped

    def save(self, complete: bool) -> None:
        """Record the durable point: one in-place write of a padded manifest, which a kill cannot tear."""
        state = {
            "version": MANIFEST_VERSION,
            **self.identity,
            "lst": str(self.lst),
            "lines_total": len(self.entries),
            "lines_done": self.lines_done,
            "records": self.records,
            "skipped": self.skipped,
            "sizes": self.sizes,
            "complete": complete,
        }
        # No indent: an indented dump runs json's pure-Python encoder, a tenth of the packer's CPU.
        data = json.dumps(state).encode() + b"\n"
        if self.manifest_fd is None:
            self.manifest_fd = os.open(self.manifest, os.O_RDWR | os.O_CREAT, 0o644)
        blocks = -(-len(data) // MANIFEST_BLOCK) * MANIFEST_BLOCK
        size = max(os.fstat(self.manifest_fd).st_size, blocks)
        # Padding with spaces covers any longer earlier text; JSON allows trailing whitespace.
        os.pwrite(self.manifest_fd, data.ljust(size), 0)

    def finish(self) -> None:
        """Make the data durable, then give the files their final names: report, index, records last."""
        for handle in self.files.values():
            os.fsync(handle.fileno())
            handle.close()
        self.files = {}
        for key in ("skipped.tsv", "idx", "rec"):
            os.replace(self.part[key], self.final[key])
        self.save(complete=True)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
        self.files = {}
        if self.manifest_fd is not None:
            os.close(self.manifest_fd)
            self.manifest_fd = None
        self.lock.close()

    def result(self) -> ChunkResult:
        return ChunkResult(
            self.lst,
            self.final["rec"],
            self.final["idx"],
            self.final["skipped.tsv"],
            self.records,
            self.skipped,
            self.sizes["rec"],
            self.resumed_at,
            self.already_done,
        )


class Progress:
    """Throttled StageProgress events per chunk (part=chunk name) and for the whole run (part="")."""

    def __init__(self, chunks: list[Chunk], on_event: EventSink) -> None:
        self.chunks, self.on_event, self.last = chunks, on_event, 0.0
        self.total = sum(len(c.entries) for c in chunks)

    def update(self, chunk: Chunk, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        self.on_event(
            StageProgress(
                stage="pack",
                done=chunk.lines_done,
                total=len(chunk.entries),
                bytes_done=chunk.sizes["rec"],
                skipped=chunk.skipped,
                part=chunk.name,
            )
        )
        self.on_event(
            StageProgress(
                stage="pack",
                done=sum(c.lines_done for c in self.chunks),
                total=self.total,
                bytes_done=sum(c.sizes["rec"] for c in self.chunks),
                skipped=sum(c.skipped for c in self.chunks),
            )
        )


def _batches(chunks: list[Chunk]) -> Iterator[tuple[Chunk, list[Item]]]:
    """(chunk, items) in list order, chunk after chunk."""
    for chunk in chunks:
        todo = chunk.remaining()
        for start in range(0, len(todo), BATCH_SIZE):
            yield chunk, todo[start : start + BATCH_SIZE]


def _pool(root: str, options: PackOptions, codec: Codec | None) -> GpuPool | Pool:
    """Worker processes on the CPU, or the GPU codec fed by reader threads."""
    setup = Setup(root, options)  # typed options, the same for both
    if codec is not None:
        from engine.prep.pack_gpu import GpuPool

        return GpuPool(setup, codec)
    from engine.prep.pack_pool import Pool

    return Pool(options.num_thread, setup)


def _run(
    chunks: list[Chunk],
    root: str,
    options: PackOptions,
    progress: Progress,
    on_event: EventSink,
    codec: Codec | None = None,
) -> None:
    """Feed batches to the workers and write results strictly in list order."""
    pending: dict[int, tuple[Chunk, list]] = {}  # sequence number -> (chunk, items)
    done: dict[int, list] = {}
    next_seq = 0
    batches = enumerate(_batches(chunks))
    left = {id(c): len(c.remaining()) for c in chunks}
    total = sum(len(range(0, n, BATCH_SIZE)) for n in left.values())  # as _batches cuts them
    for chunk in chunks:
        if not left[id(chunk)] and not chunk.already_done:
            chunk.finish()
    if not any(left.values()):
        return
    pool = _pool(root, options, codec)
    try:
        while True:
            while pool.room(total - next_seq - len(pending)) > 0 and (nxt := next(batches, None)):
                seq, (chunk, items) = nxt
                pending[seq] = (chunk, items)
                pool.submit(seq, items)
            if not pool.busy():
                break
            for seq, results in pool.collect():
                done[seq] = results
            while next_seq in done:
                chunk, items = pending.pop(next_seq)
                _write_batch(chunk, items, done.pop(next_seq), progress, on_event, left)
                next_seq += 1
    finally:
        pool.close()


def _write_batch(
    chunk: Chunk,
    items: list[Item],
    results: list,
    progress: Progress,
    on_event: EventSink,
    left: dict,
) -> None:
    for item, reason in chunk.write(items, results):
        path = f"{chunk.lst.name}:{item.line}" if item.malformed else printable(item.path)
        on_event(SkippedItem(stage="pack", path=path, reason=reason))
    left[id(chunk)] -= len(items)
    if left[id(chunk)] == 0:
        chunk.finish()
        on_event(StageState(stage="pack", state="running", message=_summary(chunk)))
    progress.update(chunk, force=left[id(chunk)] == 0)


def _summary(chunk: Chunk) -> str:
    text = f"{chunk.final['rec'].name}: {chunk.records} records"
    return text + (
        f", {chunk.skipped} skipped (see {chunk.final['skipped.tsv'].name})"
        if chunk.skipped
        else ""
    )


def _check_root(chunk: Chunk, root: str) -> None:
    """Refuse a ROOT under which none of a list's first paths exist: almost surely the wrong folder."""
    sample = [e.path for e in chunk.entries if not e.malformed][:ROOT_SAMPLE]
    if sample and not any(os.path.lexists(os.path.join(root, path)) for path in sample):
        raise UserError(
            f"none of the first {len(sample)} paths in {chunk.lst} exist under ROOT {root} "
            f"(e.g. {printable(sample[0])}); give the ROOT the list was made from"
        )


def _announce(chunk: Chunk, on_event: EventSink) -> None:
    if chunk.already_done:
        message = f"{chunk.name}: already packed"
    elif chunk.resumed_at:
        message = f"{chunk.name}: resuming at list line {chunk.resumed_at} of {len(chunk.entries)}"
    else:
        return
    on_event(StageState(stage="pack", state="running", message=message))


def codec_note(options: PackOptions) -> str:
    """One line when the YUV-plane codec would apply but libturbojpeg is missing ('' otherwise)."""
    wanted = options.codec == "auto" and options.reduced_decode and options.resize > 0
    if not wanted or options.pass_through or options.encoding != ".jpg" or turbojpeg.load():
        return ""
    return (
        "libturbojpeg not found: packing with OpenCV, about 1.3x slower "
        "(install it: apt-get install libturbojpeg0)"
    )


def _open_chunks(
    lst_paths: Iterable[str | os.PathLike[str]],
    root: str,
    options: PackOptions,
    on_event: EventSink,
) -> list[Chunk]:
    chunks: list[Chunk] = []
    try:
        for lst in dict.fromkeys(pathlib.Path(p).absolute() for p in lst_paths):
            if not lst.is_file():
                raise UserError(f"list file {lst} does not exist; write it with `imgscale list`")
            chunks.append(chunk := Chunk(lst, root, options))
            _check_root(chunk, root)
            chunk.prepare()
            _announce(chunk, on_event)
    except BaseException:
        for chunk in chunks:
            chunk.close()
        raise
    return chunks


def pack_lists(
    lst_paths: Sequence[str | os.PathLike[str]],
    root: str | os.PathLike,
    options: PackOptions,
    *,
    on_event: EventSink = ignore,
    gpu_codec: Codec | None = None,
) -> PackResult:
    """Pack each .lst into .rec/.idx beside it (see the module docstring); resumes interrupted chunks.

    ``options`` checked its own values when it was made (engine.prep.options). With
    ``options.device`` other than cpu, ``gpu_codec`` (a pack_gpu.Codec) does the pixel work;
    when none is given, torchvision's is loaded, or a UserError says why it cannot be.
    """
    if options.device != "cpu" and gpu_codec is None:
        from engine.prep.pack_gpu import load_codec

        gpu_codec = load_codec(options.device)
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise UserError(
            f"ROOT {root} is not a folder; give the folder the .lst paths are relative to"
        )
    started = time.monotonic()
    on_event(StageState(stage="pack", state="running", message=codec_note(options)))
    chunks: list[Chunk] = []
    try:
        chunks = _open_chunks(lst_paths, root, options, on_event)
        progress = Progress(chunks, on_event)
        _run(
            chunks,
            root,
            options,
            progress,
            on_event,
            gpu_codec if options.device != "cpu" else None,
        )
    except OSError as exc:
        if exc.errno in DISK_FULL:
            where = pathlib.Path(lst_paths[0]).parent if lst_paths else root
            raise UserError(
                f"disk full writing records in {where}: free space and run the same command "
                "again to resume (finished batches are kept in *.part files)"
            ) from None
        raise
    finally:
        for chunk in chunks:
            chunk.close()
    for chunk in chunks:
        if chunk.already_done or not chunk.entries:
            progress.update(chunk, force=True)  # no batch of theirs reported them this run
    result = PackResult(tuple(c.result() for c in chunks), time.monotonic() - started)
    on_event(
        StageState(
            stage="pack",
            state="done",
            message=f"{result.records} records, {result.skipped} skipped",
        )
    )
    return result
