"""Training input for the torch engine: .rec/.idx sharded by rank, decoded on the GPU or by CPU workers.

Works without mxnet and with numpy 1 or 2. CPU path: DataLoader worker processes read records and
decode with OpenCV (at 1/2, 1/4 or 1/8 scale when the crop allows it, which libjpeg does almost for
free), crop, flip and hand back uint8 NHWC batches. GPU path (CUDA + torchvision): workers only read
bytes; a prefetch thread decodes whole batches with nvJPEG and crops/resizes on the GPU.
Either way a background thread keeps the next batches on the device, normalised, before they are asked for.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import shutil
import stat
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import recordio
from engine.errors import UserError
from engine.train.recfiles import IMAGE_MAGICS, rec_files

if TYPE_CHECKING:  # torch is imported lazily: loader workers start without it until they need it
    import torch

# Per-channel mean/std in 0..255 RGB, as train_imagenet.py's --rgb-mean/--rgb-std defaults.
RGB_MEAN = (123.68, 116.779, 103.939)
RGB_STD = (58.393, 57.12, 57.375)
_REDUCED: dict[int, int] = {2: 17, 4: 33, 8: 65}  # cv2.IMREAD_REDUCED_COLOR_N; 1 is IMREAD_COLOR


# ---------------------------------------------------------------- RecordIO (through engine/recordio.py)


def read_offsets(idx_path: str) -> np.ndarray:
    """Offsets of the records a .idx lists, in file order; a bad .idx is a UserError naming its line."""
    try:
        pairs = recordio.read_index(idx_path)
    except OSError as exc:
        raise UserError(
            f"{idx_path}: cannot read the index ({exc.strerror}); pack the .rec with its .idx"
        ) from None
    except recordio.RecordIOError as exc:
        raise UserError(f"{exc}; re-pack this .rec/.idx") from None
    return np.asarray([offset for _, offset in pairs], dtype=np.int64)


def unpack_image_record(record: bytes) -> tuple[float, bytes]:
    """The class label (the first one of a label array) and the encoded image of an image record."""
    header, body = recordio.unpack(record)
    label = header.label if header.flag == 0 else header.label[0]
    return float(label), body


def _warn_strays(path: str, flag: str) -> None:

    if os.path.isdir(path):
        stray = sorted(n for n in os.listdir(path) if not n.endswith((".rec", ".idx")))
        if stray:
            logging.getLogger("imgscale.train").warning(
                "%s %s: ignoring %d file(s) that are neither .rec nor .idx: %s",
                flag,
                path,
                len(stray),
                ", ".join(stray[:5]) + (" …" if len(stray) > 5 else ""),
            )


@dataclass(frozen=True)
class RecordIndex:
    """Every record of one or more .rec chunks: which file and at what offset."""

    files: tuple[str, ...]
    file_of: np.ndarray  # int32 file number per record
    offsets: np.ndarray  # int64 byte offset per record

    def __len__(self) -> int:
        return len(self.offsets)


def open_index(path: str, flag: str = "--data-train") -> RecordIndex:
    """The records of a .rec file or of a directory of .rec chunks, each read through its .idx."""
    files = rec_files(
        path, flag, warn=lambda _msg: None
    )  # its .idx files are expected here: warn ourselves
    _warn_strays(path, flag)
    per_file = []
    for rec in files:
        idx = os.path.splitext(rec)[0] + ".idx"
        if not os.path.isfile(idx):
            raise UserError(
                f"{flag} {rec}: no {os.path.basename(idx)} beside it; the torch engine reads by index"
            )
        per_file.append(read_offsets(idx))
    if not sum(len(o) for o in per_file):
        raise UserError(f"{flag} {path}: the index lists no records")
    file_of = np.concatenate([np.full(len(o), i, dtype=np.int32) for i, o in enumerate(per_file)])
    return RecordIndex(tuple(files), file_of, np.concatenate(per_file))


# ---------------------------------------------------------------- augmentation (pure)


def jpeg_size(buf: bytes | np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a JPEG's SOF marker without decoding; None if not a JPEG we understand."""
    data = bytes(buf[:65536])
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return (h, w) if h and w else None
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


