"""`pack --device cuda`: decode, resize and re-encode on the GPU with torchvision's nvJPEG codec.

The CPU side only reads files (threads), checks them and frames records; each batch goes to the GPU
as one batched decode and one batched encode. It offers the worker pool's interface (``room``,
``submit``, ``collect``), so the packer writes the same records in the same .lst order with the same
.idx as on the CPU; only the JPEG bytes differ (another codec). Images the GPU codec does not take
(PNG, EXIF-rotated, greyscale or PNG output, a JPEG nvJPEG refuses) go through the CPU path, which
also keeps its judgement of corrupt files.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from engine import recordio
from engine.errors import UserError
from engine.prep import pack_worker
from engine.prep.options import PackOptions
from engine.prep.pack_sniff import ImageInfo, sniff
from engine.prep.pack_worker import Setup

GPU_BATCH = 128  # images per batched decode/encode: enough to fill the codec, small in GPU memory
READ_THREADS = 8
MIN_TORCHVISION = (0, 19)  # the first with batched GPU decode_jpeg and GPU encode_jpeg


@dataclass(frozen=True)
class Codec:
    """torchvision.io's decode_jpeg/encode_jpeg on a device, or a stand-in with the same signatures."""

    torch: Any
    decode_jpeg: Callable  # (list[uint8 CPU tensor], mode=, device=) -> list[CHW uint8 tensor]
    encode_jpeg: Callable  # (list[CHW uint8 tensor], quality=) -> list[uint8 tensor]
    rgb_mode: Any  # torchvision.io.ImageReadMode.RGB
    device: str


def _refuse(why: str) -> UserError:
    return UserError(f"--device cuda: {why}; pack on the CPU (without --device)")


def load_codec(device: str) -> Codec:
    """torchvision's GPU codec on DEVICE, or one line saying what is missing."""
    try:
        import torch
    except ImportError:
        raise _refuse(
            "torch is not installed (pip install torch torchvision, a CUDA build)"
        ) from None
    if not torch.cuda.is_available():
        raise _refuse("no CUDA GPU is visible to torch (torch.cuda.is_available() is False)")
    try:
        import torchvision
        import torchvision.io as tio
    except ImportError:
        raise _refuse("torchvision is not installed (its nvJPEG codec does the work)") from None
    version = tuple(int(p) for p in torchvision.__version__.split("+")[0].split(".")[:2])
    if version < MIN_TORCHVISION:
        raise _refuse(
            f"torchvision {torchvision.__version__} has no GPU JPEG encoder (needs 0.19+)"
        )
    codec = Codec(torch, tio.decode_jpeg, tio.encode_jpeg, tio.ImageReadMode.RGB, device)
    try:
        probe(codec)
    except Exception as exc:  # noqa: BLE001 - a CPU-only torchvision build fails here in many ways
        raise _refuse(f"torchvision's GPU JPEG codec does not work here ({exc})") from None
    return codec


def probe(codec: Codec) -> None:
    """One tiny image through encode and decode on the device: fails where the codec is missing."""
    torch = codec.torch
    img = torch.zeros((3, 16, 16), dtype=torch.uint8, device=codec.device)
    (data,) = codec.encode_jpeg([img], quality=90)
    codec.decode_jpeg([data.cpu()], mode=codec.rgb_mode, device=codec.device)


def gpu_suitable(info: ImageInfo, opts: PackOptions) -> bool:
    """What the GPU path re-encodes: an upright 8-bit JPEG into a colour JPEG."""
    plain = info.format == "jpeg" and info.precision == 8 and info.components in (1, 3)
    return plain and info.orientation == 1 and opts.color == 1 and opts.encoding == ".jpg"


def resize(codec: Codec, img: Any, opts: PackOptions, full: tuple[int, int]) -> Any:
    """im2rec's centre crop and short-edge resize of one CHW image, bilinear like cv2.INTER_LINEAR."""
    height, width = full
    if opts.center_crop:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        img = img[:, top : top + side, left : left + side]
    if not opts.resize or opts.no_upscale and min(height, width) <= opts.resize:
        return img.contiguous()
    w, h = pack_worker.target_size(height, width, opts.resize, opts.center_crop)
    torch = codec.torch
    scaled = torch.nn.functional.interpolate(
        img[None].float(), size=(h, w), mode="bilinear", align_corners=False, antialias=False
    )
    return scaled[0].round_().clamp_(0, 255).to(torch.uint8)


@dataclass
class Entry:
    """One .lst item on its way: the file's bytes and header, or its final result."""

    item: pack_worker.Item
    data: bytes = b""
    info: ImageInfo = ImageInfo()
    result: bytes | str | None = None  # a framed record, a skip reason, or None: needs the GPU


