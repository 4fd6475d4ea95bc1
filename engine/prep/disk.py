"""Disk space: estimate what the remaining stages will write, compare with free space, refuse early.

Extraction writes about the archive's size (inner tars are streamed, never stored). Packing is
estimated from a sample: a few real images are decoded, resized and encoded with the chosen
settings, and the packed/source byte ratio of the sample is applied to all source bytes.
"""

from __future__ import annotations

import os
import random
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from engine.cli_progress import human_bytes
from engine.errors import StageRefused, UserError
from engine.prep.options import TUTORIAL, DiskOptions, PackOptions

IMAGE_EXTS = (".jpeg", ".jpg", ".png")
MARGIN = DiskOptions().margin  # a workspace may ask for another (its disk.margin)
RECORD_OVERHEAD = 32  # RecordIO framing + image header + .idx line, per image
LIST_LINE_BYTES = 80  # one .lst line
SAMPLE_IMAGES = 64  # decoded and re-encoded: about 0.3 s; about +-20% on small, skewed sets


@dataclass(frozen=True)
class SpaceNeed:
    """What one stage will write, where, and whether it fits."""

    stage: str
    need_bytes: int
    target: Path
    mount: Path
    free_bytes: int
    note: str = ""

    @property
    def fits(self) -> bool:
        return with_margin(self.need_bytes) <= self.free_bytes


def with_margin(need: int, margin: float = MARGIN) -> int:
    """``need`` bytes times the margin (a multiplier such as 1.05)."""
    return int(need * margin) if need else 0


def existing_ancestor(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    path = existing_ancestor(path).resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def free_space(path: Path) -> tuple[int, Path]:
    """(free bytes for an unprivileged user, mount point) of the file system that holds ``path``."""
    return shutil.disk_usage(existing_ancestor(path)).free, mount_point(path)


def ensure_space(stage: str, need_bytes: int, target: Path) -> None:
    """Refuse to start a stage that cannot fit, with the numbers a person needs to act."""
    free, mount = free_space(target)
    need = with_margin(need_bytes)
    if need > free:
        raise StageRefused(
            f"{stage} needs {human_bytes(need)} for {target} but only {human_bytes(free)} is free on {mount}; "
            "free some space there or choose a target on another disk"
        )


# -- image sizes ----------------------------------------------------------------------------------
def image_files(root: Path) -> list[Path]:
    """Every image (by extension, any case) under ``root``, sorted, without following into hidden folders."""
    found = []
    for path, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            Path(path, f) for f in sorted(files) if os.path.splitext(f)[1].lower() in IMAGE_EXTS
        ]
    return found


def target_size(w: int, h: int, s: PackOptions) -> tuple[int, int] | None:
    """Stored dimensions, or None when the image is stored as it is (pass-through, no-upscale)."""
    if s.pass_through:
        return None
    if s.center_crop:
        w = h = min(w, h)
    if s.resize:
        short = min(w, h)
        if s.no_upscale and short <= s.resize:
            return None
        scale = s.resize / short
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    return w, h


def packed_size(data: bytes, s: PackOptions) -> int | None:
    """Bytes one image takes once packed with settings ``s``; None if it does not decode."""
    import cv2
    import numpy as np

    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    except cv2.error:
        return None  # what cv2 cannot read, pack skips: it takes no space
    if img is None:
        return None
    dims = target_size(img.shape[1], img.shape[0], s)
    if dims is None:
        return len(data) + RECORD_OVERHEAD
    img = cv2.resize(img, dims, interpolation=cv2.INTER_AREA)
    flag = cv2.IMWRITE_JPEG_QUALITY if s.encoding == ".jpg" else cv2.IMWRITE_PNG_COMPRESSION
    ok, buf = cv2.imencode(s.encoding, img, [flag, s.quality])
    return len(buf) + RECORD_OVERHEAD if ok else None


def packed_ratio(samples: list[bytes], s: PackOptions) -> float:
    """Packed bytes per source byte over a sample (1.0 when nothing decodes: assume no shrinkage)."""
    src = out = 0
    for data in samples:
        size = packed_size(data, s)
        if size is not None:
            src, out = src + len(data), out + size
    return out / src if src else 1.0


def sample_tree(
    root: Path, files: list[Path], count: int = SAMPLE_IMAGES, seed: int = 0
) -> list[bytes]:
    chosen = random.Random(seed).sample(files, min(count, len(files)))
    return [p.read_bytes() for p in chosen]


def sample_tar(path: Path, count: int = SAMPLE_IMAGES) -> list[bytes]:
    """The first images of the first inner tars (a streaming read of a few MB, not the archive)."""
    samples: list[bytes] = []
    try:
        with tarfile.open(path, "r|*") as outer:
            for member in outer:
                if len(samples) >= count:
                    break
                if member.isfile() and member.name.endswith(".tar"):
                    samples += _inner_samples(_member_file(outer, member), count - len(samples))
                elif member.isfile() and member.name.lower().endswith(IMAGE_EXTS):
                    samples.append(_member_file(outer, member).read())
    except (tarfile.TarError, OSError):
        pass  # a damaged archive is extract's to report; the estimate falls back to ratio 1
    return samples


