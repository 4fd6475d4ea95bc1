"""Issue 11, decided: NaN/inf labels are refused and reported by pack; paths leaving ROOT are read (as
im2rec does) and `imgscale check` warns about both."""

import argparse

import cv2
import numpy as np

from engine import recordio
from engine.prep import pack
from engine.prep.pack import PackOptions
from engine.prep.report import read_report
from engine.train.check import WARNING, check_lists
from engine.train.facts import gather_facts
from engine.train.options import build_train_parser


def test_nan_and_inf_labels_are_skipped_and_reported(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((20, 20, 3), np.uint8))[1].tobytes())
    lines = ["0\t1.000000\ta.jpg", "1\tnan\ta.jpg", "2\tinf\ta.jpg", "3\t-inf\ta.jpg"]
    (tmp_path / "d.lst").write_text("\n".join(lines) + "\n")
    result = pack.pack_lists([tmp_path / "d.lst"], root, PackOptions(num_thread=1))
    assert [k for k, _ in recordio.read_index(tmp_path / "d.idx")] == [0]
    reasons = {row["line"]: row["reason"] for row in read_report(tmp_path / "d.skipped.tsv")}
    assert reasons == {
        "2": "label nan is not a finite number",
        "3": "label inf is not a finite number",
        "4": "label -inf is not a finite number",
    }
    assert (result.records, result.skipped) == (1, 3)


def test_check_warns_about_paths_leaving_root_and_non_finite_labels(tmp_path):
    lst = tmp_path / "d.lst"
    lst.write_text(
        "0\t1.0\tn01/a.jpg\n1\t2.0\t../../etc/x.jpg\n2\tnan\tn01/b.jpg\n3\t1.0\t/abs/c.jpg\n"
    )
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "d.rec").write_bytes(recordio.MAGIC_BYTES + bytes(4))
    args = build_train_parser(argparse.ArgumentParser()).parse_args(
        ["--data-train", str(tmp_path / "train"), "--num-examples", "4"]
    )
    args.lst = [str(lst)]
    facts = gather_facts(args, probe_local=False)  # a NaN or inf label: no OverflowError either
    assert facts.list_oddities == {
        str(lst): [
            "line 2: ../../etc/x.jpg leaves ROOT",
            "line 3: label nan is not finite",
            "line 4: /abs/c.jpg leaves ROOT",
        ]
    }
    (finding,) = check_lists(facts)
    assert finding.level == WARNING and "3 line(s) to look at" in finding.what