@dataclass(frozen=True)
class Augment:
    """What each image goes through, named after ImageRecordIter's options (see ``augment_from_args``).

    mode "resized": random area and aspect ratio, resized to ``size`` (--random-resized-crop 1);
    "scale": the image scaled by a random factor in [min_scale, max_scale], then a random
    ``size`` crop (--random-crop 1, MXNet's default); "centre": the centred square of
    ``centre_fraction`` of the short edge, resized (validation).
    """

    size: int = 224
    mode: str = "resized"
    min_area: float = 0.08
    max_area: float = 1.0
    min_aspect: float = 3 / 4
    max_aspect: float = 4 / 3
    min_scale: float = 1.0
    max_scale: float = 1.0
    mirror: bool = True
    centre_fraction: float = 0.875

    @property
    def train(self) -> bool:
        return self.mode != "centre"


def random_box(h: int, w: int, aug: Augment, rng: np.random.Generator) -> tuple[float, ...]:
    """A crop box (top, left, height, width) as fractions of the image, per ``aug.mode``."""
    if aug.mode == "scale":
        return scaled_box(h, w, aug, rng)
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(aug.min_area, aug.max_area)
        aspect = math.exp(rng.uniform(math.log(aug.min_aspect), math.log(aug.max_aspect)))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            return top / h, left / w, ch / h, cw / w
    return centre_box(h, w, 1.0)  # all tries failed (extreme aspect): the whole image


def scaled_box(h: int, w: int, aug: Augment, rng: np.random.Generator) -> tuple[float, ...]:
    """A ``size`` square of the image scaled by a random factor: side size/scale original pixels."""
    side = min(aug.size / rng.uniform(aug.min_scale, aug.max_scale), h, w)
    top, left = rng.uniform(0, h - side), rng.uniform(0, w - side)
    return top / h, left / w, side / h, side / w


def centre_box(h: int, w: int, fraction: float) -> tuple[float, ...]:
    """The centred square crop of side ``fraction`` x short edge, as fractions of the image."""
    side = min(h, w) * fraction
    return (h - side) / 2 / h, (w - side) / 2 / w, side / h, side / w


def reduction(h: int, w: int, box: tuple[float, ...], size: int) -> int:
    """The largest JPEG decode scale-down (1, 2, 4, 8) that keeps the crop at least ``size`` pixels."""
    crop_short = min(box[2] * h, box[3] * w)
    r = 1
    while r < 8 and crop_short / (r * 2) >= size:
        r *= 2
    return r


def pick_box(
    shape: tuple[int, int] | None, aug: Augment, rng: np.random.Generator
) -> tuple[tuple[float, ...], int]:
    """Box and decode reduction for one image of (h, w) ``shape`` (None: unknown size, decode full)."""
    h, w = shape if shape else (aug.size, aug.size)
    box = random_box(h, w, aug, rng) if aug.train else centre_box(h, w, aug.centre_fraction)
    return box, (reduction(h, w, box, aug.size) if shape else 1)


def crop_pixels(img_h: int, img_w: int, box: tuple[float, ...]) -> tuple[int, int, int, int]:
    """The box in pixels of a decoded image (its size may differ from the header's by rounding)."""
    top, left = int(box[0] * img_h), int(box[1] * img_w)
    ch, cw = max(1, round(box[2] * img_h)), max(1, round(box[3] * img_w))
    return top, left, min(ch, img_h - top), min(cw, img_w - left)


# ---------------------------------------------------------------- dataset and sampler