def _inner_samples(fileobj: IO[bytes], count: int) -> list[bytes]:
    out: list[bytes] = []
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as inner:
            for member in inner:
                if len(out) >= min(count, SAMPLE_IMAGES // 3):
                    break  # a few per class: classes differ
                if member.isfile() and member.name.lower().endswith(IMAGE_EXTS):
                    out.append(_member_file(inner, member).read())
    except tarfile.TarError:
        pass
    return out


def _member_file(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    """The contents of MEMBER, a regular file (extractfile is None only for other kinds)."""
    fileobj = tar.extractfile(member)
    assert fileobj is not None
    return fileobj


# -- the estimate ---------------------------------------------------------------------------------
def estimate_space(
    source: Path,
    workspace: Path,
    settings: PackOptions = TUTORIAL["pack"],
    *,
    extract_root: Path | None = None,
) -> list[SpaceNeed]:
    """What extract (for a tar), list and pack will write; ``workspace`` holds their outputs."""
    source, workspace = Path(source), Path(workspace)
    if not source.exists():
        raise UserError(
            f"{source} does not exist; give the ImageNet tar or an extracted class tree"
        )
    rows = []
    if source.is_dir():
        files = image_files(source)
        source_bytes, images = sum(p.stat().st_size for p in files), len(files)
        ratio, note = (
            packed_ratio(sample_tree(source, files), settings),
            f"{images} images in the tree",
        )
    else:
        source_bytes = tar_real_bytes(source)
        images = source_bytes // 110_000  # ImageNet's mean JPEG size; only sizes the .lst row
        ratio, note = packed_ratio(sample_tar(source), settings), "from the archive size"
        target = extract_root or workspace
        rows.append(_row("extract", source_bytes, target, "about the archive's size"))
    rows.append(_row("list", images * LIST_LINE_BYTES, workspace, f"about {images} lines"))
    rows.append(
        _row("pack", int(source_bytes * ratio), workspace, f"{ratio:.2f} x source bytes ({note})")
    )
    return rows


SCAN_HEADERS = 200_000  # a small archive's headers are all read; extraction guards the rest
# No photograph in a dataset comes near this; extract skips a bigger file (a sparse bomb, not an image).
MAX_IMAGE_BYTES = 256 << 20


def tar_real_bytes(path: Path, budget: int = SCAN_HEADERS) -> int:
    """The archive's size plus what its sparse members (outer or in inner tars) expand to once
    written: a 20 KiB tar can hold a 200 MiB sparse file. What extract skips (a sparse class tar,
    a file over MAX_IMAGE_BYTES) writes nothing. Reads headers only, up to ``budget``."""
    extra, seen = 0, 0
    try:
        with tarfile.open(path, "r:") as outer:  # a compressed archive is not scanned
            for member in outer:
                seen += 1
                class_tar = member.isfile() and member.name.endswith(".tar")
                if class_tar and member.sparse is not None:
                    continue  # extract skips it: its holes are never written
                extra += sparse_extra(member)
                if class_tar:
                    inner_file = outer.extractfile(member)
                    with tarfile.open(fileobj=inner_file, mode="r:") as inner:
                        for m in inner:
                            seen += 1
                            extra += sparse_extra(m)
                            if seen >= budget:
                                break
                if seen >= budget:
                    break
    except (tarfile.TarError, OSError):
        pass  # unreadable or compressed: the archive's size is all we know
    return path.stat().st_size + extra


def sparse_extra(member: tarfile.TarInfo) -> int:
    """Bytes a sparse member writes beyond the bytes it stores in the archive."""
    chunks: list[tuple[int, int]] | None = member.sparse  # type: ignore[assignment]  # typeshed: int
    if not chunks or member.size > MAX_IMAGE_BYTES:  # extract skips one over the limit
        return 0
    return max(0, member.size - sum(size for _offset, size in chunks))


def _row(stage: str, need: int, target: Path, note: str) -> SpaceNeed:
    free, mount = free_space(target)
    return SpaceNeed(stage, need, Path(target), mount, free, note)


def totals_by_mount(rows: list[SpaceNeed], margin: float = MARGIN) -> dict[Path, tuple[int, int]]:
    """Everything planned on one file system must fit at once: mount -> (need with margin, free)."""
    out: dict[Path, tuple[int, int]] = {}
    for row in rows:
        need, _ = out.get(row.mount, (0, row.free_bytes))
        out[row.mount] = (need + with_margin(row.need_bytes, margin), row.free_bytes)
    return out


def format_table(rows: list[SpaceNeed], margin: float = MARGIN) -> str:
    lines = [f"{'stage':<8} {'needs':>10} {'free':>10}  {'mount':<16} note"]
    for r in rows:
        lines.append(
            f"{r.stage:<8} {human_bytes(r.need_bytes):>10} {human_bytes(r.free_bytes):>10}  {r.mount!s:<16} {r.note}"
        )
    for mount, (need, free) in totals_by_mount(rows, margin).items():
        verdict = "fits" if need <= free else f"DOES NOT FIT: free {human_bytes(need - free)} more"
        lines.append(
            f"{'total':<8} {human_bytes(need):>10} {human_bytes(free):>10}  {mount!s:<16} {verdict} (+{margin - 1:.0%} margin)"
        )
    return "\n".join(lines)


def tree_bytes(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def ensure_moves_fit(stage: str, moves: list[tuple[Path, Path]]) -> None:
    """Moves within a file system take no space; those that cross to another one are copies."""
    need: dict[int, tuple[int, Path]] = {}
    for src, dst in moves:
        target_dev = os.stat(existing_ancestor(dst.parent)).st_dev
        if os.stat(src).st_dev != target_dev:
            total, _ = need.get(target_dev, (0, dst.parent))
            need[target_dev] = (total + tree_bytes(src), dst.parent)
    for total, target in need.values():
        ensure_space(stage, total, target)
