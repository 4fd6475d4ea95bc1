"""Issue 11 item 11: a damaged .rec or image header, or a NUL in a file name, gives one line."""

import argparse
import struct

import pytest

from engine.cluster.hosts import read_hosts
from engine.errors import UserError
from engine.recordio import MAGIC, framing_problem
from engine.train.facts import gather_facts, image_size
from engine.train.options import build_train_parser

PNG = b"\x89PNG\r\n\x1a\n"
HEADER = struct.pack("<IfQQ", 0, 1.0, 0, 0)


def record(payload: bytes, length: int | None = None) -> bytes:
    pad = b"\0" * ((4 - len(payload) % 4) % 4)
    return struct.pack("<II", MAGIC, len(payload) if length is None else length) + payload + pad


def facts_for(train):
    args = build_train_parser(argparse.ArgumentParser()).parse_args(
        ["--data-train", str(train), "--num-classes", "5", "--num-examples", "2"]
    )
    return gather_facts(args, probe_local=False)


@pytest.mark.parametrize(
    "payload", [b"ab", HEADER + PNG + b"\0" * 4], ids=["tiny-record", "short-png"]
)
def test_check_on_a_tiny_record_or_png_header_gives_no_traceback(tmp_path, payload):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "d.rec").write_bytes(record(payload))
    facts = facts_for(tmp_path / "train")
    assert facts.packed_edge is None
    # a record too short to be an image is a finding (train would refuse it), never a traceback
    assert facts.bad_data == ([] if len(payload) > 24 else [facts.bad_data[0]])
    assert all("not an image record" in line for line in facts.bad_data)
    assert image_size(PNG + b"\0" * 10) is None


def eight_records() -> bytes:
    return b"".join(record(HEADER + bytes([i]) * 76) for i in range(8))  # 108 bytes each


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda b: b[:-10], "record at offset 756 is cut short"),  # last record
        (lambda b: b + b"junk", "4 stray bytes after the last record, at offset 864"),
        (lambda b: record(HEADER, 4000) + b[108:], "record at offset 0 is cut short"),  # first
        (
            lambda b: b[:432] + record(HEADER + b"x" * 24) + b[432 + 56 :],
            "record at offset 432 is not followed",
        ),
    ],
    ids=["truncated", "trailing-junk", "first-record", "sampled-record"],
)
def test_check_finds_bad_framing_and_names_file_and_offset(tmp_path, damage, expected):
    rec = tmp_path / "train" / "d.rec"
    rec.parent.mkdir()
    rec.write_bytes(eight_records())
    assert framing_problem(rec) is None
    rec.write_bytes(damage(eight_records()))
    assert expected in framing_problem(rec)
    (problem,) = facts_for(rec.parent).bad_data
    assert str(rec) in problem and expected in problem


def test_a_nul_in_the_hosts_file_name_is_one_line():
    with pytest.raises(UserError, match="cannot contain a NUL byte"):
        read_hosts("hosts\0file")
