"""Extract an ImageNet-style tar of per-class tars into ROOT/<class>/ in one streaming, resumable pass.

Each inner tar is read straight out of the outer archive's stream into a hidden ``.partial-<class>``
folder, which is renamed to ``<class>`` only when complete and then recorded in a manifest; so the
inner tars are never written to disk and a restarted run skips finished classes and redoes a
half-done one from scratch. Members whose paths would land outside ROOT stop the run.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Self

from engine.errors import UserError
from engine.events import EventSink, SkippedItem, StageProgress, StageState, ignore
from engine.paths import require_folder_path
from engine.prep.disk import MAX_IMAGE_BYTES, ensure_space
from engine.prep.filter import moved_out
from engine.prep.journal import default_journal_path, exclusive_lock, fsync_dir
from engine.prep.report import one_field, printable

PARTIAL = ".partial-"
PROGRESS_EVERY_S = 0.25
NAME_MAX, PATH_MAX = 255, 4096  # Linux's limits on one path component and on a whole path
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
SPARSE_CLASS = "{size:,} bytes, a sparse member (holes, not a tar of images); class not extracted"
SHOWN_NAME_CHARS = 120  # a name in a message or report, cut to stay one readable line


class HeaderWatch(tarfile.TarInfo):
    """Remembers on the archive why its last header could not be read, so the reader can tell a
    proper end (zero blocks) from an archive cut short, which tarfile treats alike."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            tarfile_.last_header_error = exc  # type: ignore[attr-defined]
            raise


def cut_short(archive: tarfile.TarFile) -> bool:
    """True when reading stopped at the archive's physical end or at garbage, not at its end marker."""
    error = getattr(archive, "last_header_error", None)
    return type(error).__name__ != "EOFHeaderError"  # zero blocks: tarfile's name for a proper end


def shown_name(name: str) -> str:
    text = printable(name)
    return (
        text
        if len(text) <= SHOWN_NAME_CHARS
        else text[:SHOWN_NAME_CHARS] + f"… ({len(text)} chars)"
    )


@dataclass
class ExtractResult:
    root: Path
    classes: int = 0  # classes extracted by this run
    already: int = 0  # classes a previous run had finished
    images: int = 0  # files written by this run
    bytes: int = 0
    skipped: list[tuple[str, str]] = field(
        default_factory=list
    )  # (member, reason), also in the report


class UnsafeMember(UserError):
    """An archive member would be written (or point) outside ROOT."""


class Truncated(UserError):
    """The archive ends before its end-of-archive marker: a cut download or copy."""


