"""A pack worker process: reads images, resizes and re-encodes them, returns framed RecordIO records.

Run as ``python -m engine.prep.pack_worker``: tasks arrive on stdin and results leave on the
original stdout as length-prefixed pickles (multiprocessing.connection framing). No framework is
imported; only OpenCV and numpy. The process ends when its stdin closes, so it never outlives the
packer, even one killed with SIGKILL.
"""

from __future__ import annotations

import errno
import os
import pickle
import queue
import stat
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from engine import recordio
from engine.prep import turbojpeg
from engine.prep.options import PackOptions
from engine.prep.pack_sniff import HUFFMAN_FRAMES, ImageInfo, sniff

if TYPE_CHECKING:  # numpy is imported lazily: only worker processes load it
    from multiprocessing.connection import Connection

    from numpy import ndarray

MAX_PIXELS = 1 << 28  # ~268 Mpixel: above this a full decode (or a resize's output) needs gigabytes
JPEG_MAX_SIDE = 65535  # the frame header's 16-bit width and height
# --pass-through: every training read decodes the stored file whole. 128 Mpixel (384 MiB per read)
# still takes a 108-Mpixel phone photo (12000x9000); a 16000x16000 image (768 MiB) is refused.
PASS_THROUGH_MAX_PIXELS = 1 << 27
# What libjpeg warns when the image data runs out before the last block: the rest comes out grey.
SHORT_DATA_WARNING = "premature end"
REDUCE_FACTORS = (8, 4, 2)  # libjpeg can decode at 1/8, 1/4 and 1/2 scale in the DCT domain
AS_IS_COMPONENTS = (1, 3)  # greyscale or YCbCr: what every JPEG decoder reads


@dataclass(frozen=True)
class Setup:
    """What every worker is told once: where the .lst paths start and the record options."""

    root: str
    options: PackOptions


class Skip(Exception):
    """This image cannot be packed; the message is the reason written to the report."""


class DecoderLog:
    """libjpeg's warnings during OpenCV's decodes, which OpenCV prints to stderr and does not return.

    A worker process points its stderr at a private file (``capture``); after each decode the new
    text is read and the file emptied. Not captured (in the packer's own process): no judgement.
    """

    def __init__(self) -> None:
        self.fd: int | None = None

    def capture(self) -> None:
        log = tempfile.TemporaryFile()  # noqa: SIM115 - fd 2 holds it for the process's life
        os.dup2(log.fileno(), 2)
        log.close()
        self.fd = 2

    def short_data(self) -> str:
        """libjpeg's warning if the last decode's image data ended early ('' otherwise)."""
        if self.fd is None or not (end := os.lseek(self.fd, 0, os.SEEK_END)):
            return ""
        text = os.pread(self.fd, end, 0).decode(errors="replace")
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        lines = [line for line in text.splitlines() if SHORT_DATA_WARNING in line.lower()]
        return lines[0].strip() if lines else ""


DECODER_LOG = DecoderLog()


def short_data_skip(warning: str) -> Skip:
    detail = warning.removeprefix("Corrupt JPEG data: ")
    return Skip(
        f"corrupt JPEG: its image data ends early, the rest would be grey (libjpeg: {detail})"
    )


