"""`imgscale check` finds what training refuses (issue 21 item 4): for every input the trainer stops
at, check reports an error first; and it reads the label map and index that belong to the data."""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the table runs the torch engine's data loader")
cv2 = pytest.importorskip("cv2")

from engine import recordio  # noqa: E402
from engine.errors import UserError  # noqa: E402
from engine.train import check  # noqa: E402
from engine.train.options import CheckOptions, build_train_parser  # noqa: E402
from engine.train.torch import data  # noqa: E402

CLASSES = 4
IMAGES = 8


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", pixels)[1].tobytes()


def write_rec(folder: Path, labels, payloads=None) -> Path:
    """data/train.rec with its .idx, lists/train.lst and lists/train_labels.txt, as `imgscale
    list` and `pack` lay them out."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "lists").mkdir(exist_ok=True)
    rec = folder / "data" / "train.rec"
    writer = recordio.IndexedRecordWriter(str(rec.with_suffix(".idx")), str(rec))
    lines = []
    for i, label in enumerate(labels):
        payload = payloads[i] if payloads else recordio.pack((0, label, i, 0), jpeg(i))
        writer.write_idx(i, payload)
        lines.append(f"{i}\t{label:f}\tc{int(label) % CLASSES}/{i}.jpg\n")
    writer.close()
    (folder / "lists" / "train.lst").write_text("".join(lines))
    (folder / "lists" / "train_labels.txt").write_text(
        "".join(f"c{k}\t{k}\n" for k in range(CLASSES))
    )
    return rec


def good(folder: Path) -> Path:
    return write_rec(folder, [float(i % CLASSES) for i in range(IMAGES)])


def label(value: float):
    def make(folder: Path) -> Path:
        return write_rec(folder, [*(float(i % CLASSES) for i in range(IMAGES - 1)), value])

    return make


def offsets_shifted(folder: Path) -> Path:
    rec = good(folder)
    idx = rec.with_suffix(".idx")
    lines = idx.read_text().splitlines()
    key, offset = lines[3].split("\t")
    lines[3] = f"{key}\t{int(offset) + 8}"
    idx.write_text("\n".join(lines) + "\n")
    return rec


def two_byte_record(folder: Path) -> Path:
    return write_rec(folder, [0.0], payloads=[b"ab"])


def gifs(folder: Path) -> Path:
    """What `pack --pass-through` stores of GIF files: records OpenCV cannot decode."""
    from PIL import Image

    payloads = []
    for i in range(IMAGES):
        out = io.BytesIO()
        Image.fromarray(np.full((16, 16, 3), i * 20, dtype=np.uint8)).save(out, format="GIF")
        payloads.append(recordio.pack((0, float(i % CLASSES), i, 0), out.getvalue()))
    return write_rec(folder, [float(i % CLASSES) for i in range(IMAGES)], payloads)


def not_recordio(folder: Path) -> Path:
    rec = good(folder)
    rec.write_bytes(b"GIF89a" + bytes(200))
    return rec


def no_index(folder: Path) -> Path:
    rec = good(folder)
    rec.with_suffix(".idx").unlink()
    return rec


def train_refuses(rec: Path) -> str | None:
    """The torch engine's loader over every record, as training reads them, and the trainer's
    bound on undecodable images (--max-bad-images, 1 %): its refusal or None."""
    try:
        index = data.open_index(str(rec))
        loader = data.RecordLoader(
            index, 1, data.Augment(size=8), threads=0, num_classes=CLASSES
        )  # fmt: skip
        loader.set_epoch(0)
        corrupt = sum(batch.corrupt for batch in loader)
    except UserError as exc:
        return str(exc)
    return (
        f"{corrupt} of {len(index)} images did not decode" if corrupt > 0.01 * len(index) else None
    )


def check_errors(rec: Path, **given) -> list[check.Finding]:
    parser = build_train_parser(argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(["--engine", "torch", "--data-train", str(rec), "--num-classes",
                              str(CLASSES), "--num-examples", str(IMAGES), "--batch-size", "2",
                              "--image-shape", "3,8,8"])  # fmt: skip
    findings = check.preflight(args, CheckOptions(**given))
    return [f for f in findings if f.level == check.ERROR]


@pytest.mark.parametrize(
    "make",
    [
        label(7.0),
        label(-1.0),
        label(1e10),
        offsets_shifted,
        two_byte_record,
        gifs,
        not_recordio,
        no_index,
    ],
    ids=[
        "label-7",
        "label-minus-1",
        "label-1e10",
        "idx-offsets",
        "2-byte-record",
        "gif-records",
        "not-recordio",
        "no-idx",
    ],  # fmt: skip
)
def test_check_reports_an_error_for_every_input_training_refuses(tmp_path, make):
    rec = make(tmp_path)
    refusal = train_refuses(rec)
    assert refusal is not None, "the table holds only inputs that training refuses"
    assert check_errors(rec), f"check found no error where training says: {refusal}"
    labels = str(tmp_path / "lists" / "train_labels.txt")
    assert check_errors(rec, label_map=labels), "with --label-map given too"


def test_check_passes_what_training_takes(tmp_path):
    rec = good(tmp_path)
    assert train_refuses(rec) is None
    assert check_errors(rec) == []
    assert check_errors(rec, label_map=str(tmp_path / "lists" / "train_labels.txt")) == []


def test_a_label_map_of_another_run_nearby_is_not_taken(tmp_path):
    rec = good(tmp_path)
    (tmp_path / "a_old").mkdir()
    (tmp_path / "a_old" / "old_labels.txt").write_text("".join(f"o{k}\t{k}\n" for k in range(10)))
    assert check_errors(rec) == []
    facts = check.gather_facts(
        build_train_parser(argparse.ArgumentParser(add_help=False)).parse_args(
            ["--data-train", str(rec), "--num-classes", str(CLASSES)]
        ),
        CheckOptions(),
    )
    assert facts.label_map == str(tmp_path / "lists" / "train_labels.txt")


def test_a_label_the_map_does_not_give_is_an_error_even_below_num_classes(tmp_path):
    rec = write_rec(tmp_path, [0.0, 1.0, 2.0, 7.0])
    parser = build_train_parser(argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(["--data-train", str(rec), "--num-classes", "10"])
    labels = str(tmp_path / "lists" / "train_labels.txt")
    errors = [
        f for f in check.preflight(args, CheckOptions(label_map=labels)) if f.level == check.ERROR
    ]
    assert any("label 7" in f.what and "does not give" in f.what for f in errors), errors


def test_an_index_cut_to_half_is_an_error_not_a_smaller_num_examples(tmp_path):
    rec = good(tmp_path)
    idx = rec.with_suffix(".idx")
    idx.write_text("".join(idx.read_text().splitlines(keepends=True)[: IMAGES // 2]))
    errors = check_errors(rec)
    assert any(f"lists {IMAGES // 2} records but" in f.what for f in errors), errors
    assert not any("set --num-examples 4" in f.change for f in errors)


def test_a_big_index_is_sampled_and_still_matched_against_the_rec(tmp_path, monkeypatch):
    from engine.train import recfiles

    monkeypatch.setattr(recfiles, "WALK_LIMIT", 2)
    rec = good(tmp_path)
    assert recfiles.survey(str(rec)).problems == []
    shutil.copy(rec.with_suffix(".idx"), tmp_path / "full.idx")
    idx = rec.with_suffix(".idx")
    idx.write_text("".join(idx.read_text().splitlines(keepends=True)[: IMAGES // 2]))
    assert any("training would read only" in p for p in recfiles.survey(str(rec)).problems)
    offsets_shifted(tmp_path / "b")
    assert recfiles.survey(str(tmp_path / "b" / "data" / "train.rec")).problems


def test_old_checkpoints_under_the_prefix_are_an_error_unless_resume_or_fresh(tmp_path):
    rec = good(tmp_path)
    (tmp_path / "m-0002.pt").write_bytes(b"x")
    prefix = ["--model-prefix", str(tmp_path / "m")]
    parser = build_train_parser(argparse.ArgumentParser(add_help=False))
    base = ["--data-train", str(rec), "--num-classes", str(CLASSES), "--num-examples", str(IMAGES)]
    for extra, refused in (([], True), (["--resume"], False), (["--fresh"], False)):
        findings = check.preflight(parser.parse_args([*base, *prefix, *extra]), CheckOptions())
        errors = [f for f in findings if f.level == check.ERROR and "m-0002.pt" in f.what]
        assert bool(errors) == refused, (extra, findings)
