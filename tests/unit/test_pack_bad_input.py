"""Bad input never crashes `pack` and is never silently dropped: the .idx plus the report cover every line."""

import io
import os
import pathlib

import cv2
import numpy as np
import pytest

from engine import recordio
from engine.prep import pack
from engine.prep.pack import PackOptions
from engine.prep.report import read_report


def photo(width, height, channels=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 65535
    small = rng.integers(
        0, top, size=(max(2, height // 8), max(2, width // 8), channels), dtype=dtype
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def encode(ext, img, *params):
    return cv2.imencode(ext, img, list(params))[1].tobytes()


def cmyk_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(photo(48, 32)[:, :, ::-1]).convert("CMYK").save(out, "JPEG", quality=90)
    return out.getvalue()


def broken_png() -> bytes:
    """Whole header and IEND, zeroed pixel data: only decoding finds out."""
    data = bytearray(encode(".png", photo(40, 30)))
    data[60:200] = bytes(140)
    return bytes(data)


def build_bad_tree(root: pathlib.Path) -> tuple[list[str], dict[str, str]]:
    """Every kind of bad input next to good ones; returns .lst paths and the expected outcome of each:
    'ok' (packed) or a fragment of the skip reason."""
    root.mkdir(parents=True)
    good = encode(".jpg", photo(48, 36))
    files = {
        "good.jpg": (good, "ok"),
        "truncated.jpg": (good[: len(good) // 2], "truncated JPEG"),
        "zero.jpg": (b"", "empty file"),
        "garbage.jpg": (
            bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8)),
            "not an image",
        ),
        "text.JPEG": (b"hello, I am a text file\n", "not an image"),
        "head-only.jpg": (good[:20], "truncated JPEG"),
        "cmyk.jpg": (cmyk_jpeg(), "ok"),
        "grey.jpg": (encode(".jpg", photo(40, 30)[:, :, 0]), "ok"),
        "deep.png": (encode(".png", photo(40, 30, dtype=np.uint16)), "ok"),
        "alpha.png": (encode(".png", photo(40, 30, 4)), "ok"),
        "cut.png": (encode(".png", photo(40, 30))[:-30], "truncated PNG"),
        "bad-body.png": (broken_png(), "not a decodable image"),
    }
    expect = {}
    for name, (data, outcome) in files.items():
        (root / name).write_bytes(data)
        expect[name] = outcome
    (root / "folder.jpg").mkdir()
    expect["folder.jpg"] = "path is a folder"
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    expect["dangling.jpg"] = "dangling symlink"
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    expect["loop.jpg"] = "symlink loop"
    expect["never-there.jpg"] = "no such file"
    os.mkfifo(root / "pipe.jpg")
    expect["pipe.jpg"] = "not a regular file"
    raw_name = b"caf\xe9.jpg"  # Latin-1 bytes, not UTF-8
    with open(os.path.join(os.fsencode(root), raw_name), "wb") as handle:
        handle.write(good)
    expect[os.fsdecode(raw_name)] = "ok"
    return list(expect), expect


def write_raw_lst(path: pathlib.Path, names: list[str], extra: list[bytes] = ()) -> None:
    lines = [
        f"{i}\t{i % 2}.000000\t".encode() + os.fsencode(n) + b"\n" for i, n in enumerate(names)
    ]
    path.write_bytes(b"".join(lines) + b"".join(extra))


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory) -> pathlib.Path:
    """A 12000x9000 JPEG (one flat grey channel keeps it quick to make)."""
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    path.write_bytes(
        encode(".jpg", np.full((9000, 12000), 128, np.uint8), cv2.IMWRITE_JPEG_QUALITY, 50)
    )
    return path


MODES = {
    "default": PackOptions(num_thread=2),
    "resize": PackOptions(resize=24, num_thread=2),
    "no-upscale": PackOptions(resize=40, no_upscale=True),
    "pass-through": PackOptions(pass_through=True),
    "keep-channels": PackOptions(color=-1, resize=24),
}
PASS_THROUGH_PACKS = {"bad-body.png"}  # its header and end look whole; pass-through does not decode


@pytest.mark.parametrize("mode", list(MODES))
def test_every_lst_line_is_either_packed_or_reported(tmp_path, mode):
    root = tmp_path / "images"
    names, expect = build_bad_tree(root)
    malformed = [
        b"only-one-field\n",
        b"x\t1.0\tgood.jpg\n",
        b"\n",
    ]  # the blank line is not an entry
    write_raw_lst(tmp_path / "d.lst", names, malformed)
    result = pack.pack_lists([tmp_path / "d.lst"], root, MODES[mode])

    keys = [k for k, _ in recordio.read_index(tmp_path / "d.idx")]
    report = read_report(tmp_path / "d.skipped.tsv")
    assert len(keys) + len(report) == len(names) + 2  # every entry line accounted for, exactly once
    assert (result.records, result.skipped) == (len(keys), len(report))
    reported = {int(row["line"]): row for row in report}
    assert set(reported).isdisjoint(k + 1 for k in keys)  # keys are line-1 in this list
    assert sorted(set(reported) | {k + 1 for k in keys}) == list(range(1, len(names) + 3))
    for i, name in enumerate(names):
        outcome = "ok" if mode == "pass-through" and name in PASS_THROUGH_PACKS else expect[name]
        if outcome == "ok":
            assert i in keys, f"{name} should be packed"
        else:
            assert outcome in reported[i + 1]["reason"], (name, reported.get(i + 1))
    assert "malformed .lst line" in reported[len(names) + 1]["reason"]
    assert "malformed .lst line" in reported[len(names) + 2]["reason"]
    assert reported[len(names) + 2]["id"] == ""


def test_packed_odd_images_decode_as_colour_at_the_target_size(tmp_path):
    root = tmp_path / "images"
    names, expect = build_bad_tree(root)
    ok = [n for n in names if expect[n] == "ok"]
    write_raw_lst(tmp_path / "d.lst", ok)
    pack.pack_lists([tmp_path / "d.lst"], root, PackOptions(resize=24))
    with recordio.RecordReader(tmp_path / "d.rec") as reader:
        images = [recordio.unpack_img(r, 1)[1] for r in reader]
    assert len(images) == len(ok)
    for name, img in zip(ok, images):
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) == 24, name


def test_undecodable_file_names_are_packed_or_reported_readably(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    write_raw_lst(tmp_path / "d.lst", ["caf\udce9.jpg"])
    (root / "caf\udce9.jpg").write_bytes(encode(".jpg", photo(30, 20)))
    with open(tmp_path / "d.lst", "ab") as lst:
        lst.write(b"1\t0.0\tcaf\xe9-missing.jpg\n")
    pack.pack_lists([tmp_path / "d.lst"], root, PackOptions())
    assert [k for k, _ in recordio.read_index(tmp_path / "d.idx")] == [0]
    (row,) = read_report(tmp_path / "d.skipped.tsv")
    assert row["path"] == "caf\\xe9-missing.jpg" and "no such file" in row["reason"]


def test_huge_image_is_packed_at_the_target_size(tmp_path, huge_jpeg):
    write_raw_lst(tmp_path / "d.lst", [huge_jpeg.name])
    result = pack.pack_lists([tmp_path / "d.lst"], huge_jpeg.parent, PackOptions(resize=64))
    assert (result.records, result.skipped) == (1, 0)
    with recordio.RecordReader(tmp_path / "d.rec") as reader:
        _, img = recordio.unpack_img(reader.read(), 1)
    assert img.shape[:2] == (64, 85)  # 12000 * 64 // 9000


def test_huge_image_in_pass_through_is_stored_unchanged(tmp_path, huge_jpeg):
    write_raw_lst(tmp_path / "d.lst", [huge_jpeg.name])
    pack.pack_lists([tmp_path / "d.lst"], huge_jpeg.parent, PackOptions(pass_through=True))
    with recordio.RecordReader(tmp_path / "d.rec") as reader:
        assert recordio.unpack(reader.read())[1] == huge_jpeg.read_bytes()


def with_thumbnail_segment(jpeg: bytes) -> bytes:
    """Insert an APP1 segment that holds a whole small JPEG (as EXIF thumbnails do), end marker included."""
    thumb = encode(".jpg", photo(16, 12))
    body = b"Exif\0\0" + thumb
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda: encode(".jpg", photo(40, 30)), ""),
        (lambda: encode(".jpg", photo(40, 30), cv2.IMWRITE_JPEG_PROGRESSIVE, 1), ""),
        (lambda: encode(".jpg", photo(40, 30)) + b"\0" * 100, ""),  # padding after the end marker
        (lambda: with_thumbnail_segment(encode(".jpg", photo(40, 30))), ""),
        (lambda: with_thumbnail_segment(encode(".jpg", photo(40, 30)))[:-200], "truncated JPEG"),
        (
            lambda: encode(".jpg", photo(40, 30), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)[:-150],
            "truncated JPEG",
        ),
        (lambda: b"\xff\xd8\xff", "truncated JPEG"),
    ],
    ids=[
        "baseline",
        "progressive",
        "padded",
        "thumbnail",
        "thumbnail-cut",
        "progressive-cut",
        "stub",
    ],
)
def test_sniff_finds_truncation_without_decoding(make, problem):
    from engine.prep.pack_sniff import sniff

    info = sniff(make())
    assert info.format == "jpeg"
    assert problem in info.problem if problem else info.problem == ""
    if not problem:
        assert (info.width, info.height, info.components, info.precision) == (40, 30, 3, 8)
