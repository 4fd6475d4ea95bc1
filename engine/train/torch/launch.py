"""The command line of one torch worker (its environment: engine.train.launch.torch_env)."""

from __future__ import annotations

from collections.abc import Sequence

MODULE = "engine.train.torch.run"  # what each process runs: python -m engine.train.torch.run ARGS


def worker_argv(python: str, train_args: Sequence[str]) -> list[str]:
    """The command line of one torch worker: the same train flags on every process."""
    return [python, "-m", MODULE, *train_args]
