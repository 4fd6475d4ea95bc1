"""The torch engine never reports success for training that cannot be right (issue 21 items 1, 2):
a diverged loss, undecodable images, a damaged newest checkpoint, a folder that takes no files."""

from __future__ import annotations

import io
import logging
import math
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch engine is an extra: pip install -e .[torch]")

from engine import recordio  # noqa: E402
from engine.errors import UserError  # noqa: E402
from engine.train.options import validate  # noqa: E402
from engine.train.torch import fit  # noqa: E402
from engine.train.torch.run import build_parser  # noqa: E402

CPU = fit.Rank(0, 1, 0, torch.device("cpu"))
TINY = ["--network", "resnet", "--num-layers", "18", "--width", "4", "--image-shape", "3,8,8",
        "--num-classes", "2", "--batch-size", "4", "--disp-batches", "1", "--kv-store", "local",
        "--data-nthreads", "1", "--seed", "0"]  # fmt: skip


def tiny(*flags: str):
    args = build_parser().parse_args([*TINY, *flags])
    validate(args)
    return args


def bench(prefix, *flags: str):
    return tiny("--benchmark", "--num-batches", "2", "--model-prefix", str(prefix), *flags)


def test_a_non_finite_loss_stops_naming_epoch_and_batch_and_saves_nothing(tmp_path, monkeypatch):
    real = fit.build_trainer

    def poisoned(*a, **k):  # what an lr of 1e308 did: every weight inf
        trainer = real(*a, **k)
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.fill_(math.inf)
        return trainer

    monkeypatch.setattr(fit, "build_trainer", poisoned)
    with pytest.raises(UserError, match=r"loss is not finite .* at epoch 0 batch 0"):
        fit.train(bench(tmp_path / "m", "--num-epochs", "1"), CPU)
    assert not list(tmp_path.glob("m-*.pt"))


def test_weights_that_diverged_in_the_last_step_are_not_saved(tmp_path, monkeypatch):
    real_step = fit.Trainer.step

    def last_step_diverges(self, batch, meters, nbatch=0):
        real_step(self, batch, meters, nbatch)
        if nbatch == 1:  # the epoch's last: no loss is computed from these weights
            with torch.no_grad():
                next(self.model.parameters()).fill_(math.nan)

    monkeypatch.setattr(fit.Trainer, "step", last_step_diverges)
    with pytest.raises(UserError, match=r"weights are not finite"):
        fit.train(bench(tmp_path / "m", "--num-epochs", "1"), CPU)
    assert not list(tmp_path.glob("m-*.pt"))


def gif_rec(folder, count=8, gifs=None) -> str:
    """A --pass-through .rec of GIFs (MXNet's and OpenCV's readers decode none of them), or of
    JPEGs with GIFs at the positions ``gifs``."""
    from PIL import Image

    rec = str(folder / "gif.rec")
    writer = recordio.IndexedRecordWriter(str(folder / "gif.idx"), rec)
    rng = np.random.default_rng(0)
    for i in range(count):
        out = io.BytesIO()
        kind = "GIF" if gifs is None or i in gifs else "JPEG"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(out, format=kind)
        writer.write_idx(i, recordio.pack(recordio.IRHeader(0, float(i % 2), i, 0), out.getvalue()))
    writer.close()
    return rec


def test_undecodable_images_stop_training_naming_the_file(tmp_path):
    rec = gif_rec(tmp_path)
    args = tiny("--data-train", rec, "--num-examples", "8", "--num-epochs", "1",
                "--model-prefix", str(tmp_path / "m"))  # fmt: skip
    with pytest.raises(
        UserError,
        match=rf"8 of 8 images in epoch 0 did not decode.* --max-bad-images 0.01 .*{rec} \(offset",
    ):
        fit.train(args, CPU)
    assert not list(tmp_path.glob("m-*.pt"))


def test_undecodable_images_are_counted_each_epoch_and_judged_against_the_bound(tmp_path, caplog):
    rec = gif_rec(tmp_path, gifs=(5,))  # one GIF among 8 JPEGs: 12.5 %
    caplog.set_level(logging.INFO, "imgscale.train")
    flags = ["--data-train", rec, "--num-examples", "8", "--num-epochs", "1"]
    assert fit.train(tiny(*flags, "--max-bad-images", "0.2"), CPU) == 0
    assert f"Epoch[0] Undecodable images: 1 of 8 (first: {rec} (offset" in caplog.text
    with pytest.raises(UserError, match=r"1 of 8 images in epoch 0 did not decode"):
        fit.train(tiny(*flags), CPU)  # the default bound: 1 %


def test_a_damaged_newest_checkpoint_is_skipped_and_the_one_before_resumes(tmp_path, caplog):
    prefix = tmp_path / "m"
    assert fit.train(bench(prefix, "--num-epochs", "2", "--keep-checkpoints", "0"), CPU) == 0
    newest = tmp_path / "m-0002.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(UserError, match=r"--load-epoch 2: .*m-0002.pt cannot be loaded .*m-0001"):
        fit.resume_checkpoint(bench(prefix, "--num-epochs", "3", "--load-epoch", "2"))
    caplog.set_level(logging.INFO, "imgscale.train")
    assert fit.train(bench(prefix, "--num-epochs", "3", "--resume"), CPU) == 0
    assert f"skipping checkpoint {newest}" in caplog.text
    assert f"Resuming from {tmp_path / 'm-0001.pt'}: epoch 1" in caplog.text


def test_a_first_run_over_a_prefix_with_checkpoints_is_refused_unless_fresh(tmp_path):
    prefix = tmp_path / "m"
    assert fit.train(bench(prefix, "--num-epochs", "1"), CPU) == 0
    with pytest.raises(UserError, match=r"already holds 1 checkpoint.*--resume.*--fresh"):
        bench(prefix, "--num-epochs", "1")
    assert fit.train(bench(prefix, "--num-epochs", "1", "--fresh"), CPU) == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a checkpoint of the tiny network (about 300 KB) does not fit."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield folder
    subprocess.run(
        ["umount", "-l", str(folder)], check=False
    )  # lazy: a failed writer may hold a file


def test_a_full_disk_while_saving_is_one_line_naming_the_folder(small_disk):
    with pytest.raises(UserError, match=rf"cannot write m-0001.pt in {small_disk} \(no space left"):
        fit.train(bench(small_disk / "m", "--num-epochs", "1"), CPU)
    assert not [p for p in os.listdir(small_disk) if p.endswith((".pt", ".tmp"))]


def test_a_read_only_prefix_folder_is_one_line_naming_it(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(UserError, match=rf"cannot write m-args.json in {small_disk} \(read-only"):
        fit.train(bench(small_disk / "m", "--num-epochs", "1"), CPU)
