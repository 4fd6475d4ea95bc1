"""Out-of-memory diagnosis: GPU (cudaMalloc), host (std::bad_alloc) and the kernel's OOM killer, with advice."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from engine.events import Failure

GPU_PATTERNS = (
    re.compile(r"cudaMalloc( retry)? failed: out of memory", re.IGNORECASE),
    re.compile(r"CUDA: out of memory", re.IGNORECASE),
    re.compile(r"CUDA out of memory", re.IGNORECASE),
    re.compile(r"cudaErrorMemoryAllocation"),
    re.compile(r"e == cudaSuccess \(2 vs\. 0\)"),
    re.compile(r"(CUBLAS|CUDNN)_STATUS_ALLOC_FAILED"),
    re.compile(r"torch\.cuda\.OutOfMemoryError"),
)
HOST_PATTERNS = (
    re.compile(r"std::bad_alloc"),
    re.compile(r"Failed to allocate CPU Memory", re.IGNORECASE),
    re.compile(r"\bMemoryError\b"),
    re.compile(r"Cannot allocate memory"),
)
KERNEL_PATTERNS = (
    re.compile(r"Out of memory: Kill(ed)? process (?P<pid>\d+) \((?P<name>[^)]*)\)"),
    re.compile(r"oom-kill:.*task=(?P<name>[^,]*),pid=(?P<pid>\d+)"),
    re.compile(r"invoked oom-killer"),
    re.compile(r"Memory cgroup out of memory: Kill(ed)? process (?P<pid>\d+)"),
)
GPU_DIAGNOSIS = "GPU out of memory: the batch's activations and gradients do not fit on the GPU"
HOST_DIAGNOSIS = "host out of memory: an allocation in main memory failed"
KERNEL_DIAGNOSIS = "the kernel's OOM killer ended the process: the host ran out of memory"
SIGKILL_STATUSES = (-9, 137)  # killed by signal 9: Python's returncode, or a shell's 128+9

# Measured with benchmarks/bench_train.py --mirror (MXNet 1.9.1, CPU): the planned executor memory changes by
# only -4% (resnet-18, inception-v3) to +4% (resnet-50), because MXNet never recomputes convolution or
# BatchNorm outputs; so mirroring comes after a smaller batch and float16 in the advice.
MIRROR_EFFECT = (
    "recomputes cheap layers (ReLU, pooling) in backward instead of storing them; in MXNet 1.9.1 this"
    " saves at most a few percent on ResNet/Inception, so try it last"
)


def _matches(patterns: Iterable[re.Pattern[str]], text: str) -> re.Match | None:
    for pattern in patterns:
        m = pattern.search(text)
        if m:
            return m
    return None


def gpu_advice(
    batch_size: int | None, gpus: Sequence[int] | None, dtype: str | None
) -> tuple[str, ...]:
    ngpu = max(1, len(gpus or ()))
    advice = []
    if batch_size:
        half = max(ngpu, batch_size // 2 // ngpu * ngpu)
        advice.append(
            f"halve --batch-size to {half} (it is per worker: {half // ngpu} per GPU across {ngpu} GPU(s));"
            " scale --lr by the same factor"
        )
    else:
        advice.append(
            "use a smaller --batch-size (it is per worker, split across its GPUs); scale --lr with it"
        )
    if dtype != "float16":
        advice.append(
            "train with --dtype float16: activations take half the memory (and tensor-core GPUs run faster)"
        )
    advice.append(f"set MXNET_BACKWARD_DO_MIRROR=1 (imgscale train --mirror): {MIRROR_EFFECT}")
    advice.append("check that no other process holds memory on the same GPU (nvidia-smi)")
    return tuple(advice)


def host_advice(batch_size: int | None, data_nthreads: int | None = None) -> tuple[str, ...]:
    threads = f" (now {data_nthreads})" if data_nthreads else ""
    advice = [
        f"lower --data-nthreads{threads}: each decoding thread holds decoded images in host memory",
        "use a smaller --batch-size" + (f" (e.g. {max(1, batch_size // 2)})" if batch_size else ""),
        "run fewer workers per host, or stop other memory-hungry processes there",
        f"on CPU-only hosts set MXNET_BACKWARD_DO_MIRROR=1 (imgscale train --mirror): {MIRROR_EFFECT}",
    ]
    return tuple(advice)


def diagnose_text(
    text: str,
    source: str = "training",
    batch_size: int | None = None,
    gpus: Sequence[int] | None = None,
    dtype: str | None = None,
    job: str = "",
    last_lines: tuple[str, ...] = (),
) -> Failure | None:
    """A Failure with diagnosis and advice when `text` (a line, a log, an error message) shows an OOM."""
    m = _matches(GPU_PATTERNS, text)
    if m:
        advice = gpu_advice(batch_size, gpus, dtype)
        return _failure(source, _line_of(text, m), GPU_DIAGNOSIS, advice, job, last_lines)
    m = _matches(KERNEL_PATTERNS, text)
    if m:
        return _kernel_failure(source, _line_of(text, m), batch_size, job, last_lines)
    m = _matches(HOST_PATTERNS, text)
    if m:
        advice = host_advice(batch_size)
        return _failure(source, _line_of(text, m), HOST_DIAGNOSIS, advice, job, last_lines)
    return None


def diagnose_exit(
    exit_status: int | None,
    last_lines: Sequence[str] = (),
    dmesg: str = "",
    source: str = "training",
    batch_size: int | None = None,
    gpus: Sequence[int] | None = None,
    dtype: str | None = None,
    job: str = "",
) -> Failure | None:
    """Diagnose a process that ended: an OOM message in its last lines, or SIGKILL with the kernel's OOM report."""
    lines = tuple(last_lines)
    found = diagnose_text("\n".join(lines), source, batch_size, gpus, dtype, job, lines)
    if found is not None:
        return found
    if exit_status not in SIGKILL_STATUSES:
        return None
    kernel = _matches(KERNEL_PATTERNS, dmesg)
    if kernel:
        return _kernel_failure(source, _line_of(dmesg, kernel), batch_size, job, lines)
    if lines and lines[-1].strip() == "Killed":  # what a shell prints for a SIGKILLed child
        return _kernel_failure(
            source,
            "Killed (SIGKILL) - most likely the kernel's OOM killer",
            batch_size,
            job,
            lines,
            certain=False,
        )
    return None


def _kernel_failure(
    source: str,
    message: str,
    batch_size: int | None,
    job: str,
    lines: Sequence[str],
    certain: bool = True,
) -> Failure:
    diagnosis = KERNEL_DIAGNOSIS
    if not certain:
        diagnosis += " (confirm with `dmesg | grep -i oom` on the host)"
    return _failure(source, message, diagnosis, host_advice(batch_size), job, lines)


def _failure(
    source: str,
    message: str,
    diagnosis: str,
    advice: tuple[str, ...],
    job: str,
    lines: Sequence[str],
) -> Failure:
    return Failure(
        source=source,
        message=message,
        diagnosis=diagnosis,
        advice=advice,
        job=job,
        last_lines=tuple(lines),
    )


def _line_of(text: str, match: re.Match) -> str:
    """The whole line holding the match, trimmed, for the failure's message."""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end >= 0 else len(text)].strip()[:300]


def failure_lines(failure: Failure) -> list[str]:
    """The failure as log lines: what happened, why, and what to change."""
    lines = [f"{failure.source}: {failure.message}", f"diagnosis: {failure.diagnosis}"]
    lines += [f"try: {advice}" for advice in failure.advice]
    return lines
