"""The libjpeg-turbo YUV-plane codec: same geometry and near-same pixels as OpenCV, and a fallback."""

import cv2
import numpy as np
import pytest
from test_pack import jpeg, write_lst

from engine import recordio
from engine.events import StageState
from engine.prep import pack, turbojpeg
from engine.prep.pack import PackOptions

TJ = turbojpeg.load()
needs_turbojpeg = pytest.mark.skipif(
    TJ is None, reason="libturbojpeg is not installed (apt-get install libturbojpeg0)"
)


def photo(width, height, seed=0):
    """Smooth colour image, like a photo at this size."""
    rng = np.random.default_rng(seed)
    small = rng.integers(
        0, 255, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def encoded(img, sampling=None) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 92]
    if sampling is not None:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
    return cv2.imencode(".jpg", img, params)[1].tobytes()


IMAGES = {
    "420.jpg": encoded(photo(301, 223, 1)),  # odd sizes: odd targets, padded planes
    "444.jpg": encoded(photo(200, 150, 2), cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
    "422.jpg": encoded(photo(150, 200, 3), cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422),
    "grey.jpg": encoded(cv2.cvtColor(photo(160, 120, 4), cv2.COLOR_BGR2GRAY)),
    "large.jpg": encoded(photo(1003, 761, 5)),  # DCT-scaled decode at 1/4 for resize 150
    "mid.jpg": encoded(photo(450, 330, 6)),  # 3/4 would fit, but only SIMD factors are used: full
}


def pack_images(tmp_path, name, options, on_event=None):
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    for file, data in IMAGES.items():
        (root / file).write_bytes(data)
    (tmp_path / name).mkdir()
    lst = write_lst(tmp_path / name / "d.lst", list(IMAGES))
    kwargs = {"on_event": on_event} if on_event else {}
    result = pack.pack_lists([lst], root, options, **kwargs)
    assert (result.records, result.skipped) == (len(IMAGES), 0)
    with recordio.RecordReader(tmp_path / name / "d.rec") as reader:
        return [recordio.unpack(r)[1] for r in reader]


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse)


@needs_turbojpeg
def test_yuv_planes_give_opencvs_geometry_and_close_quality(tmp_path):
    ours = pack_images(tmp_path, "planes", PackOptions(resize=150, quality=90))
    ref = pack_images(tmp_path, "opencv", PackOptions(resize=150, quality=90, codec="opencv"))
    assert ours != ref  # the planes path really ran
    for name, a, b in zip(IMAGES, ours, ref):
        img, want = (cv2.imdecode(np.frombuffer(x, np.uint8), cv2.IMREAD_UNCHANGED) for x in (a, b))
        assert img.shape == want.shape and img.ndim == 3, name  # greyscale too is stored as colour
        source = cv2.imdecode(np.frombuffer(IMAGES[name], np.uint8), cv2.IMREAD_COLOR)
        truth = cv2.resize(source, img.shape[1::-1], interpolation=cv2.INTER_AREA)
        # Measured on photo-like images: 0.6-1.2 dB below OpenCV's path, from resizing chroma
        # at its own resolution and, for large images, scaling chroma in the DCT domain.
        assert psnr(img, truth) > psnr(want, truth) - 1.5, name


def test_missing_libturbojpeg_falls_back_to_opencv_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(turbojpeg.LIBRARY_ENV, str(tmp_path / "no" / "libturbojpeg.so.0"))
    assert turbojpeg.load() is None
    events = []
    fallback = pack_images(tmp_path, "fallback", PackOptions(resize=150), events.append)
    ref = pack_images(tmp_path, "opencv", PackOptions(resize=150, codec="opencv"))
    assert fallback == ref  # the workers took OpenCV's path, byte for byte
    notes = [e.message for e in events if isinstance(e, StageState) and "libturbojpeg" in e.message]
    assert notes == [pack.codec_note(PackOptions(resize=150))]
    assert "apt-get install libturbojpeg0" in notes[0]


@needs_turbojpeg
def test_corrupt_data_and_short_planes_raise_instead_of_reading_past_buffers():
    data = jpeg(64, 48)
    header = TJ.header(data)
    with pytest.raises(turbojpeg.TurboJPEGError):
        TJ.decode_planes(np, data[:400] + b"\x00" * 50 + data[-2:], header, 64, 48)
    planes = [
        np.zeros((47, 63), np.uint8),
        np.zeros((24, 32), np.uint8),
        np.zeros((24, 32), np.uint8),
    ]
    with pytest.raises(ValueError, match="plane 0"):
        TJ.encode_planes(planes, (63, 47), turbojpeg.SAMP_420, 90)  # Y must be padded to 48x64


@needs_turbojpeg
def test_dct_scaling_uses_only_the_simd_factors():
    assert TJ.scaled(1003, 761, 150) == (251, 191)  # 1/4
    assert TJ.scaled(1003, 761, 400) == (1003, 761)  # 1/2 is too small; 5/8 would be slower
    assert TJ.scaled(1003, 761, 90) == (126, 96)  # 1/8