class ShardedBatches:
    """Batches of record positions for one rank; reshuffled each epoch from (seed, epoch).

    Training: every rank gets the same number of full batches (the remainder is dropped) so that
    DDP's collective calls line up; a rank that ran out early would hang the others.
    """

    def __init__(
        self,
        count: int,
        batch_size: int,
        rank: int = 0,
        world: int = 1,
        train: bool = True,
        seed: int = 0,
    ) -> None:
        self.count, self.batch_size = count, batch_size
        self.rank, self.world, self.train, self.seed = rank, world, train, seed
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch's order; skip ``start_batch`` batches when resuming mid-epoch."""
        self.epoch, self.start_batch = epoch, start_batch

    def shard(self) -> np.ndarray:
        if not self.train:
            return np.arange(self.count)[self.rank :: self.world]
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.count)
        per_rank = self.count // self.world
        return order[self.rank :: self.world][:per_rank]

    def __len__(self) -> int:
        n = len(self.shard()) if not self.train else self.count // self.world
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        mine = self.shard()
        for b in range(self.start_batch, len(self)):
            yield self.epoch, b, mine[b * self.batch_size : (b + 1) * self.batch_size]


class RecordBatchDataset:
    """Turns (epoch, batch number, positions) into a decoded batch; runs inside loader workers.

    ``raw=True`` (GPU decoding) returns the encoded bytes and crop boxes instead of pixels.
    """

    def __init__(
        self, index: RecordIndex, aug: Augment, rank: int = 0, seed: int = 0, raw: bool = False
    ) -> None:
        self.index, self.aug = index, aug
        self.rank, self.seed, self.raw = rank, seed, raw
        self._readers: dict = {}  # opened lazily so each worker process has its own files

    def _read(self, position: int) -> tuple[float, bytes]:

        file_no, offset = int(self.index.file_of[position]), int(self.index.offsets[position])
        reader = self._readers.get(file_no)
        if reader is None:
            reader = self._readers[file_no] = recordio.RecordReader(self.index.files[file_no])
        reader.seek(offset)
        record = reader.read()
        if record is None:
            raise recordio.RecordIOError(f"{reader.path}: offset {offset} is past the end")
        return unpack_image_record(record)

    def __getitem__(self, item: tuple[int, int, np.ndarray]) -> ReadFailure | tuple:
        import torch

        epoch, batch_no, positions = item
        rng = np.random.default_rng([self.seed, epoch, self.rank, batch_no])
        try:
            records = [self._read(p) for p in positions]
        except (recordio.RecordIOError, OSError) as exc:
            # Handed back as data: raised in a worker it would reach the user as a wrapped traceback.
            return ReadFailure(str(exc))
        labels = torch.tensor([r[0] for r in records], dtype=torch.int64)
        plans = [pick_box(jpeg_size(buf), self.aug, rng) for _, buf in records]
        flips = (rng.random(len(records)) < 0.5) & self.aug.train & self.aug.mirror
        if self.raw:
            blobs = _pack_blobs([buf for _, buf in records])
            return blobs, [p[0] for p in plans], flips, labels, positions
        # Tensors (not numpy arrays) travel from worker processes through shared memory, not a pipe.
        out = torch.empty((len(records), self.aug.size, self.aug.size, 3), dtype=torch.uint8)
        pixels, bad, first_bad = out.numpy(), 0, -1
        for i, ((_, buf), (box, r)) in enumerate(zip(records, plans, strict=True)):
            if not decode_into(pixels[i], buf, box, r, bool(flips[i])):
                bad += 1
                first_bad = int(positions[i]) if first_bad < 0 else first_bad
        return out, labels, bad, first_bad


@dataclass(frozen=True)
class ReadFailure:
    """A worker could not read a record (damaged file, or an .idx that does not match its .rec)."""

    message: str