def safe_target(base: Path, name: str) -> Path:
    """Where member ``name`` goes under ``base``; refuses absolute paths and '..'."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and posix.parts[0].endswith(":")):
        raise UnsafeMember(name)
    parts = [p for p in posix.parts if p not in ("", ".")]
    if not parts:
        raise UnsafeMember(name)
    return base.joinpath(*parts)


def link_escapes(base: Path, member: tarfile.TarInfo) -> bool:
    """True when a symlink or hard link member points outside ``base``."""
    link = PurePosixPath(member.linkname.replace("\\", "/"))
    if link.is_absolute():
        return True
    start = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
    depth = 0
    for part in (start / link).parts:
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return True
    return False


class Manifest:
    """The classes a run has finished, one JSON line each (fsync'ed), beside ROOT."""

    def __init__(self, root: Path) -> None:
        self.path = default_journal_path("extract", root)
        self.done: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.done[entry["class"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line from a crash

    def add(self, cls: str, files: int, nbytes: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"class": cls, "files": files, "bytes": nbytes}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[cls] = {"class": cls, "files": files, "bytes": nbytes}


class Extractor:
    """One extraction run; holds counters so progress events stay cheap."""

    def __init__(self, tar_path: Path, root: Path, on_event: EventSink) -> None:
        self.tar_path, self.root, self.on_event = tar_path, root, on_event
        self.manifest = Manifest(root)
        self.filtered = moved_out(root)
        self.result = ExtractResult(root)
        self.total_bytes = tar_path.stat().st_size if tar_path.is_file() else None
        self.total_classes: int | None = None
        self.position = 0
        self.last_event = time.monotonic()

    def run(self) -> ExtractResult:
        for stale in self.root.glob(PARTIAL + "*"):
            shutil.rmtree(stale)  # a half-done class from an interrupted run: redo it cleanly
        outer, streaming = open_outer(self.tar_path)
        with outer:
            if not streaming:
                self.total_classes = count_classes(outer)
            self.progress(force=True)
            try:
                for member in outer:
                    self.position = member.offset_data + member.size
                    self.member(outer, member)
            except tarfile.ReadError as exc:
                if "unexpected end of data" not in str(exc):
                    raise
                raise self.truncated("ends inside a member") from None
            if cut_short(outer):
                raise self.truncated("ends without its end-of-archive marker")
        self.progress(force=True)
        return self.result

    def truncated(self, where: str) -> Truncated:
        """The archive is cut short; says which classes are kept, as the next run will find them."""
        kept = self.result.classes + self.result.already
        keeps = (
            f"the {kept} finished class{'es' if kept != 1 else ''} before the cut "
            f"{'are' if kept != 1 else 'is'} kept"
            if kept
            else "no class was complete before the cut, so none is kept"
        )
        return Truncated(
            f"{self.tar_path}: truncated: the archive {where}; the file is incomplete: copy or "
            f"download it again, then rerun ({keeps})"
        )

    def member(self, outer: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if is_inner_tar(member):
            self.inner(outer, member)
        elif member.isfile():
            self.loose_file(outer, member)
        elif member.issym() or member.islnk():
            self.link(member, self.root, member.name)
        elif not member.isdir():
            self.skip(member.name, "not a regular file (device, fifo …)")

    # -- one class ---------------------------------------------------------------------------
    def inner(self, outer: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        cls = PurePosixPath(member.name).name[: -len(".tar")]
        if not cls or cls.startswith(".") or "\\" in cls:
            self.skip(member.name, "inner tar name is not a usable class folder name")
            return
        if member.sparse is not None:  # a tar of images has no holes: this one is a bomb
            self.skip(member.name, SPARSE_CLASS.format(size=member.size))
            return
        final = self.root / cls
        if self.finished(cls, final):
            self.result.already += 1
            self.progress(part=cls)
            return
        partial = self.root / (PARTIAL + cls)
        try:
            partial.mkdir(parents=True)
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            self.skip(member.name, "class name too long for this file system; class not extracted")
            return
        try:
            files, nbytes = self.unpack(outer.extractfile(member), partial, member.name)
        except tarfile.TarError as exc:
            shutil.rmtree(partial)
            self.skip(member.name, f"inner tar is damaged ({exc}); class not extracted")
            return
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # never leave a half class filling the disk
            raise
        fsync_dir(partial)
        os.rename(partial, final)
        fsync_dir(self.root)
        self.manifest.add(cls, files, nbytes)
        self.result.classes += 1
        self.progress(part=cls, force=True)

    def finished(self, cls: str, final: Path) -> bool:
        """A class is done while its folder is kept: in ROOT, or where filter moved it.

        A recorded class whose folder was deleted since is extracted again.
        """
        if final.is_dir():
            if cls not in self.manifest.done:  # renamed but not yet recorded when the run stopped
                self.manifest.add(cls, count_files(final), 0)
            return True
        return cls in self.manifest.done and cls in self.filtered

    def unpack(self, fileobj: IO[bytes] | None, folder: Path, inner_name: str) -> tuple[int, int]:
        files = nbytes = 0
        with tarfile.open(fileobj=fileobj, mode="r|") as inner:
            for m in inner:
                shown = f"{inner_name}:{m.name}"
                if m.isfile():
                    target = self.checked(folder, m.name, shown)
                    if not self.writable(m, target, shown):
                        continue
                    nbytes += write_member(inner, m, target)
                    files += 1
                    self.result.images += 1
                    self.result.bytes += m.size
                    self.progress()
                elif m.issym() or m.islnk():
                    self.link(m, folder, shown)
                elif m.isdir() and m.name.strip("/") in ("", "."):
                    continue  # `tar -C class -cf class.tar .` stores the class folder itself as "./"
                elif m.isdir():
                    self.make_dir(self.checked(folder, m.name, shown), shown)
                else:
                    self.skip(shown, "not a regular file (device, fifo …)")
        return files, nbytes

    # -- members outside inner tars (an already-flat archive: <class>/<image>) ----------------
    def loose_file(self, outer: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        target = self.checked(self.root, member.name, member.name)
        real_root = os.path.realpath(self.root)
        if os.path.commonpath([real_root, os.path.realpath(target.parent)]) != real_root:
            raise self.unsafe(member.name, "its folder is a link that leads outside ROOT")
        if not self.writable(member, target, member.name):
            return
        if target.is_file() and target.stat().st_size == member.size:
            return  # written by an earlier run (files are renamed into place only when complete)
        tmp = target.with_name(f".{target.name}.part")
        try:
            write_member(outer, member, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a partial file must not keep the disk full
            raise
        os.rename(tmp, target)
        self.result.images += 1
        self.result.bytes += member.size
        self.progress()

    def writable(self, member: tarfile.TarInfo, target: Path, shown: str) -> bool:
        """Whether a file member may be written: sane size (a sparse member counts at its real
        size), a name the file system takes, and room for it; otherwise it is skipped and reported."""
        if member.size > MAX_IMAGE_BYTES:
            sparse = " (a sparse member)" if member.sparse is not None else ""
            self.skip(shown, f"{member.size:,} bytes{sparse}: larger than any image; not extracted")
            return False
        if (
            any(len(os.fsencode(part)) > NAME_MAX for part in target.parts)
            or len(os.fsencode(target)) >= PATH_MAX
        ):
            self.skip(shown, "name too long for this file system; not extracted")
            return False
        if member.sparse is not None:
            ensure_space("extract", member.size, self.root)
        return True

    def make_dir(self, path: Path, shown: str) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            self.skip(shown, "name too long for this file system; not extracted")

    def checked(self, base: Path, name: str, shown: str) -> Path:
        try:
            return safe_target(base, name)
        except UnsafeMember:
            raise self.unsafe(shown, "absolute path or '..'") from None

    def link(self, member: tarfile.TarInfo, base: Path, shown: str) -> None:
        if link_escapes(base, member):
            raise self.unsafe(shown, f"a link to {member.linkname!r}")
        self.skip(shown, "links are not extracted")

    def unsafe(self, shown: str, why: str) -> UnsafeMember:
        return UnsafeMember(
            f"{self.tar_path}: member {shown_name(shown)!r} would escape {self.root} ({why}); refusing this archive "
            "(nothing was written outside ROOT); check where it came from"
        )

    def skip(self, name: str, reason: str) -> None:
        self.result.skipped.append((shown_name(name), reason))
        self.on_event(SkippedItem("extract", shown_name(name), reason))

    def progress(self, part: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_event < PROGRESS_EVERY_S:
            return
        self.last_event = now
        r = self.result
        self.on_event(
            StageProgress(
                "extract", r.classes + r.already, self.total_classes, bytes_done=self.position,
                bytes_total=self.total_bytes, skipped=len(r.skipped), unit="classes", part=part,
                message=f"{r.images} files",
            )
        )  # fmt: skip


def is_inner_tar(member: tarfile.TarInfo) -> bool:
    return member.isfile() and member.name.endswith(".tar")


def count_classes(outer: tarfile.TarFile) -> int | None:
    """Inner tars in a seekable archive (None when it is cut short: the run then says so)."""
    try:
        return sum(1 for m in outer.getmembers() if is_inner_tar(m))
    except tarfile.ReadError:
        return None


def write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    assert src is not None  # callers pass regular files only
    with src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return member.size


def count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def open_outer(path: Path) -> tuple[tarfile.TarFile, bool]:
    """(archive, streaming). A plain tar file is read seekably, so a restart skips done classes by
    seeking rather than reading; a pipe or a compressed archive is read as a stream. Neither mode
    keeps member data in memory."""
    if path.is_file():
        with open(path, "rb") as f:
            compressed = f.read(6).startswith(COMPRESSED_MAGIC)
        if not compressed:
            return tarfile.open(path, "r:", tarinfo=HeaderWatch), False
    return tarfile.open(path, "r|*", tarinfo=HeaderWatch), True


def report_path(root: Path) -> Path:
    """The skip report, beside ROOT (never inside it, where it would look like a class)."""
    root = root.absolute()
    return root.with_name(root.name + "_extract_skipped.tsv")


def write_report(path: Path, rows: list[tuple[str, str]]) -> None:
    """Append this run's skips (earlier runs' rows stay: their classes are not read again)."""
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as f:
        f.write("member\treason\n" if new else "")
        f.writelines(f"{name}\t{one_field(reason)}\n" for name, reason in rows)


def check_paths(tar_path: Path, root: Path) -> None:
    if not tar_path.exists():
        raise UserError(
            f"{tar_path} does not exist; give the path of the ImageNet tar (e.g. fall11_whole.tar)"
        )
    if tar_path.is_dir():
        raise UserError(f"{tar_path} is a folder, not a tar; give the archive itself")
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} exists and is not a folder; choose the folder to extract into")
    require_folder_path(root, "ROOT")


def require_class_folders(
    tar_path: Path, root: Path, result: ExtractResult, on_event: EventSink
) -> None:
    """A single class's tar (or any tar of loose files) gives ROOT no class folder: later stages would
    see no classes, so say what was given instead of reporting '0 classes extracted'."""
    if any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        return
    message = (
        f"{tar_path} holds no per-class tars or class folders ({result.images} loose files went to "
        f"{root}); give the tar of per-class tars, e.g. fall11_whole.tar"
    )
    on_event(StageState("extract", "failed", message))
    raise UserError(message)


def remaining_bytes(tar_path: Path, root: Path) -> int:
    """Space extraction still needs: the archive's size less what finished classes already hold."""
    if not tar_path.is_file():
        return 0
    present = {p.name for p in root.iterdir()} if root.is_dir() else set()
    kept = present | moved_out(root)  # a deleted class will be extracted again: it needs space
    done = sum(int(e.get("bytes", 0)) for cls, e in Manifest(root).done.items() if cls in kept)
    return max(0, tar_path.stat().st_size - done)


def extract_archive(
    tar_path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    on_event: EventSink = ignore,
    check_space: bool = True,
) -> ExtractResult:
    """Extract ``tar_path`` (a tar of per-class tars, or of class folders) into ``root``."""
    tar_path, root = Path(tar_path), Path(root)
    check_paths(tar_path, root)
    if check_space:
        ensure_space("extract", remaining_bytes(tar_path, root), root)
    root.mkdir(parents=True, exist_ok=True)
    on_event(StageState("extract", "running", f"{tar_path} -> {root}"))
    lock = exclusive_lock(default_journal_path("extract", root).with_suffix(".lock"))
    try:
        result = Extractor(tar_path, root, on_event).run()
    except OSError as exc:
        on_event(StageState("extract", "failed", str(exc)))
        where = exc.filename or root
        raise UserError(
            f"cannot use {where}: {exc.strerror}; fix that and run again to resume"
        ) from None
    except tarfile.TarError as exc:
        on_event(StageState("extract", "failed", str(exc)))
        raise UserError(
            f"{tar_path}: not a readable tar archive ({exc}); check the file is complete"
        ) from None
    except UserError as exc:
        on_event(StageState("extract", "failed", str(exc)))
        raise
    finally:
        lock.close()
    if result.skipped:
        write_report(report_path(root), result.skipped)
    require_class_folders(tar_path, root, result, on_event)
    summary = f"{result.classes} classes extracted, {result.already} already done, {len(result.skipped)} skipped"
    on_event(StageState("extract", "done", summary))
    return result