def read_entry(item: pack_worker.Item, setup: Setup) -> Entry:
    """Read and check one item; settle it here unless the GPU has to re-encode it."""
    if item.malformed:
        return Entry(item, result=item.reason)  # the parser wrote the reason
    opts = setup.options
    try:
        data = pack_worker.read_bytes(os.path.join(setup.root, item.path))
    except pack_worker.Skip as exc:
        return Entry(item, result=str(exc))
    info = sniff(data)
    entry = Entry(item, data, info)
    if problem := info.problem or (opts.pass_through and pack_worker.pass_through_problem(info)):
        entry.result = problem
    elif opts.pass_through or pack_worker.can_store_as_is(info, opts):
        entry.result = frame(entry, data, opts)
    elif not gpu_suitable(info, opts):
        entry.result = on_cpu(entry, setup)
    elif problem := target_problem(info, opts):
        entry.result = problem
    return entry


def target_problem(info: ImageInfo, opts: PackOptions) -> str:
    """Why the GPU must not resize this image (a target no JPEG holds, or gigabytes); '' if none."""
    if not opts.resize or opts.no_upscale and min(info.width, info.height) <= opts.resize:
        return ""
    try:
        pack_worker.checked_target(info.height, info.width, opts)
    except pack_worker.Skip as exc:
        return str(exc)
    return ""


def on_cpu(entry: Entry, setup: Setup) -> bytes | str:
    """The CPU worker's answer for one item (OpenCV imported here, once, only when needed)."""
    import cv2
    import numpy as np

    tj = pack_worker.plane_codec(setup.options)  # the bytes the CPU workers would write
    return pack_worker.encode_item(cv2, np, entry.item, setup, tj, entry.data)


def frame(entry: Entry, payload: bytes, opts: PackOptions) -> bytes | str:
    """The framed record, or the reason it cannot be one (over RecordIO's size limit)."""
    header = pack_worker.make_header(entry.item, opts.pack_label)
    try:
        return recordio.frame(recordio.pack(header, payload))
    except recordio.RecordIOError as exc:
        return str(exc)


def decode_all(codec: Codec, entries: list[Entry]) -> list:
    """Batched decode; when the batch fails, one by one, None for each image the GPU refuses."""
    torch = codec.torch
    tensors = [torch.frombuffer(bytearray(e.data), dtype=torch.uint8) for e in entries]
    try:
        return list(codec.decode_jpeg(tensors, mode=codec.rgb_mode, device=codec.device))
    except Exception:  # noqa: BLE001 - one bad image fails the batch; find it alone
        return [decode_one(codec, t) for t in tensors]


def decode_one(codec: Codec, tensor: Any) -> Any:
    try:
        (img,) = codec.decode_jpeg([tensor], mode=codec.rgb_mode, device=codec.device)
    except Exception:  # noqa: BLE001 - the CPU path decides what is wrong with it
        return None
    return img


def run_on_gpu(codec: Codec, entries: list[Entry], setup: Setup) -> None:
    """Fill in the result of every entry that still needs one: decode, resize, encode in batches."""
    opts = setup.options
    todo = [e for e in entries if e.result is None]
    if not todo:
        return
    decoded = decode_all(codec, todo)
    for entry, img in zip(todo, decoded):
        if img is None:
            entry.result = on_cpu(entry, setup)
    ready = [(e, img) for e, img in zip(todo, decoded) if img is not None]
    if not ready:
        return
    images = [resize(codec, img, opts, (e.info.height, e.info.width)) for e, img in ready]
    encoded = codec.encode_jpeg(images, quality=opts.quality)
    for (entry, _), data in zip(ready, encoded):
        entry.result = frame(entry, data.cpu().numpy().tobytes(), opts)


class GpuPool:
    """The worker pool's interface over one GPU: batches are read ahead by threads, coded together."""

    def __init__(self, setup: Setup, codec: Codec, depth: int = 2) -> None:
        self.setup, self.codec = setup, codec
        self.readers = ThreadPoolExecutor(READ_THREADS)
        self.pending: collections.deque[tuple[Any, list[Future]]] = collections.deque()
        self.limit = depth * GPU_BATCH  # images read ahead while the GPU works

    def room(self, unsent: int) -> int:
        """One more batch while fewer than ``limit`` images are read ahead (one GPU: no tail to even out)."""
        return 1 if sum(len(f) for _, f in self.pending) < self.limit else 0

    def submit(self, key: Any, items: list) -> None:
        futures = [self.readers.submit(read_entry, item, self.setup) for item in items]
        self.pending.append((key, futures))

    def busy(self) -> bool:
        return bool(self.pending)

    def collect(self) -> Iterator[tuple[Any, list]]:
        """Code the oldest batches (up to GPU_BATCH images) together; yield (key, results) for each."""
        batches: list[tuple[Any, list[Entry]]]
        batches, count = [], 0
        while self.pending and (not batches or count + len(self.pending[0][1]) <= GPU_BATCH):
            key, futures = self.pending.popleft()
            batches.append((key, [f.result() for f in futures]))
            count += len(futures)
        run_on_gpu(self.codec, [e for _, entries in batches for e in entries], self.setup)
        for key, entries in batches:
            yield key, [e.result for e in entries]

    def close(self) -> None:
        self.readers.shutdown(cancel_futures=True)