def read_bytes(path: str) -> bytes:
    """The whole file; a reason to skip it if it is missing, not a regular file or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the worker
    except FileNotFoundError:
        dangling = os.path.islink(path)
        raise Skip(
            "dangling symlink (target missing)" if dangling else "missing: no such file"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Skip("symlink loop") from None
        raise Skip(f"unreadable: {exc.strerror or exc}") from None
    try:
        _check_regular(os.fstat(fd))
        with open(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as exc:
        raise Skip(f"unreadable: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _check_regular(st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise Skip("not a file: the path is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise Skip("not a regular file (a FIFO, socket or device)")
    if st.st_size > recordio.MAX_RECORD_BYTES:
        raise Skip(f"file of {st.st_size} bytes is over RecordIO's 512 MiB record limit")


@dataclass(frozen=True, slots=True)
class Item:
    """One .lst line to pack: its line number, record id, image path (under ROOT) and labels.

    A line that cannot be packed (too few fields, a label that is not a finite number) keeps only
    its line number and ``reason``: it is reported as skipped and never read."""

    line: int
    id: int = 0
    path: str = ""
    labels: tuple[float, ...] = ()
    reason: str = ""

    @property
    def malformed(self) -> bool:
        return bool(self.reason)

    def __reduce__(self) -> tuple:
        # Batches of items are pickled to the workers: pickled as its fields, an item takes about
        # 4 us there and back instead of 13 us with a slots dataclass's default state (a bare tuple: 1).
        return (Item, (self.line, self.id, self.path, self.labels, self.reason))


def make_header(item: Item, pack_label: bool) -> recordio.IRHeader:
    """im2rec's header: all labels when --pack-label and there are several, else the first."""
    labels = item.labels
    label = list(labels) if pack_label and len(labels) > 1 else labels[0]
    return recordio.IRHeader(0, label, item.id, 0)


def target_size(height: int, width: int, resize: int, center_crop: bool) -> tuple[int, int]:
    """im2rec's (width, height) after an optional centre crop and a short-edge resize."""
    if center_crop:
        height = width = min(height, width)
    if height > width:
        return resize, height * resize // width
    return width * resize // height, resize


