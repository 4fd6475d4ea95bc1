"""The preparation stages' options (filter, split, list, pack): one dataclass per stage, one field per option.

The dataclass defaults are the commands' (im2rec's for list and pack); ``TUTORIAL`` holds the values a
new workspace starts with, as instances of the same dataclasses, so a value may differ but a field is
never declared twice. Building an instance checks every bound (engine.options).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine import options as opt
from engine.errors import UserError

MAX_EDGE = 1 << 15  # pixels: a short edge above this is a typo, not an image size
CODECS = ("auto", "opencv")
MAX_CHUNKS = 4096  # .lst files one list run writes; more are also refused beyond the image count


def ext_list(value: Any) -> list[str]:
    """'.jpg,.png', '.jpg .png' or a list -> ['.jpg', '.png'] (workspace.toml stores either)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    exts = " ".join(map(str, items)).replace(",", " ").split()
    if not exts or any(not e.startswith(".") for e in exts):
        raise UserError(
            f"--exts {' '.join(exts)}: give extensions with a leading dot, e.g. .jpg .jpeg .png"
        )
    return exts


@dataclass(frozen=True)
class DiskOptions:
    """What the disk stage asks of the file systems before the stages write anything."""

    margin: float = opt.option(
        1.05,
        "ask for this many times the estimated space: estimates are estimates",
        low=1.0,
        high=10.0,
    )

    def __post_init__(self) -> None:
        opt.check(self)


@dataclass(frozen=True)
class FilterOptions:
    min_images: int = opt.option(500, "classes with fewer images move aside", low=0)

    def __post_init__(self) -> None:
        opt.check(self)


@dataclass(frozen=True)
class SplitOptions:
    val_per_class: int = opt.option(
        50, "validation images per class", flags=("--per-class",), low=1
    )
    seed: int = opt.option(0, "seed of the random choice")

    def __post_init__(self) -> None:
        opt.check(self)


@dataclass(frozen=True)
class ListOptions:
    """`im2rec.py --list`'s options."""

    recursive: bool = opt.option(
        False, "walk subfolders; each folder gets its own label", console=False
    )
    chunks: int = opt.option(
        1, "number of .lst chunks (PREFIX_0.lst …)", low=1, high=MAX_CHUNKS, metavar="N"
    )
    train_ratio: float = opt.option(
        1.0, "share of images for PREFIX_train.lst", low=0.0, high=1.0, console=False
    )
    test_ratio: float = opt.option(
        0.0, "share of images for PREFIX_test.lst", low=0.0, high=1.0, console=False
    )
    shuffle: bool = opt.option(
        True, "keep walk order (no seeded shuffle)", negate="--no-shuffle", console=False
    )
    exts: list[str] = opt.option(
        [".jpeg", ".jpg", ".png"], "image extensions (any case)", nargs="+", parse=ext_list
    )

    def __post_init__(self) -> None:
        opt.check(self)
        ext_list(self.exts)
        if self.train_ratio + self.test_ratio > 1.0:
            raise UserError(
                f"--train-ratio {self.train_ratio} --test-ratio {self.test_ratio}: "
                "each in 0..1, summing to at most 1"
            )


@dataclass(frozen=True)
class PackOptions:
    """im2rec's record options, plus ``no_upscale`` (store small JPEGs as they are) and
    ``reduced_decode`` (decode large JPEGs at a DCT scale that still covers the target; turn off for
    output byte-identical to im2rec: OpenCV at full size) and ``codec`` ("auto": libjpeg-turbo's YUV
    planes where libturbojpeg is installed, else OpenCV; "opencv": OpenCV's BGR path) and ``device``
    ("cuda" or "cuda:N": torchvision's nvJPEG codec on that GPU, see pack_gpu)."""

    resize: int = opt.option(
        0,
        "resize the short edge to this many pixels, 0 keeps sizes (im2rec enlarges smaller images too)",
        low=0,
        high=MAX_EDGE,
    )
    center_crop: bool = opt.option(False, "crop the centre square first", console=False)
    quality: int = opt.option(95, "JPEG quality 1-100, or PNG compression 0-9", low=0, high=100)
    encoding: str = opt.option(".jpg", ".jpg or .png", choices=(".jpg", ".png"), console=False)
    color: int = opt.option(
        1, "1 colour, 0 greyscale, -1 unchanged (with alpha)", choices=(-1, 0, 1), console=False
    )
    pass_through: bool = opt.option(
        False, "store the files as they are (checked, not decoded)", console=False
    )
    pack_label: bool = opt.option(False, "store every label of multi-label lines", console=False)
    num_thread: int = opt.option(
        opt.CORES,
        "worker processes (default: all cores)",
        low=1,
        high=opt.PROCESS_CAP,
        high_why=opt.PROCESS_WHY,
    )
    no_upscale: bool = opt.option(
        False,
        "store JPEGs whose short edge is already at or below --resize as they are (no re-encoding)",
        console=False,
    )
    reduced_decode: bool = opt.option(
        True,
        "decode with OpenCV at full size like im2rec: byte-identical records, slower",
        negate="--no-reduced-decode",
        console=False,
    )
    codec: str = opt.option(
        "auto",
        "auto: libjpeg-turbo's YUV planes where libturbojpeg is installed (fastest); "
        "opencv: OpenCV's BGR path",
        choices=CODECS,
        console=False,
    )
    device: str = opt.option(
        "cpu",
        "cpu, or cuda / cuda:N: decode, resize and encode on that GPU (torchvision nvJPEG)",
        console=False,
    )

    def __post_init__(self) -> None:
        opt.check(self)
        low, high = (1, 100) if self.encoding == ".jpg" else (0, 9)
        if not low <= self.quality <= high:
            raise UserError(f"--quality {self.quality}: {self.encoding} takes {low}..{high}")
        if self.device != "cpu" and self.device.split(":")[0] != "cuda":
            raise UserError(f"--device {self.device}: use cpu, cuda or cuda:N")

    def record_options(self) -> dict:
        """The options that decide the output bytes (not how many processes make them)."""
        opts = dataclasses.asdict(self)
        del opts["num_thread"]
        return opts


# What a new workspace starts with: the tutorial's values (the demo scales them down further).
TUTORIAL: dict[str, Any] = {
    "disk": DiskOptions(),
    "filter": FilterOptions(),
    "split": SplitOptions(seed=1),
    "list": ListOptions(chunks=8),
    "pack": PackOptions(resize=480, quality=90, num_thread=min(2, opt.PROCESS_CAP)),
}
GROUPS: dict[str, type] = {stage: type(value) for stage, value in TUTORIAL.items()}


def workspace_defaults() -> dict[str, dict[str, Any]]:
    """The stage options workspace.toml may hold, with a new workspace's values."""
    return {stage: console_values(value) for stage, value in TUTORIAL.items()}


def console_values(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f, s in opt.fields(obj) if s.console}


def stage_options(stage: str, values: dict[str, Any]) -> Any:
    """A stage's options from workspace values: the tutorial's, overridden by what is given
    (typed and checked; a key no option declares is refused by name)."""
    return opt.build(GROUPS[stage], values, base=TUTORIAL[stage])


def demo_overrides(values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The demo's values, checked against the fields (a demo may change values, never add options)."""
    for stage, given in values.items():
        unknown = set(given) - set(console_values(TUTORIAL[stage]))
        if unknown:
            raise ValueError(f"demo option {stage}.{sorted(unknown)[0]} is not a {stage} option")
        stage_options(stage, given)
    return values
