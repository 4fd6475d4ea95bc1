"""Issue 21 item 3: JPEGs whose data cannot fill their header are corrupt, impossible resize targets
are refused before they are allocated, and --pass-through stores only what its readers decode."""

import io
import pathlib
import struct

import cv2
import numpy as np
import pytest
from test_pack_bad_input import encode, photo, write_raw_lst

from engine import recordio
from engine.prep import pack, pack_worker, turbojpeg
from engine.prep.pack import PackOptions
from engine.prep.pack_sniff import sniff
from engine.prep.report import read_report


def with_frame_size(data: bytes, width: int, height: int, precision: int = 8) -> bytes:
    """The same JPEG with its start-of-frame header edited to claim another size (and precision)."""
    out = bytearray(data)
    pos = 2
    while out[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack_from(">H", out, pos + 2)[0]
    struct.pack_into(">BHH", out, pos + 4, precision, height, width)
    return bytes(out)


def cut_with_end_marker(data: bytes, fraction: float) -> bytes:
    """A JPEG cut short, with the end-of-image marker put back: the header checks cannot tell."""
    return data[: int(len(data) * fraction)] + b"\xff\xd9"


def with_scan_padding(data: bytes, extra: int) -> bytes:
    """More (meaningless) image data before the end marker, so a size claim is not refused unread."""
    return data[:-2] + bytes(extra) + data[-2:]


def pack_one(tmp_path: pathlib.Path, data: bytes, options: PackOptions, name: str = "a.jpg"):
    """Pack one file; (records, skip reasons)."""
    root = tmp_path / "images"
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
    write_raw_lst(tmp_path / "d.lst", [name])
    result = pack.pack_lists([tmp_path / "d.lst"], root, options)
    reasons = [row["reason"] for row in read_report(tmp_path / "d.skipped.tsv")]
    return result.records, reasons


PHOTO = encode(".jpg", photo(320, 240), cv2.IMWRITE_JPEG_QUALITY, 95)
HOSTILE = {
    # the bomb: a header claiming 65500x65500 over a small file
    "bomb-65500": with_frame_size(PHOTO, 65500, 65500),
    # data for a sixteenth of what the header claims: passes the header checks, only decoding tells
    "claims-4x": with_frame_size(PHOTO, 1280, 960),
    "cut-half": cut_with_end_marker(PHOTO, 0.5),
    "cut-progressive": cut_with_end_marker(
        encode(".jpg", photo(320, 240), cv2.IMWRITE_JPEG_PROGRESSIVE, 1), 0.5
    ),
}
DECODING_MODES = {
    "default": PackOptions(resize=100),
    "opencv": PackOptions(resize=100, codec="opencv"),
    "full-decode": PackOptions(resize=100, reduced_decode=False),
    "no-upscale": PackOptions(resize=100, no_upscale=True),
    "grey": PackOptions(resize=100, color=0),
    "crop-png": PackOptions(resize=100, center_crop=True, encoding=".png", quality=3),
}


@pytest.mark.parametrize("mode", list(DECODING_MODES))
@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_a_jpeg_that_would_decode_partly_grey_is_skipped_as_corrupt(tmp_path, hostile, mode):
    records, reasons = pack_one(tmp_path, HOSTILE[hostile], DECODING_MODES[mode])
    assert records == 0
    assert len(reasons) == 1 and reasons[0].startswith("corrupt JPEG"), reasons


def test_the_whole_photo_those_were_made_from_packs_in_every_mode(tmp_path):
    for mode, options in DECODING_MODES.items():
        assert pack_one(tmp_path / mode, PHOTO, options) == (1, []), mode


def test_a_header_claiming_more_pixels_than_the_data_can_hold_is_refused_unread():
    assert "65500x65500" in sniff(HOSTILE["bomb-65500"]).problem
    flat = encode(".jpg", np.full((4000, 6000, 3), 255, np.uint8), cv2.IMWRITE_JPEG_QUALITY, 10)
    progressive = encode(
        ".jpg", np.full((4000, 6000), 0, np.uint8), cv2.IMWRITE_JPEG_PROGRESSIVE, 1
    )
    assert sniff(flat).problem == sniff(progressive).problem == ""  # the sparsest whole files


class NoOpenCVDecode:
    """cv2 for the worker's code, whose imdecode must not be reached."""

    def __getattr__(self, name):
        return getattr(cv2, name)

    @staticmethod
    def imdecode(*_args):
        raise AssertionError("decoded a second time by OpenCV")


@pytest.mark.skipif(turbojpeg.load() is None, reason="the YUV-plane path needs libturbojpeg")
def test_a_short_jpeg_is_judged_by_its_first_decode():
    setup = pack_worker.Setup("/", PackOptions(resize=100))
    item = pack_worker.Item(1, 0, "a.jpg", (0.0,))
    data = HOSTILE["claims-4x"]
    result = pack_worker.encode_item(NoOpenCVDecode(), np, item, setup, turbojpeg.load(), data)
    assert result.startswith("corrupt JPEG") and "premature end" in result


WIDE = encode(".jpg", photo(65500, 2))  # a legal JPEG: 65,500 is within the frame header's 16 bits


@pytest.mark.parametrize(
    "options, words",
    [
        (PackOptions(resize=480), "over JPEG's 65,535 pixels per side"),
        (PackOptions(resize=480, codec="opencv"), "over JPEG's 65,535 pixels per side"),
        (PackOptions(resize=480, encoding=".png", quality=3), "too large to resize safely"),
    ],
    ids=["default", "opencv", "png"],
)
def test_a_resize_target_no_jpeg_can_hold_is_refused_before_it_is_allocated(
    tmp_path, options, words
):
    # 65500x2 to a short edge of 480 would be 15,720,000x480: 22.6 GB of pixels
    records, reasons = pack_one(tmp_path, WIDE, options)
    assert records == 0 and len(reasons) == 1 and words in reasons[0], reasons
    assert "15720000x480" in reasons[0]


def test_a_wide_image_within_the_limits_still_packs(tmp_path):
    records, reasons = pack_one(tmp_path, encode(".jpg", photo(6000, 40)), PackOptions(resize=400))
    assert (records, reasons) == (1, [])
    with recordio.RecordReader(tmp_path / "d.rec") as reader:
        assert recordio.unpack_img(reader.read(), 1)[1].shape[:2] == (400, 60000)


def gif() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(photo(40, 30)).save(out, "GIF")
    return out.getvalue()


@pytest.mark.parametrize(
    "data, words",
    [
        (gif(), "GIF stored as it is"),
        (with_frame_size(encode(".jpg", photo(40, 30)), 40, 30, precision=12), "12-bit JPEG"),
        (
            with_scan_padding(with_frame_size(PHOTO, 16000, 16000), 300_000),
            "16000x16000 pixels stored as it is",
        ),
        (HOSTILE["bomb-65500"], "corrupt JPEG"),
    ],
    ids=["gif", "12-bit", "16000x16000", "bomb-65500"],
)
def test_pass_through_refuses_what_its_readers_cannot_decode(tmp_path, data, words):
    records, reasons = pack_one(tmp_path, data, PackOptions(pass_through=True), "a.img")
    assert records == 0 and len(reasons) == 1 and words in reasons[0], reasons


@pytest.mark.parametrize(
    "data",
    [
        encode(".jpg", photo(40, 30), cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        encode(".png", photo(40, 30, dtype=np.uint16)),  # OpenCV reads it as 8-bit colour
        encode(".jpg", photo(40, 30)[:, :, 0]),
    ],
    ids=["progressive", "png-16-bit", "grey"],
)
def test_pass_through_stores_what_its_readers_decode_unchanged(tmp_path, data):
    assert pack_one(tmp_path, data, PackOptions(pass_through=True), "a.img") == (1, [])
    with recordio.RecordReader(tmp_path / "d.rec") as reader:
        assert recordio.unpack(reader.read())[1] == data


def test_readme_says_cmyk_and_16_bit_inputs_are_converted_as_pack_does():
    readme = " ".join((pathlib.Path(__file__).parents[2] / "README.md").read_text().split())
    start = readme.index("Each skipped input (")
    skipped = readme[start : readme.index(")", start)]  # the kinds of input listed as skipped
    assert "CMYK" not in skipped and "16-bit" not in skipped
    assert "CMYK JPEGs and 16-bit PNGs are converted" in readme


@pytest.mark.parametrize(
    "data, options, words",
    [
        (WIDE, PackOptions(resize=480, device="cuda"), "over JPEG's 65,535 pixels per side"),
        (gif(), PackOptions(pass_through=True, device="cuda"), "GIF stored as it is"),
    ],
    ids=["wide", "gif"],
)
def test_the_gpu_path_refuses_what_the_cpu_path_refuses(tmp_path, data, options, words):
    from engine.prep import pack_gpu

    (tmp_path / "a.img").write_bytes(data)
    entry = pack_gpu.read_entry(
        pack_worker.Item(1, 0, "a.img", (0.0,)), pack_worker.Setup(str(tmp_path), options)
    )
    assert isinstance(entry.result, str) and words in entry.result
