"""`imgscale train` and `imgscale check` through the real CLI: one clear line for mistakes, exit statuses."""

import sys

from engine.cli import main
from engine.recordio import frame, pack


def test_train_without_data_is_one_line_and_exit_2(capsys):
    assert main(["train", "--kv-store", "local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data-train is required" in err


def test_train_with_a_missing_data_folder_names_it(tmp_path, capsys):
    assert main(["train", "--data-train", str(tmp_path / "nope")]) == 2
    assert f"--data-train {tmp_path / 'nope'}: no such file or directory" in capsys.readouterr().err


def test_bad_config_file_names_the_file_and_key(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text("num-layer = 18\n")
    assert main(["train", "--config", str(cfg), "--benchmark"]) == 2
    assert "run.toml: unknown option 'num_layer'" in capsys.readouterr().err


def test_torch_engine_missing_is_a_user_error(monkeypatch, capsys):
    monkeypatch.setitem(
        sys.modules, "engine.train.torch.run", None
    )  # as if the torch engine were not there
    assert main(["train", "--engine", "torch", "--benchmark"]) == 2
    assert "--engine torch: not available here" in capsys.readouterr().err


def test_check_reports_findings_and_fails_on_errors(tmp_path, capsys):
    train, lists = tmp_path / "train", tmp_path / "lists"
    train.mkdir()
    lists.mkdir()
    # two whole image records (check reads their framing and labels, decodes nothing)
    (train / "d_0.rec").write_bytes(
        b"".join(frame(pack((0, float(i), i, 0), b"\xff\xd8" + b"x" * 6)) for i in range(2))
    )
    (lists / "d_0.idx").write_text("0\t0\n1\t40\n")
    (lists / "d_labels.txt").write_text("".join(f"c{i}\t{i}\n" for i in range(5)))
    argv = [
        "check",
        "--data-train",
        str(train),
        "--num-examples",
        "2",
        "--batch-size",
        "2",
        "--kv-store",
        "local",
    ]
    assert main([*argv, "--num-classes", "7"]) == 1
    out = capsys.readouterr().out
    assert "error   --num-classes 7 but" in out and "-> set --num-classes 5" in out
    assert main([*argv, "--num-classes", "5"]) == 0
