"""Out-of-memory diagnosis. GPU lines are quoted from real reports (cited); host lines are real MXNet output."""

import pathlib

from engine.train.oom import diagnose_exit, diagnose_text, failure_lines

LOGS = pathlib.Path(__file__).resolve().parents[1] / "data" / "mxnet_logs"

# github.com/deepinsight/insightface/issues/257 (MXNet 1.x, train_softmax.py)
GPU_1 = "mxnet.base.MXNetError: [11:41:11] src/storage/./pooled_storage_manager.h:108: cudaMalloc failed: out of memory"
# github.com/deepinsight/insightface/issues/1240
GPU_2 = "MXNetError: cudaMalloc retry failed: out of memory"
# the kernel's OOM-killer report as mm/oom_kill.c prints it (dmesg)
KERNEL = (
    "[12345.678901] Out of memory: Killed process 4242 (python) total-vm:52432108kB, anon-rss:23012344kB, "
    "file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:46000kB oom_score_adj:0"
)


def test_gpu_oom_advises_half_the_batch_mirroring_and_float16():
    failure = diagnose_text(
        GPU_1, source="worker 3 on node-d", batch_size=256, gpus=[0, 1, 2, 3], dtype="float32"
    )
    assert "GPU out of memory" in failure.diagnosis
    assert failure.advice[0].startswith(
        "halve --batch-size to 128 (it is per worker: 32 per GPU across 4 GPU(s))"
    )
    assert any("MXNET_BACKWARD_DO_MIRROR=1" in a for a in failure.advice)
    assert any("--dtype float16" in a for a in failure.advice)
    assert failure.message == GPU_1


def test_float16_runs_are_not_told_to_use_float16():
    failure = diagnose_text(GPU_2, batch_size=64, gpus=[0], dtype="float16")
    assert not any("--dtype float16" in a for a in failure.advice)


def test_real_mxnet_cpu_allocation_failure_is_a_host_oom():
    failure = diagnose_text((LOGS / "cpu_bad_alloc.log").read_text(), batch_size=128)
    assert failure.message == "MXNetError: Failed to allocate CPU Memory"
    assert "host out of memory" in failure.diagnosis
    assert failure.advice[1] == "use a smaller --batch-size (e.g. 64)"


def test_std_bad_alloc_is_a_host_oom():
    failure = diagnose_text("terminate called after throwing an instance of 'std::bad_alloc'")
    assert failure is not None and "host" in failure.diagnosis


def test_sigkill_with_the_kernels_report_is_the_oom_killer():
    failure = diagnose_exit(
        -9,
        ["Epoch[3] Batch [200-220]\tSpeed: 812.3 samples/sec"],
        dmesg=KERNEL,
        source="worker 0 on node-a",
    )
    assert "OOM killer" in failure.diagnosis and "Killed process 4242 (python)" in failure.message


def test_a_shells_killed_line_is_a_probable_oom_kill_and_says_how_to_confirm():
    failure = diagnose_exit(137, ["Epoch[3] Batch [200-220]", "Killed"])
    assert "dmesg" in failure.diagnosis


def test_plain_failures_and_clean_exits_are_not_called_oom():
    assert diagnose_exit(1, ["ValueError: bad things"]) is None
    assert (
        diagnose_exit(-9, ["Epoch[0] Batch [0-20]"]) is None
    )  # killed, but nothing says by the OOM killer
    assert diagnose_text("Epoch[0] Train-accuracy=0.5") is None


def test_failure_lines_say_what_happened_why_and_what_to_try():
    lines = failure_lines(diagnose_text(GPU_2, source="worker 1", batch_size=64, gpus=[0]))
    assert (
        lines[0] == f"worker 1: {GPU_2}"
        and lines[1].startswith("diagnosis: ")
        and lines[2].startswith("try: ")
    )
