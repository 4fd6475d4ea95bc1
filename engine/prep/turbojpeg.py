"""A thin ctypes binding to libjpeg-turbo's TurboJPEG library: decode to YUV planes, encode from them.

Packing spends its time in decode -> resize -> encode. OpenCV converts YCbCr to BGR after decoding
and back before encoding, and resizes full-resolution chroma; working on the JPEG's own planes skips
both conversions and resizes a quarter of the chroma pixels. Only the TurboJPEG 2 API is used, which
libturbojpeg 2.x (Debian's ``libturbojpeg0``) and 3.x both export; nothing is compiled. ``load()``
returns None when the library is not installed, and the packer then stays on OpenCV.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from dataclasses import dataclass
from types import ModuleType

LIBRARY_NAMES = ("libturbojpeg.so.0", "libturbojpeg.so")
LIBRARY_ENV = "IMGSCALE_TURBOJPEG"  # a library path to use instead; a missing one means OpenCV
SAMP_420 = 2
SAMP_GRAY = 3
CS_YCBCR = 1
CS_GRAY = 2
FLAG_FASTDCT = 2048
ERROR_WARNING = 0  # tjGetErrorCode: the call finished, but the data was not as it should be
SHORT_DATA_WARNING = (
    "premature end"  # libjpeg's words when the image data ends before its last block
)
UNSIGNED = ctypes.POINTER(ctypes.c_ubyte)
FAST_FACTORS = ((1, 8), (1, 4), (1, 2), (1, 1))


class TurboJPEGError(Exception):
    """A fatal decode or encode error, or a warning about corrupt data (the caller falls back)."""


class ShortData(TurboJPEGError):
    """The image data ended before the last block: the decoder filled the rest with grey."""


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    subsamp: int
    colorspace: int


class _ScalingFactor(ctypes.Structure):
    _fields_ = [("num", ctypes.c_int), ("denom", ctypes.c_int)]


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types, so 64-bit pointers and sizes pass through ctypes intact."""
    handle, c_int, p_int = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
    size = ctypes.c_ulong
    lib.tjInitDecompress.restype = handle
    lib.tjInitCompress.restype = handle
    lib.tjDestroy.argtypes = [handle]
    lib.tjGetErrorStr2.argtypes = [handle]
    lib.tjGetErrorStr2.restype = ctypes.c_char_p
    lib.tjGetErrorCode.argtypes = [handle]
    lib.tjDecompressHeader3.argtypes = [handle, ctypes.c_char_p, size, p_int, p_int, p_int, p_int]
    lib.tjDecompressToYUVPlanes.argtypes = [
        handle,
        ctypes.c_char_p,
        size,
        ctypes.POINTER(ctypes.c_void_p),
        c_int,
        p_int,
        c_int,
        c_int,
    ]
    lib.tjCompressFromYUVPlanes.argtypes = [
        handle,
        ctypes.POINTER(ctypes.c_void_p),
        c_int,
        p_int,
        c_int,
        c_int,
        ctypes.POINTER(UNSIGNED),
        ctypes.POINTER(size),
        c_int,
        c_int,
    ]
    lib.tjFree.argtypes = [UNSIGNED]
    lib.tjPlaneWidth.argtypes = [c_int, c_int, c_int]
    lib.tjPlaneHeight.argtypes = [c_int, c_int, c_int]
    lib.tjGetScalingFactors.argtypes = [p_int]
    lib.tjGetScalingFactors.restype = ctypes.POINTER(_ScalingFactor)


