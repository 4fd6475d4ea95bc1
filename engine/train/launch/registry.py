"""The one place that decides a job's engine: asked for by name, else read from its command."""

from __future__ import annotations

import os
from collections.abc import Sequence

from engine.errors import UserError

from .engines import Engine
from .mxnet_engine import MXNetEngine
from .torch_engine import TorchEngine

ENGINES: dict[str, Engine] = {e.name: e for e in (MXNetEngine(), TorchEngine())}
DEFAULT = "mxnet"  # tools/launch.py's engine, and the tutorial's


def engine_named(name: str | None) -> Engine:
    """The engine called ``name`` (None: the default); a wrong name is the user's mistake."""
    key = name or DEFAULT
    if key not in ENGINES:
        raise UserError(f"--engine {name}: use {' or '.join(ENGINES)}")
    return ENGINES[key]


def engine_for(name: str | None, command: Sequence[str] = ()) -> Engine:
    """A launch's engine: the one asked for, else the one its command trains with."""
    return engine_named(name or command_engine(command))


def command_engine(argv: Sequence[str]) -> str | None:
    """The engine an `imgscale train` command asks for (``--engine NAME``), else None."""
    words = list(argv)
    if "engine.train.torch.run" in words:
        return "torch"
    for i, word in enumerate(words):
        name = word.split("=", 1)[1] if word.startswith("--engine=") else None
        if word == "--engine" and i + 1 < len(words):
            name = words[i + 1]
        if name in ENGINES:  # a user script's own --engine flag means nothing to us
            return name
    return None


def job_kind(command: Sequence[str]) -> str:
    """A job's kind, which also starts its id: bench-… and testio-… runs are not training runs."""
    if "--benchmark" in command:
        return "bench"
    return "testio" if "--test-io" in command else "train"


def is_imgscale_train(argv: Sequence[str]) -> bool:
    """Whether a launched command is our own trainer (`imgscale train …`, `python -m engine train
    …`, `python -m engine.train.run …`), whose flags (--resume, --fresh …) we may read."""
    words = list(argv)
    if any(w in ("engine.train.run", "engine.train.torch.run") for w in words):
        return True
    names = [os.path.basename(w) for w in words[:3]]
    return "train" in words[:4] and ("imgscale" in names or "engine" in words[:3])