def _pack_blobs(blobs: Sequence[bytes]) -> tuple:
    """Encoded images as one uint8 tensor plus end offsets: one shared-memory block per batch."""
    import torch

    ends = np.cumsum([len(b) for b in blobs])
    flat = torch.empty(int(ends[-1]) if len(ends) else 0, dtype=torch.uint8)
    view, start = flat.numpy(), 0
    for blob, end in zip(blobs, ends, strict=True):
        view[start:end] = np.frombuffer(blob, dtype=np.uint8)
        start = end
    return flat, ends


def decode_into(out: np.ndarray, buf: bytes, box: tuple[float, ...], r: int, flip: bool) -> bool:
    """Decode, crop, resize and flip one image into ``out`` (RGB); False and black if it is corrupt."""
    import cv2

    flags = _REDUCED[r] if r > 1 else cv2.IMREAD_COLOR
    img = None
    # Only the formats MXNet's reader (and `check`) decode: OpenCV 4.11+ also reads GIF, which
    # would make the same .rec train in one engine and stop the other.
    if bytes(buf[:16]).startswith(IMAGE_MAGICS):
        try:
            img = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), flags)
        except cv2.error:  # a cut payload: OpenCV may assert instead of returning None
            img = None
    if img is None or img.ndim != 3:
        out[:] = 0
        return False
    top, left, ch, cw = crop_pixels(img.shape[0], img.shape[1], box)
    crop = img[top : top + ch, left : left + cw]
    size = out.shape[0]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
    # One strided copy turns BGR into RGB and, when asked, mirrors left-right.
    out[:] = crop[:, ::-1, ::-1] if flip else crop[:, :, ::-1]
    return True


def _collate_identity(batch: Any) -> Any:
    return batch


def _worker_init(_worker_id: int) -> None:
    import cv2
    import torch

    # Each worker is one decoding thread: the user's --data-nthreads is the number of workers.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    use_loader_temp_dir(os.getppid())


LOADER_TEMP_PREFIX = "imgscale-loader-"
# A Unix socket's path holds 107 bytes; multiprocessing adds /pymp-XXXXXXXX/listener-XXXXXXXX.
SOCKET_PATH_MAX, SOCKET_IN_FOLDER = 107, 32


def loader_temp_dir(trainer_pid: int) -> str:
    return os.path.join(tempfile.gettempdir(), f"{LOADER_TEMP_PREFIX}{trainer_pid}")


def use_loader_temp_dir(trainer_pid: int) -> None:
    """Put this worker's multiprocessing temp folder (a pymp-* one, made to pass batches by file
    descriptor) inside the trainer's own folder: a worker killed with SIGKILL cannot remove it, and
    the next loader on this host removes the folders of trainers that are gone."""
    folder = loader_temp_dir(trainer_pid)
    if len(os.fsencode(folder)) + SOCKET_IN_FOLDER > SOCKET_PATH_MAX:
        return  # its sockets could not be made there, and the loader would wait for ever
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
        st = os.lstat(folder)
    except OSError:
        return  # an unwritable temp folder: multiprocessing's default place, as before
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
        tempfile.tempdir = folder  # only a real folder of ours: another user's could read the data


def remove_stale_loader_temp_dirs() -> None:
    """Remove the loader folders of trainers no longer running (killed runs leave them behind)."""
    base = tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        pid = name.removeprefix(LOADER_TEMP_PREFIX)
        if pid == name or not pid.isdigit() or _running(int(pid)):
            continue
        path = os.path.join(base, name)
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
                shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


# ---------------------------------------------------------------- the loader the trainer iterates


@dataclass
class Batch:
    """One batch on the training device: float NCHW (channels-last memory) and int64 labels."""

    data: torch.Tensor
    label: torch.Tensor
    corrupt: int = 0
    corrupt_at: str = ""  # where the first image that did not decode is: file and offset