class TurboJPEG:
    """Per-thread TurboJPEG handles over one loaded library; the calls release the GIL."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        _declare(lib)
        self.lib = lib
        self.local = threading.local()
        count = ctypes.c_int()
        factors = lib.tjGetScalingFactors(ctypes.byref(count))
        # 1/8, 1/4, 1/2 and 1 only, largest reduction first: the other factors' inverse DCTs have no
        # SIMD code, and decoding at 3/4 measured slower than at full size.
        found = {(factors[i].num, factors[i].denom) for i in range(count.value)}
        self.factors = sorted(found & set(FAST_FACTORS), key=lambda f: f[0] / f[1])

    def _handle(self, kind: str) -> int:
        handle = getattr(self.local, kind, None)
        if handle is None:
            init = self.lib.tjInitDecompress if kind == "decoder" else self.lib.tjInitCompress
            handle = init()
            if not handle:
                raise TurboJPEGError("cannot create a TurboJPEG handle")
            setattr(self.local, kind, handle)
        return handle

    def _fail(self, handle: int) -> TurboJPEGError:
        message = self.lib.tjGetErrorStr2(handle).decode(errors="replace")
        warning = self.lib.tjGetErrorCode(handle) == ERROR_WARNING
        short = warning and SHORT_DATA_WARNING in message.lower()
        return ShortData(message) if short else TurboJPEGError(message)

    def header(self, data: bytes) -> Header:
        handle = self._handle("decoder")
        values = [ctypes.c_int() for _ in range(4)]
        refs = [ctypes.byref(v) for v in values]
        if self.lib.tjDecompressHeader3(handle, data, len(data), *refs) != 0:
            raise self._fail(handle)
        return Header(*(v.value for v in values))

    # Asked eight times per packed image, and sizes repeat (every target has the same short edge):
    # a cached answer skips the ctypes calls. One instance per process (see load), so no leak.
    @functools.lru_cache(maxsize=4096)  # noqa: B019
    def plane_size(self, component: int, width: int, height: int, subsamp: int) -> tuple[int, int]:
        """(height, width) of one plane of a width x height image."""
        lib = self.lib
        return lib.tjPlaneHeight(component, height, subsamp), lib.tjPlaneWidth(
            component, width, subsamp
        )

    def scaled(self, width: int, height: int, short_target: int) -> tuple[int, int]:
        """The smallest DCT-scaled (width, height) whose short edge still reaches short_target."""
        for num, denom in self.factors:
            w, h = -(-width * num // denom), -(-height * num // denom)
            if min(w, h) >= short_target:
                return w, h
        return width, height

    def decode_planes(
        self, np: ModuleType, data: bytes, header: Header, width: int, height: int, flags: int = 0
    ) -> list:
        """The Y (and Cb, Cr) planes of the image decoded at width x height (a DCT scaling size)."""
        count = 1 if header.subsamp == SAMP_GRAY else 3
        planes = [
            np.empty(self.plane_size(c, width, height, header.subsamp), np.uint8)
            for c in range(count)
        ]
        pointers = (ctypes.c_void_p * 3)(*(p.ctypes.data for p in planes))
        strides = (ctypes.c_int * 3)(*(p.shape[1] for p in planes))
        handle = self._handle("decoder")
        if self.lib.tjDecompressToYUVPlanes(
            handle, data, len(data), pointers, width, strides, height, flags
        ):
            raise self._fail(handle)  # a warning too: ShortData, or another for OpenCV to judge
        return planes

    def encode_planes(
        self, planes: list, size: tuple[int, int], subsamp: int, quality: int, flags: int = 0
    ) -> bytes:
        """A baseline JPEG of size (width, height) from uint8 planes of plane_size() each, Y first."""
        width, height = size
        for component, plane in enumerate(planes):
            if plane.shape != self.plane_size(component, width, height, subsamp):
                raise ValueError(f"plane {component} is {plane.shape}, the encoder reads more")
        pointers = (ctypes.c_void_p * 3)(*(p.ctypes.data for p in planes))
        strides = (ctypes.c_int * 3)(*(p.strides[0] for p in planes))
        out, length = UNSIGNED(), ctypes.c_ulong()
        handle = self._handle("encoder")
        status = self.lib.tjCompressFromYUVPlanes(
            handle,
            pointers,
            width,
            strides,
            height,
            subsamp,
            ctypes.byref(out),
            ctypes.byref(length),
            quality,
            flags,
        )
        try:
            if status:
                raise self._fail(handle)
            return ctypes.string_at(out, length.value)
        finally:
            if out:
                self.lib.tjFree(out)


def load(names: tuple[str, ...] = LIBRARY_NAMES) -> TurboJPEG | None:
    """The library, or None when libturbojpeg is not installed (then OpenCV does the work).

    One instance per library path for the process: its per-thread handles are made once.
    """
    override = os.environ.get(LIBRARY_ENV)
    return _load((override,) if override else names, search=not override)


@functools.cache
def _load(names: tuple[str, ...], search: bool) -> TurboJPEG | None:
    for name in names:
        try:
            return TurboJPEG(ctypes.CDLL(name))
        except (OSError, AttributeError):
            continue  # missing, or too old to export the TurboJPEG 2 API
    if not search:
        return None
    # Here: only this fallback needs it, and every pack worker loads this module.
    from ctypes.util import find_library

    found = find_library("turbojpeg")  # slow: runs ldconfig
    if not found or found in names:
        return None
    try:
        return TurboJPEG(ctypes.CDLL(found))
    except (OSError, AttributeError):
        return None
