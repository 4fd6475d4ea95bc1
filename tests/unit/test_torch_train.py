"""The torch engine end to end on CPU: 2-process Gloo training learns the demo data, resume, MXNet-format logs.

Each process is started the way a launcher starts it: `python -m engine.train.torch.run FLAGS` with the
torchrun environment from ``torch_env`` (MASTER_ADDR=127.0.0.1, a free port, RANK, WORLD_SIZE, LOCAL_RANK).
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest
import torchdata

torch = pytest.importorskip("torch", reason="the torch engine is an extra: pip install -e .[torch]")

from engine.train.launch.torch_env import torch_env
from engine.train.logparse import latest_summaries, parse_log
from engine.train.torch.launch import worker_argv
from engine.train.torch.run import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLASSES = 4  # chance is 25 %
# MXNet's Speedometer line, byte for byte: '%.2f samples/sec' then '\t%s=%f' per metric
SPEEDOMETER = re.compile(
    r"Epoch\[\d+\] Batch \[\d+-\d+\]\tSpeed: \d+\.\d\d samples/sec"
    r"\taccuracy=\d\.\d{6}\ttop_k_accuracy_2=\d\.\d{6}\tcross-entropy=\d+\.\d{6}$"
)


@pytest.fixture(scope="module")
def demo_rec(tmp_path_factory):
    """The demo dataset (4 classes x 100 images), listed 75/25 and packed at short edge 40 like im2rec."""
    data = torchdata.demo_rec(tmp_path_factory.mktemp("demo"), CLASSES, 100, 0.75, 40)
    return {"train": str(data / "demo_train.rec"), "val": str(data / "demo_val.rec")}


def _flags(demo_rec, **extra):
    flags = {
        "data-train": demo_rec["train"],
        "data-val": demo_rec["val"],
        "image-shape": "3,32,32",
        "num-layers": 18,
        "width": 16,
        "num-classes": CLASSES,
        "batch-size": 16,
        "lr": 0.1,
        "lr-step-epochs": 6,
        "disp-batches": 5,
        "data-nthreads": 1,
        "random-resized-crop": 1,
        "min-random-area": 0.3,
        "seed": 0,
        "kv-store": "dist_sync",
    }
    flags.update(extra)
    out = []
    for key, value in flags.items():
        out += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return out


def _run(flags, world=1, timeout=240):
    """Start `world` ranks as a launcher would; return each rank's (exit status, output)."""
    envs = torch_env(["127.0.0.1"], world, "127.0.0.1", free_port()) if world > 1 else [{}]
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            worker_argv(sys.executable, flags),
            cwd=ROOT,
            env={**base, **env},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for env in envs
    ]
    try:
        return [(p.wait(timeout=timeout), p.stdout.read()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _validation(output):
    return [float(v) for v in re.findall(r"Validation-accuracy=(\d\.\d+)", output)]


@pytest.mark.slow
def test_two_gloo_ranks_learn_the_demo_classes(demo_rec):
    results = _run(_flags(demo_rec, **{"num-epochs": 8}), world=2)
    assert [status for status, _ in results] == [0, 0], (
        results[0][1][-2000:] + results[1][1][-2000:]
    )
    accuracy = [_validation(out) for _, out in results]
    assert len(accuracy[0]) == 8
    # Seeded run: about 0.80 after 8 epochs; 0.60 leaves room for thread timing, far above chance (0.25).
    assert accuracy[0][-1] >= 0.60
    # validation counts are summed over ranks: one figure for the job
    assert accuracy[0] == accuracy[1]
    out = results[0][1]
    assert "rank 0 of 2" in out and "rank 1 of 2" in results[1][1]
    # 300 training images / 2 ranks / 16 per batch = 9 batches per rank per epoch
    assert "9 batches per epoch" in out


@pytest.mark.slow
def test_the_console_log_parser_reads_every_line_kind(demo_rec, tmp_path):
    flags = _flags(
        demo_rec, **{"num-epochs": 1, "model-prefix": tmp_path / "m", "top-k": 2, "loss": "ce"}
    )
    status, out = _run(flags)[0]
    assert status == 0, out[-2000:]
    speed_lines = [line for line in out.splitlines() if "Speed:" in line]
    assert speed_lines and all(SPEEDOMETER.search(line) for line in speed_lines)
    events = parse_log(out)
    throughput = [e for e in events if type(e).__name__ == "Throughput"]
    assert len(throughput) == len(speed_lines) and all(e.samples_per_sec > 0 for e in throughput)
    assert (
        throughput[0].rank == 0
        and throughput[0].epoch == 0
        and throughput[0].metrics[0][0] == "accuracy"
    )
    (summary,) = latest_summaries(events)
    assert (
        summary.epoch == 0
        and summary.train[0][0] == "accuracy"
        and summary.validation[0][0] == "accuracy"
    )
    assert summary.time_cost_s > 0 and summary.checkpoint == f"{tmp_path / 'm'}-0001.pt"


@pytest.mark.slow
def test_resume_continues_the_epoch_count_and_the_lr_schedule(demo_rec, tmp_path):
    prefix = tmp_path / "ck" / "m"
    first = _flags(
        demo_rec, **{"num-epochs": 2, "lr-step-epochs": 3, "model-prefix": prefix, "data-val": ""}
    )
    status, out = _run(first)[0]
    assert status == 0, out[-2000:]
    assert sorted(p.name for p in prefix.parent.glob("m-*.pt")) == ["m-0001.pt", "m-0002.pt"]
    again = _flags(
        demo_rec,
        **{
            "num-epochs": 4,
            "lr-step-epochs": 3,
            "model-prefix": prefix,
            "data-val": "",
            "resume": True,
        },
    )
    status, out = _run(again)[0]
    assert status == 0, out[-2000:]
    assert "Resuming from" in out and "m-0002.pt" in out
    epochs_run = sorted(set(re.findall(r"Epoch\[(\d+)\] Time cost", out)))
    assert epochs_run == ["2", "3"]  # epochs 0 and 1 are not trained again
    state = torch.load(f"{prefix}-0004.pt", weights_only=False)
    batches = state["epoch_batches"]  # 300 images / 16 = 18 full batches on one rank
    assert (state["epoch"], state["batch"], batches) == (4, 0, 18)
    assert state["scheduler"]["last_epoch"] == 4 * batches  # the step count went on from 2 epochs
    lr = state["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.1 * 0.1)  # stepped down once, at epoch 3


@pytest.mark.slow
def test_resume_from_a_mid_epoch_checkpoint_skips_the_trained_batches(demo_rec, tmp_path):
    prefix = tmp_path / "m"
    flags = _flags(
        demo_rec,
        **{
            "num-epochs": 1,
            "model-prefix": prefix,
            "data-val": "",
            "save-batches": 4,
            "num-batches": 10,
        },
    )
    status, out = _run(flags)[0]
    assert status == 0, out[-2000:]
    # The epoch checkpoint supersedes the batch ones, which are removed; bring one back as a crash would leave it.
    assert not list(tmp_path.glob("m-0000.b*.pt"))
    state = torch.load(f"{prefix}-0001.pt", weights_only=False)
    state.update(epoch=0, batch=8)
    torch.save(state, f"{prefix}-0000.b000008.pt")
    (tmp_path / "m-0001.pt").unlink()
    status, out = _run(flags + ["--resume"])[0]
    assert status == 0, out[-2000:]
    assert "epoch 0, batch 8" in out
    # only batches 8 and 9 are left: too few for a Speedometer window of 5
    assert re.findall(r"Epoch\[0\] Batch \[(\d+)-(\d+)\]", out) == []
    assert (tmp_path / "m-0001.pt").exists() and not list(tmp_path.glob("m-0000.b*.pt"))


def test_benchmark_and_test_io_report_speed_without_training_data_reads(demo_rec):
    flags = _flags(demo_rec, **{"num-epochs": 1, "num-batches": 6, "disp-batches": 3})
    # bf16 autocast and mirroring (activation checkpointing) also run on the CPU
    status, out = _run(flags + ["--benchmark", "--data-val", "", "--amp", "bf16", "--mirror"])[0]
    assert status == 0, out[-2000:]
    assert "bf16 on, mirror on" in out
    assert (
        len(re.findall(r"Epoch\[0\] Batch \[\d+-\d+\]\tSpeed", out)) == 1
        and "Validation" not in out
    )
    status, out = _run(flags + ["--test-io"])[0]
    assert status == 0, out[-2000:]
    assert re.search(r"test-io: 96 images in [\d.]+ s: [\d.]+ images/sec", out)
    readings = parse_log(out)
    # two test-io Batch lines count as throughput for the console, then the run's whole summary
    assert [r.summary for r in readings] == [False, False, True]
    assert readings[-1].samples_per_sec == float(re.search(r"([\d.]+) images/sec", out)[1])


def test_a_label_outside_num_classes_is_one_clear_line(demo_rec):
    status, out = _run(_flags(demo_rec, **{"num-epochs": 1, "num-classes": 2}))[0]
    assert status == 2
    assert "--num-classes" in out and "Traceback" not in out


def test_several_gpus_without_a_launcher_spawn_one_process_each(demo_rec, monkeypatch, capfd):
    """Here without CUDA each spawned rank stops with the one-line GPU error; the parent names it."""
    from engine.errors import UserError
    from engine.train.torch import run

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = run.build_parser().parse_args(_flags(demo_rec, gpus="0,1", **{"num-epochs": 1}))
    args.func = lambda _args: 0  # as the `imgscale` CLI leaves it: must not stop the spawn
    with pytest.raises(UserError, match="exited with status 2"):
        run.main(args)
    assert "--gpus 0,1: torch" in capfd.readouterr().err  # the rank's own one-line error