def reduce_factor(info: ImageInfo, opts: PackOptions) -> int:
    """Largest DCT scale-down that still leaves at least the target short edge (1 when none applies)."""
    if info.format != "jpeg" or not opts.resize or opts.color == -1 or not opts.reduced_decode:
        return 1
    short = min(info.width, info.height)
    return next((f for f in REDUCE_FACTORS if short // f >= opts.resize), 1)


def can_store_as_is(info: ImageInfo, opts: PackOptions) -> bool:
    """--no-upscale: a sound JPEG already at or below the target is stored without re-encoding."""
    if not (opts.no_upscale and opts.resize and info.format == "jpeg"):
        return False
    if opts.encoding.lower() not in (".jpg", ".jpeg") or info.precision != 8:
        return False
    if info.frame not in HUFFMAN_FRAMES:
        return False
    if info.components not in AS_IS_COMPONENTS or (opts.color == 0 and info.components != 1):
        return False
    if opts.center_crop and info.width != info.height:
        return False
    return opts.color != -1 and min(info.width, info.height) <= opts.resize


def center_crop(img: ndarray) -> ndarray:
    height, width = img.shape[:2]
    if height > width:
        margin = (height - width) // 2
        return img[margin : margin + width, :]
    margin = (width - height) // 2
    return img[:, margin : margin + height]


def decode(
    cv2: ModuleType, np: ModuleType, data: bytes, info: ImageInfo, opts: PackOptions, factor: int
) -> ndarray | None:
    """Decode at 1/factor scale; None if the decoded shape does not match the header (EXIF rotation)."""
    flag = opts.color
    if factor > 1:
        flag = {
            8: cv2.IMREAD_REDUCED_COLOR_8,
            4: cv2.IMREAD_REDUCED_COLOR_4,
            2: cv2.IMREAD_REDUCED_COLOR_2,
        }[factor]
        if opts.color == 0:
            flag = {
                8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
                4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            }[factor]
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if warning := DECODER_LOG.short_data():
        raise short_data_skip(warning)
    if img is None:
        raise Skip(f"not a decodable image ({info.format or 'unknown format'})")
    expected = (-(-info.height // factor), -(-info.width // factor))
    if factor > 1 and (
        img.shape[:2] != expected or expected[0] == expected[1] != 0 and info.height != info.width
    ):
        return None  # rotated by EXIF or ambiguous: the full-size path computes im2rec's geometry itself
    return img


def decode_scaled(
    cv2: ModuleType, np: ModuleType, data: bytes, info: ImageInfo, opts: PackOptions
) -> tuple[Any, tuple[int, int] | None]:  # Any: decode() is None only at factor > 1
    """The decoded image and the full-size (height, width) that im2rec's geometry is computed from."""
    factor = reduce_factor(info, opts)
    if (info.width // factor) * (info.height // factor) > MAX_PIXELS:
        raise Skip(f"too large to decode safely: {info.width}x{info.height} pixels")
    img = decode(cv2, np, data, info, opts, factor) if factor > 1 else None
    if img is None:
        return decode(cv2, np, data, info, opts, 1), None
    return img, (info.height, info.width)


def checked_target(height: int, width: int, opts: PackOptions) -> tuple[int, int]:
    """target_size(), refused when no JPEG can hold it or its pixels would take gigabytes."""
    size = target_size(height, width, opts.resize, opts.center_crop)
    if max(size) > JPEG_MAX_SIDE and opts.encoding.lower() in (".jpg", ".jpeg"):
        raise Skip(
            f"{width}x{height} resized to a short edge of {opts.resize} is {size[0]}x{size[1]}, "
            f"over JPEG's {JPEG_MAX_SIDE:,} pixels per side"
        )
    if size[0] * size[1] > MAX_PIXELS:
        raise Skip(
            f"{width}x{height} resized to a short edge of {opts.resize} is {size[0]}x{size[1]}: "
            "too large to resize safely"
        )
    return size


def reshape(
    cv2: ModuleType, img: ndarray, full: tuple[int, int] | None, opts: PackOptions
) -> ndarray:
    """im2rec's centre crop and short-edge resize (never enlarging with --no-upscale)."""
    height, width = full or img.shape[:2]
    if opts.center_crop:
        img = center_crop(img)
    if not opts.resize or opts.no_upscale and min(height, width) <= opts.resize:
        return img
    return cv2.resize(img, checked_target(height, width, opts))


def encode(cv2: ModuleType, img: ndarray, opts: PackOptions) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, opts.quality]
    if opts.encoding.lower() == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, opts.quality]
    try:
        ok, buf = cv2.imencode(opts.encoding, img, params)
    except cv2.error as exc:
        last = str(exc).strip().splitlines()[-1]
        raise Skip(f"cannot encode as {opts.encoding}: {last}") from None
    if not ok:
        raise Skip(f"cannot encode as {opts.encoding}")
    return buf.tobytes()


def transform(
    cv2: ModuleType, np: ModuleType, data: bytes, info: ImageInfo, opts: PackOptions
) -> bytes:
    """im2rec's image_encode: decode, centre-crop, resize the short edge, encode."""
    img, full = decode_scaled(cv2, np, data, info, opts)
    return encode(cv2, reshape(cv2, img, full, opts), opts)


def plane_codec(opts: PackOptions) -> turbojpeg.TurboJPEG | None:
    """libjpeg-turbo for the YUV-plane path, when the options want it and it is installed."""
    return turbojpeg.load() if opts.codec == "auto" and opts.reduced_decode else None


def can_use_planes(info: ImageInfo, opts: PackOptions) -> bool:
    """The YUV-plane path takes an upright 8-bit JPEG to be resized into a colour JPEG, uncropped."""
    wanted = opts.codec == "auto" and opts.reduced_decode and opts.color == 1
    plain = info.format == "jpeg" and info.precision == 8 and info.components in AS_IS_COMPONENTS
    return (
        wanted
        and plain
        and info.orientation == 1
        and bool(opts.resize)
        and not opts.center_crop
        and opts.encoding.lower() in (".jpg", ".jpeg")
    )


def fit(cv2: ModuleType, plane: ndarray, shape: tuple[int, int]) -> ndarray:
    """Cut or edge-extend a plane to (rows, cols): the codec reads whole blocks."""
    plane = plane[: shape[0], : shape[1]]
    rows, cols = shape[0] - plane.shape[0], shape[1] - plane.shape[1]
    return (
        cv2.copyMakeBorder(plane, 0, rows, 0, cols, cv2.BORDER_REPLICATE) if rows or cols else plane
    )


def resize_planes(
    tj: turbojpeg.TurboJPEG,
    cv2: ModuleType,
    np: ModuleType,
    planes: list[ndarray],
    size: tuple[int, int],
) -> list[ndarray]:
    """Y to the target size, chroma to its 4:2:0 size, each in the padded shape the encoder reads.

    Chroma is scaled by exactly Y's factors (fx, fy), not to its rounded size: a chroma plane is
    half of an odd width rounded up, and stretching it to fit shifts colour by up to a luma pixel
    (measured: 5 dB worse than OpenCV's path on saturated edges).
    """
    rows, cols = tj.plane_size(0, size[0], size[1], turbojpeg.SAMP_420)
    chroma = tj.plane_size(1, size[0], size[1], turbojpeg.SAMP_420)
    luma = fit(cv2, cv2.resize(planes[0], size), (rows, cols))
    if len(planes) == 1:  # a greyscale JPEG: OpenCV would store it as colour, so neutral chroma
        return [luma, *[np.full(chroma, 128, np.uint8)] * 2]
    # A source chroma sample spans sub luma pixels (1, 2 or 4); a 4:2:0 target's spans 2.
    sub_y, sub_x = (round(n / c) for n, c in zip(planes[0].shape, planes[1].shape))
    fx = size[0] / planes[0].shape[1] * sub_x / 2
    fy = size[1] / planes[0].shape[0] * sub_y / 2
    return [luma, *(fit(cv2, cv2.resize(p, None, fx=fx, fy=fy), chroma) for p in planes[1:])]


def transform_planes(
    tj: turbojpeg.TurboJPEG,
    cv2: ModuleType,
    np: ModuleType,
    data: bytes,
    info: ImageInfo,
    opts: PackOptions,
) -> bytes | None:
    """im2rec's geometry on the JPEG's own YUV planes, DCT-scaled when large; None: OpenCV decides."""
    try:
        header = tj.header(data)
        if header.colorspace not in (turbojpeg.CS_YCBCR, turbojpeg.CS_GRAY):
            return None  # RGB, CMYK or YCCK JPEGs: OpenCV converts them
        width, height = tj.scaled(info.width, info.height, opts.resize)
        same_frame = (header.width, header.height) == (info.width, info.height)
        if not same_frame or width * height > MAX_PIXELS:
            return None
        if opts.no_upscale and min(info.width, info.height) <= opts.resize:
            size = (info.width, info.height)
        else:
            size = checked_target(info.height, info.width, opts)
        planes = tj.decode_planes(np, data, header, width, height)
        planes[0] = planes[0][:height, :width]  # Y comes padded to whole blocks; chroma is exact
        planes = resize_planes(tj, cv2, np, planes, size)
        return tj.encode_planes(planes, size, turbojpeg.SAMP_420, opts.quality)
    except turbojpeg.ShortData as exc:
        raise short_data_skip(str(exc)) from None  # OpenCV would decode it grey again
    except (turbojpeg.TurboJPEGError, cv2.error):
        # Corrupt data (even a warning) or a plane that would scale to nothing: OpenCV's path
        # then skips or packs the image exactly as it would without this codec.
        return None


def pass_through_problem(info: ImageInfo) -> str:
    """Why a file stored as it is would fail its readers ('' if ImageRecordIter and OpenCV read it).

    They decode 8-bit Huffman JPEGs (baseline or progressive) and PNGs, whole, on every read.
    """
    if info.format not in ("jpeg", "png"):
        name = (info.format or "unknown format").upper()
        return (
            f"{name} stored as it is: readers decode only JPEG and PNG; pack without --pass-through"
        )
    if info.format == "jpeg" and (info.precision != 8 or info.frame not in HUFFMAN_FRAMES):
        kind = f"{info.precision}-bit" if info.precision != 8 else f"frame type 0x{info.frame:X}"
        return (
            f"{kind} JPEG stored as it is: readers decode only 8-bit baseline or progressive "
            "JPEGs; pack without --pass-through"
        )
    if info.width * info.height > PASS_THROUGH_MAX_PIXELS:
        mib = info.width * info.height * 3 >> 20
        return (
            f"{info.width}x{info.height} pixels stored as it is: every read would decode {mib:,} MiB "
            f"(limit {PASS_THROUGH_MAX_PIXELS >> 20} Mpixel); pack without --pass-through to resize it"
        )
    return ""


def payload_for(
    cv2: ModuleType,
    np: ModuleType,
    data: bytes,
    info: ImageInfo,
    opts: PackOptions,
    tj: turbojpeg.TurboJPEG | None,
) -> bytes:
    """The record's image bytes: the file itself, the YUV-plane path's, or OpenCV's."""
    if opts.pass_through and (problem := pass_through_problem(info)):
        raise Skip(problem)
    if opts.pass_through or can_store_as_is(info, opts):
        return data
    planes = (
        transform_planes(tj, cv2, np, data, info, opts)
        if tj and can_use_planes(info, opts)
        else None
    )
    return planes if planes is not None else transform(cv2, np, data, info, opts)


def read_item(item: Item, setup: Setup) -> bytes | Skip | None:
    """The file of one .lst entry, or why it cannot be read; None for a malformed line."""
    if item.malformed:
        return None
    try:
        return read_bytes(os.path.join(setup.root, item.path))
    except Skip as exc:
        return exc


def encode_item(
    cv2: ModuleType,
    np: ModuleType,
    item: Item,
    setup: Setup,
    tj: turbojpeg.TurboJPEG | None = None,
    data: bytes | Skip | None = None,
) -> bytes | str:
    """One .lst entry -> the framed record bytes, or the reason it was skipped.

    ``data`` is the file as read_item() gave it; None: read it here.
    """
    if item.malformed:  # the parser already wrote the reason
        return item.reason
    opts = setup.options
    try:
        if data is None:
            data = read_bytes(os.path.join(setup.root, item.path))
        if isinstance(data, Skip):
            raise data
        info = sniff(data)
        if info.problem:
            raise Skip(info.problem)
        payload = payload_for(cv2, np, data, info, opts, tj)
        return recordio.frame(recordio.pack(make_header(item, opts.pack_label), payload))
    except Skip as exc:
        return str(exc)
    except recordio.RecordIOError as exc:
        return str(exc)
    except MemoryError:
        return "out of memory while decoding"
    except Exception as exc:  # noqa: BLE001 - an OpenCV failure on one image must not stop the others
        return (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        )


def _deliver(results: Connection, outbox: queue.SimpleQueue) -> None:
    """Send finished batches; runs beside the encoder so a slow reader never stalls the encoding."""
    while (message := outbox.get()) is not None:
        try:
            results.send_bytes(message)
        except OSError:
            return  # the packer is gone; the encoder stops at end-of-file on its tasks


def serve(tasks_fd: int, results_fd: int) -> None:
    from multiprocessing.connection import Connection

    import cv2
    import numpy as np

    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would only contend
    DECODER_LOG.capture()
    tasks, results = Connection(tasks_fd, writable=False), Connection(results_fd, readable=False)
    setup: Setup = pickle.loads(tasks.recv_bytes())
    tj = plane_codec(setup.options)
    outbox: queue.SimpleQueue = (
        queue.SimpleQueue()
    )  # bounded by the batches the packer has in flight
    sender = threading.Thread(target=_deliver, args=(results, outbox), daemon=True)
    sender.start()
    # One thread encodes: two per process contend for the GIL on a busy machine (measured: 5% more
    # CPU and up to twice the wall time). Another reads each batch's files ahead of it, so a cold
    # disk does not leave the core idle.
    reader = ThreadPoolExecutor(1)
    while True:
        try:
            key, items = pickle.loads(tasks.recv_bytes())
        except EOFError:
            break
        files = [reader.submit(read_item, item, setup) for item in items]
        out = [encode_item(cv2, np, i, setup, tj, f.result()) for i, f in zip(items, files)]
        outbox.put(pickle.dumps((key, out), protocol=pickle.HIGHEST_PROTOCOL))
    outbox.put(None)
    sender.join()
    reader.shutdown()


def main() -> None:
    results_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the result stream
    try:
        serve(0, results_fd)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    # Every result is sent and nothing is buffered: skip the interpreter's teardown of numpy and
    # OpenCV, which took 30 ms per worker, paid once per worker at the end of every pack.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