class RecordLoader:
    """Iterates normalised batches of one rank's shard of the records, prefetched on a thread.

    ``num_classes`` guards the labels: a label outside the network's classes is a UserError naming
    the data, not a device-side assert deep inside the loss.
    """

    def __init__(
        self,
        index: RecordIndex,
        batch_size: int,
        aug: Augment,
        *,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        threads: int = 4,
        device: str | torch.device = "cpu",
        prefetch: int = 3,
        gpu_decode: bool | None = None,
        mean: Sequence[float] = RGB_MEAN,
        std: Sequence[float] = RGB_STD,
        num_classes: int | None = None,
    ) -> None:
        import torch

        self.index, self.batch_size, self.aug = index, batch_size, aug
        self.device = torch.device(device)
        self.gpu_decode = gpu_decode_available(self.device) if gpu_decode is None else gpu_decode
        self.sampler = ShardedBatches(len(index), batch_size, rank, world, aug.train, seed)
        self.dataset = RecordBatchDataset(index, aug, rank, seed, raw=self.gpu_decode)
        self.threads, self.prefetch, self.num_classes = threads, prefetch, num_classes
        self._loader = self._make_loader()
        std_t = torch.tensor([float(v) for v in std], device=self.device).view(1, -1, 1, 1)
        self._scale = 1.0 / std_t
        self._shift = (
            -torch.tensor([float(v) for v in mean], device=self.device).view(1, -1, 1, 1)
            * self._scale
        )

    def _make_loader(self) -> Iterable[Any]:
        import torch.utils.data as tud

        pin = self.device.type == "cuda" and not self.gpu_decode
        kwargs: dict[str, Any] = {
            "batch_size": None,
            "sampler": self.sampler,
            "collate_fn": _collate_identity,
            "num_workers": self.threads,
            "pin_memory": pin,
        }
        if self.threads > 0:
            remove_stale_loader_temp_dirs()
            # Spawned, not forked: a fork of a process that already runs OpenMP/OpenCV thread pools
            # (torch, mxnet, cv2 all do) can deadlock in the child's first set_num_threads.
            kwargs.update(
                worker_init_fn=_worker_init,
                persistent_workers=True,
                prefetch_factor=2,
                multiprocessing_context="spawn",
            )
        # torch's stub asks for a Dataset subclass; any object with __getitem__ is a map-style dataset
        return tud.DataLoader(self.dataset, **kwargs)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def num_records(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)

    def __iter__(self) -> Iterator[Batch]:
        return _prefetch(map(self._to_device, iter(self._loader)), self.prefetch, self.device)

    def _to_device(self, item: ReadFailure | tuple) -> Batch:
        if isinstance(item, ReadFailure):
            raise UserError(f"{item.message}; re-pack it if its .idx does not belong to it")
        self._check_labels(item[3] if self.gpu_decode else item[1])
        if self.gpu_decode:
            return self._gpu_batch(*item)
        pixels, labels, bad, first_bad = item
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        where = self.place(first_bad) if bad else ""
        return Batch(self._normalise(x), labels.to(self.device, non_blocking=True), bad, where)

    def place(self, position: int) -> str:
        """A record's file and offset, as a person looks for it."""
        file_no = int(self.index.file_of[position])
        return f"{self.index.files[file_no]} (offset {int(self.index.offsets[position])})"

    def _check_labels(self, labels: torch.Tensor) -> None:

        if len(labels) and (
            int(labels.min()) < 0 or (self.num_classes and int(labels.max()) >= self.num_classes)
        ):
            bad = int(labels.max()) if int(labels.min()) >= 0 else int(labels.min())
            raise UserError(
                f"{', '.join(self.index.files)}: label {bad} is outside 0..{(self.num_classes or 0) - 1}; "
                "set --num-classes to the number of classes in the label map"
            )

    def _normalise(self, x_nchw: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std in float32; NHWC storage is kept, which is channels-last for the net."""
        import torch

        x = x_nchw.to(torch.float32).mul_(self._scale).add_(self._shift)
        return x.contiguous(memory_format=torch.channels_last)

    def _gpu_batch(
        self,
        packed: tuple[torch.Tensor, np.ndarray],
        boxes: list[tuple[float, ...]],
        flips: np.ndarray,
        labels: torch.Tensor,
        positions: np.ndarray,
    ) -> Batch:
        import torch
        import torch.nn.functional as F

        size, out = self.aug.size, []
        images, corrupt = _decode_on_gpu(packed, self.device)
        for img, box, flip in zip(images, boxes, flips, strict=True):
            top, left, ch, cw = crop_pixels(img.shape[1], img.shape[2], box)
            crop = img[:, top : top + ch, left : left + cw].unsqueeze(0).float()
            crop = F.interpolate(
                crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
            out.append(crop.flip(3) if flip else crop)
        x = torch.cat(out).clamp_(0, 255)
        # nvJPEG decodes the batch as one: the batch's first record names its file
        where = self.place(int(positions[0])) if corrupt else ""
        return Batch(self._normalise(x), labels.to(self.device, non_blocking=True), corrupt, where)


def _nvjpeg() -> tuple[Callable[..., Any], Any]:
    """torchvision's decode_jpeg and its RGB mode (optional: torchvision is not a dependency)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg, ImageReadMode.RGB


def _decode_on_gpu(
    packed: tuple[torch.Tensor, np.ndarray], device: torch.device
) -> tuple[list, int]:
    """nvJPEG batch decode (RGB), and how many images were corrupt.

    An image nvJPEG refuses (CMYK, PNG, damaged …) is decoded by OpenCV; one that neither decodes
    is corrupt: a small black image, counted, as the CPU path counts it.
    """
    decode_jpeg, rgb = _nvjpeg()
    flat, ends = packed
    blobs = [flat[s:e] for s, e in zip([0, *ends[:-1]], ends, strict=True)]
    try:
        return list(decode_jpeg(blobs, mode=rgb, device=device)), 0
    except (RuntimeError, TypeError):  # one refused image fails the batch (or no batch decoding)
        pass
    images, corrupt = [], 0
    for blob in blobs:
        try:
            images.append(decode_jpeg(blob, mode=rgb, device=device))
            continue
        except RuntimeError:
            img = _cv2_chw(blob.numpy())
        corrupt += img is None
        images.append((_black_chw() if img is None else img).to(device))
    return images, corrupt


def _cv2_chw(buf: np.ndarray) -> torch.Tensor | None:
    """OpenCV decode to an RGB CHW uint8 tensor; None when the image is corrupt."""
    import cv2
    import torch

    if not bytes(buf[:16]).startswith(IMAGE_MAGICS):  # as decode_into: MXNet's formats only
        return None
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error:  # an empty payload
        return None
    if img is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)))


