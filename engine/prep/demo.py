"""A small ImageNet-shaped demo dataset: per-class tars of learnable, photo-sized JPEGs, made from a seed.

Each class has its own shape and hue drawn at a random place and scale over a blotchy background, so
a small network tells classes apart within a few epochs even at 32x32. Counts per class are spread
evenly between two bounds (then shuffled) so a class-size filter always has something to remove.
The same arguments give the same bytes.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import UserError
from engine.paths import blocking_file, require_folder_path

if TYPE_CHECKING:  # numpy is imported lazily, by the functions that draw
    from numpy import ndarray
    from numpy.random import Generator

# Real ImageNet-1k WordNet ids, so paths look like the real thing; more classes get made-up ids.
WNIDS = (
    "n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041",
    "n01514668", "n01514859", "n01518878", "n01530575", "n01531178", "n01532829", "n01534433",
    "n01537544", "n01558993", "n01560419", "n01580077", "n01582220", "n01592084",
)  # fmt: skip
SHAPES = (
    "disc",
    "square",
    "triangle",
    "ring",
    "cross",
    "hstripes",
    "vstripes",
    "checker",
    "diamond",
    "bar",
)
TAR_MTIME = 1318000000  # autumn 2011, like fall11_whole.tar; fixed so the archive bytes repeat
CORRUPT_KINDS = ("truncated", "empty", "text", "garbage", "not-an-image")


@dataclass(frozen=True)
class DemoSummary:
    path: Path  # the tar file or the tree's root
    classes: tuple[tuple[str, int], ...]  # (wnid, number of decodable images)
    images: int
    corrupt: tuple[str, ...]  # relative paths of the broken or non-image files added
    bytes: int


def wnid(index: int) -> str:
    return WNIDS[index] if index < len(WNIDS) else f"n{9000000 + index * 7919:08d}"


def class_counts(classes: int, images_per_class: int | Sequence[int], seed: int) -> list[int]:
    """Per-class image counts: a list (one per class), or a (lo, hi) tuple or a mean M (M/2..3M/2) spread
    evenly over the classes and shuffled by the seed."""
    import numpy as np

    if isinstance(images_per_class, int):
        images_per_class = (max(1, images_per_class // 2), images_per_class + images_per_class // 2)
    if not (isinstance(images_per_class, tuple) and len(images_per_class) == 2):
        counts = [int(n) for n in images_per_class]  # an explicit count per class
        if len(counts) != classes or min(counts, default=1) < 0:
            raise UserError(f"images per class: give {classes} counts >= 0, got {counts}")
        return counts
    lo, hi = (int(v) for v in images_per_class)
    if not 1 <= lo <= hi:
        raise UserError(f"--images-per-class {lo}:{hi}: need 1 <= low <= high")
    spread = (
        [lo]
        if classes == 1
        else [round(lo + (hi - lo) * i / (classes - 1)) for i in range(classes)]
    )
    order = np.random.default_rng([seed, 7]).permutation(classes)
    return [spread[i] for i in order]


# -- pixels -------------------------------------------------------------------------------------
def image_size(
    rng: Generator, size_scale: float = 1.0, max_side: int | None = None
) -> tuple[int, int]:
    """(width, height): mostly about 500x375, some over 1000 px, a few tiny; a quarter portrait."""
    kind = rng.random()
    if kind < 0.05:
        w = int(rng.integers(40, 100))
    elif kind < 0.15:
        w = int(rng.integers(1000, 1600))
    else:
        w = int(rng.integers(450, 521))
    h = int(w * rng.uniform(0.66, 0.8))
    if rng.random() < 0.25:
        w, h = h, w
    scale = size_scale
    if max_side:
        scale = min(scale, max_side / max(w, h))
    return max(8, round(w * scale)), max(8, round(h * scale))


def class_colour(index: int, rng: Generator) -> tuple[int, ...]:
    """A BGR colour near the class hue, with some brightness and saturation jitter."""
    import cv2
    import numpy as np

    hue = int((index * 180 * 0.618034) % 180)
    hsv = np.array(
        [[[hue, int(rng.integers(170, 256)), int(rng.integers(150, 256))]]], dtype=np.uint8
    )
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


# rng is Any: with numpy's Generator types `grain` would change dtype between its two assignments.
def background(rng: Any, w: int, h: int) -> ndarray:
    """Muted low-frequency blotches plus a little grain, like an out-of-focus photo."""
    import cv2
    import numpy as np

    small = rng.integers(40, 200, size=(max(2, h // 48), max(2, w // 48), 3), dtype=np.uint8)
    small = (small * 0.5 + small.mean(axis=2, keepdims=True) * 0.5).astype(np.uint8)  # desaturate
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    grain = rng.integers(-12, 13, size=(max(1, h // 2), max(1, w // 2), 1), dtype=np.int16)
    grain = cv2.resize(grain.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    return np.clip(img.astype(np.int16) + grain[..., None].astype(np.int16), 0, 255).astype(
        np.uint8
    )


def draw_shape(img: ndarray, shape: str, colour: tuple[int, ...], rng: Generator) -> None:
    """Draw the class's shape at a random place and scale (25-55% of the short side)."""
    import cv2
    import numpy as np

    h, w = img.shape[:2]
    r = max(3, int(min(w, h) * rng.uniform(0.25, 0.55) / 2))
    cx, cy = int(rng.integers(r, max(r + 1, w - r))), int(rng.integers(r, max(r + 1, h - r)))
    thick = max(2, r // 3)
    if shape == "disc":
        cv2.circle(img, (cx, cy), r, colour, -1, cv2.LINE_AA)
    elif shape == "ring":
        cv2.circle(img, (cx, cy), r - thick // 2, colour, thick, cv2.LINE_AA)
    elif shape == "cross":
        cv2.line(img, (cx - r, cy), (cx + r, cy), colour, thick, cv2.LINE_AA)
        cv2.line(img, (cx, cy - r), (cx, cy + r), colour, thick, cv2.LINE_AA)
    elif shape == "bar":
        cv2.line(img, (cx - r, cy + r), (cx + r, cy - r), colour, thick, cv2.LINE_AA)
    elif shape in ("hstripes", "vstripes", "checker"):
        _pattern(img, shape, colour, cx, cy, r)
    else:
        sides = {"square": 4, "triangle": 3, "diamond": 4}[shape]
        turn = np.pi / 4 if shape == "square" else -np.pi / 2 if shape == "triangle" else 0.0
        angles = turn + rng.uniform(-0.2, 0.2) + np.arange(sides) * 2 * np.pi / sides
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1).astype(np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)


def _pattern(img: ndarray, shape: str, colour: tuple[int, ...], cx: int, cy: int, r: int) -> None:
    import numpy as np

    y0, y1, x0, x1 = max(0, cy - r), cy + r, max(0, cx - r), cx + r
    ys, xs = np.mgrid[y0 : min(y1, img.shape[0]), x0 : min(x1, img.shape[1])]
    period = max(2, r // 3)
    if shape == "hstripes":
        mask = (ys // period) % 2 == 0
    elif shape == "vstripes":
        mask = (xs // period) % 2 == 0
    else:
        mask = ((ys // period) + (xs // period)) % 2 == 0
    img[ys[mask], xs[mask]] = colour


def demo_image(
    index: int, rng: Generator, size_scale: float = 1.0, max_side: int | None = None
) -> bytes:
    """One JPEG of class ``index``."""
    import cv2

    w, h = image_size(rng, size_scale, max_side)
    img = background(rng, w, h)
    draw_shape(img, SHAPES[index % len(SHAPES)], class_colour(index, rng), rng)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 96))])
    assert ok  # encoding a plain uint8 BGR array cannot fail
    return buf.tobytes()


def corrupt_file(kind: str, rng: Generator, good: bytes) -> bytes:
    if kind == "truncated":
        return good[: max(10, len(good) * 2 // 5)]
    if kind == "empty":
        return b""
    if kind == "text":
        return b"This is not a JPEG, whatever its name says.\n"
    if kind == "garbage":
        return rng.integers(0, 256, size=2048, dtype="uint8").tobytes()
    return b"annotation file left behind by a labelling tool\n"


# -- files ----------------------------------------------------------------------------------------
def iter_demo(
    *,
    classes: int = 10,
    images_per_class: int | Sequence[int] = (20, 80),
    seed: int = 0,
    size_scale: float = 1.0,
    max_side: int | None = None,
    corrupt: int = 0,
) -> Iterator[tuple[str, list[tuple[str, bytes, bool]]]]:
    """Yield (wnid, [(file name, bytes, is_image)]) per class; the whole dataset follows from the seed."""
    import numpy as np

    counts = class_counts(classes, images_per_class, seed)
    bad_rng = np.random.default_rng([seed, 99991])
    bad_classes = [int(c) for c in bad_rng.integers(0, classes, size=corrupt)]
    for index, count in enumerate(counts):
        rng = np.random.default_rng([seed, index])
        number = int(rng.integers(1, 200))
        files = []
        for _ in range(count):
            files.append(
                (f"{wnid(index)}_{number}.JPEG", demo_image(index, rng, size_scale, max_side), True)
            )
            number += int(rng.integers(1, 60))
        for k, cls in enumerate(bad_classes):
            if cls == index:
                kind = CORRUPT_KINDS[k % len(CORRUPT_KINDS)]
                name = (
                    f"{wnid(index)}_{number}.JPEG"
                    if kind != "not-an-image"
                    else f"{wnid(index)}_notes.txt"
                )
                files.append(
                    (
                        name,
                        corrupt_file(kind, bad_rng, files[0][1] if files else b"\xff\xd8"),
                        False,
                    )
                )
                number += int(rng.integers(1, 60))
        yield wnid(index), files


def _summary(path: Path, per_class: list, corrupt: list, total_bytes: int) -> DemoSummary:
    return DemoSummary(
        path, tuple(per_class), sum(n for _, n in per_class), tuple(corrupt), total_bytes
    )


def _tally(name: str, files: list, per_class: list, bad: list) -> None:
    """Note one class's decodable image count and the relative paths of its broken files."""
    per_class.append((name, sum(1 for f in files if f[2])))
    bad += [f"{name}/{fname}" for fname, _, good in files if not good]


def make_demo_tree(root: str | os.PathLike[str], **options: Any) -> DemoSummary:
    """Write ROOT/<wnid>/<wnid>_<n>.JPEG, the layout extraction produces; options as iter_demo's."""
    root = Path(root)
    _check_empty_dir(root)
    per_class: list[tuple[str, int]] = []
    bad: list[str] = []
    total = 0
    for name, files in iter_demo(**options):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for fname, data, _good in files:
            (folder / fname).write_bytes(data)
            total += len(data)
        _tally(name, files, per_class, bad)
    return _summary(root, per_class, bad, total)


def make_demo_tar(path: str | os.PathLike[str], **options: Any) -> DemoSummary:
    """Write a tar of per-class tars (``<wnid>.tar``), shaped like ImageNet's fall11_whole.tar;
    options as iter_demo's."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"{path} is a folder; give the tar file to write, e.g. {path / 'imagenet_demo.tar'}"
        )
    blocker = blocking_file(path.parent)
    if blocker is not None:
        raise UserError(
            f"{path}: {blocker} is a file, not a folder; choose another path for the tar"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    per_class: list[tuple[str, int]] = []
    bad: list[str] = []
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as outer:
        for name, files in iter_demo(**options):
            inner = _inner_tar(files)
            outer.addfile(_tarinfo(f"{name}.tar", len(inner)), io.BytesIO(inner))
            _tally(name, files, per_class, bad)
    os.replace(tmp, path)
    return _summary(path, per_class, bad, path.stat().st_size)


def _inner_tar(files: list[tuple[str, bytes, bool]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for fname, data, _good in files:
            tar.addfile(_tarinfo(fname, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, TAR_MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _check_empty_dir(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} exists and is not a folder; choose a new folder for the demo tree")
    require_folder_path(root, "the demo tree")
    if root.is_dir() and any(root.iterdir()):
        raise UserError(f"{root} is not empty; choose a new or empty folder for the demo tree")
