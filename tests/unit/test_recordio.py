"""engine.recordio writes the same bytes as mxnet.recordio and reads what mxnet writes."""

import struct

import numpy as np
import pytest

from engine import recordio

mx = pytest.importorskip("mxnet", reason="compatibility is checked against the installed mxnet")
pytestmark = pytest.mark.filterwarnings("ignore:tostring:DeprecationWarning")  # inside mxnet 1.9.1

M = recordio.MAGIC_BYTES

# Payloads that exercise every framing branch: empty, unpadded lengths, the magic at aligned and
# unaligned offsets, at the very start and end, twice in a row, and inside the unaligned tail.
PAYLOADS = [
    b"",
    b"a",
    b"abc",
    b"abcd",
    b"abcde" * 7,
    M,
    M + M,
    M + b"x",
    b"x" + M,
    b"xy" + M + b"zw",
    b"xyz" + M,
    b"wxyz" + M,
    b"wxyz" + M + b"12",
    b"wxyz" + M + M + b"1234" + M,
    b"\0" * 8 + M + b"\0" * 3 + M + b"\0",
    b"ab" + M[:2],
    bytes(range(256)) * 3,
]


def _mx_write(tmp_path, payloads, indexed=False):
    rec, idx = tmp_path / "mx.rec", tmp_path / "mx.idx"
    if indexed:
        writer = mx.recordio.MXIndexedRecordIO(str(idx), str(rec), "w")
        for key, payload in enumerate(payloads):
            writer.write_idx(key * 7, payload)
    else:
        writer = mx.recordio.MXRecordIO(str(rec), "w")
        for payload in payloads:
            writer.write(payload)
    writer.close()
    return rec, idx


@pytest.mark.mxnet
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_frame_matches_dmlc_writer_byte_for_byte(tmp_path, payload):
    rec, _ = _mx_write(tmp_path, [payload])
    assert recordio.frame(payload) == rec.read_bytes()


@pytest.mark.mxnet
def test_magic_at_aligned_offset_is_split_into_flagged_parts():
    framed = recordio.frame(b"wxyz" + M + b"12")
    first = struct.unpack_from("<II", framed, 0)
    assert first == (recordio.MAGIC, (1 << 29) | 4)
    second = struct.unpack_from("<II", framed, 12)
    assert second == (recordio.MAGIC, (3 << 29) | 2)
    assert len(framed) == 12 + 8 + 4  # last part padded to 4 bytes


@pytest.mark.mxnet
def test_indexed_writer_matches_mxnet_rec_and_idx(tmp_path):
    mx_rec, mx_idx = _mx_write(tmp_path, PAYLOADS, indexed=True)
    ours_rec, ours_idx = tmp_path / "ours.rec", tmp_path / "ours.idx"
    with recordio.IndexedRecordWriter(ours_idx, ours_rec) as writer:
        for key, payload in enumerate(PAYLOADS):
            writer.write_idx(key * 7, payload)
    assert ours_rec.read_bytes() == mx_rec.read_bytes()
    assert ours_idx.read_bytes() == mx_idx.read_bytes()


@pytest.mark.mxnet
def test_we_read_what_mxnet_wrote_sequentially_and_by_index(tmp_path):
    rec, idx = _mx_write(tmp_path, PAYLOADS, indexed=True)
    with recordio.RecordReader(rec) as reader:
        assert list(reader) == PAYLOADS
    with recordio.IndexedRecordReader(idx) as beside:  # mx.idx names mx.rec
        assert beside.read_idx(7) == PAYLOADS[1]
    with recordio.IndexedRecordReader(idx, rec) as reader:
        assert reader.keys == [k * 7 for k in range(len(PAYLOADS))]
        for key in reversed(reader.keys):
            assert reader.read_idx(key) == PAYLOADS[key // 7]


@pytest.mark.mxnet
def test_mxnet_reads_what_we_wrote(tmp_path):
    rec, idx = tmp_path / "ours.rec", tmp_path / "ours.idx"
    with recordio.IndexedRecordWriter(idx, rec) as writer:
        for key, payload in enumerate(PAYLOADS):
            writer.write_idx(key, payload)
    reader = mx.recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
    assert [reader.read_idx(k) for k in range(len(PAYLOADS))] == PAYLOADS
    reader.close()


@pytest.mark.mxnet
@pytest.mark.parametrize(
    "header",
    [
        (0, 3.0, 17, 0),
        (5, 2.5, 2**40, 9),
        (0, [1.0, 2.0, 3.5], 4, 0),
        (0, np.arange(5.0), 1, 0),
        (7, [9], 0, 0),
    ],
)
def test_image_header_pack_matches_mxnet(header):
    payload = b"jpeg" + M + b"bytes"
    ours = recordio.pack(header, payload)
    assert ours == mx.recordio.pack(mx.recordio.IRHeader(*header), payload)
    got_header, got_payload = recordio.unpack(ours)
    ref_header, ref_payload = mx.recordio.unpack(ours)
    assert got_payload == ref_payload == payload
    assert got_header.flag == ref_header.flag
    assert np.array_equal(np.asarray(got_header.label), np.asarray(ref_header.label))
    assert (got_header.id, got_header.id2) == (ref_header.id, ref_header.id2)


@pytest.mark.mxnet
def test_pack_img_matches_mxnet():
    img = (np.arange(24 * 32 * 3) % 251).astype(np.uint8).reshape(24, 32, 3)
    header = (0, 1.0, 5, 0)
    for fmt, quality in ((".jpg", 90), (".png", 3)):
        ours = recordio.pack_img(header, img, quality=quality, img_fmt=fmt)
        assert ours == mx.recordio.pack_img(mx.recordio.IRHeader(*header), img, quality, fmt)
    _, decoded = recordio.unpack_img(recordio.pack_img(header, img, img_fmt=".png"))
    assert np.array_equal(decoded, img)


def test_torn_tail_and_bad_magic_are_reported(tmp_path):
    rec = tmp_path / "t.rec"
    rec.write_bytes(recordio.frame(b"hello world") + recordio.frame(b"second")[:-3])
    with recordio.RecordReader(rec) as reader:
        assert reader.read() == b"hello world"
        with pytest.raises(recordio.RecordIOError, match="cut short"):
            reader.read()
    rec.write_bytes(b"\1\2\3\4" + b"\0" * 8)
    with (
        recordio.RecordReader(rec) as reader,
        pytest.raises(recordio.RecordIOError, match="bad magic"),
    ):
        reader.read()


def test_oversized_record_is_refused():
    with pytest.raises(recordio.RecordIOError, match="2\\^29"):
        recordio.frame(b"\0" * (1 << 29))


def test_bad_index_line_names_file_and_line(tmp_path):
    idx = tmp_path / "x.idx"
    idx.write_text("0\t0\nnot-a-line\n")
    with pytest.raises(recordio.RecordIOError, match="x.idx:2"):
        recordio.read_index(idx)