def _black_chw() -> torch.Tensor:
    import torch

    return torch.zeros((3, 8, 8), dtype=torch.uint8)


def gpu_decode_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401  (optional: not a dependency)
    except Exception:  # noqa: BLE001 - torchvision missing, or built for another torch
        return False
    return True


_DONE = object()


def _prefetch(items: Iterator, depth: int, device: torch.device) -> Iterator:
    """Run ``items`` on a background thread, ``depth`` ahead, on its own CUDA stream if any."""
    import torch

    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def offer(item: object) -> bool:
        """Queue ``item`` unless the consumer has gone; never block on a full queue after that."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # a new thread starts on GPU 0 whatever its rank drives
        try:
            with torch.cuda.stream(stream) if stream else contextlib.nullcontext():
                for item in items:
                    if stream is not None:
                        item.ready = torch.cuda.Event()
                        item.ready.record(stream)
                    if not offer(item):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            offer(exc)
            return
        offer(_DONE)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            if stream is not None:
                torch.cuda.current_stream(device).wait_event(item.ready)
                item.data.record_stream(torch.cuda.current_stream(device))
                item.label.record_stream(torch.cuda.current_stream(device))
            yield item
    finally:
        stop.set()
        # Wait for the producer (at most one batch): a new epoch must not share the loader with it.
        thread.join()
