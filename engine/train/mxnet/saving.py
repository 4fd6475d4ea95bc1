"""MXNet checkpoint files in the format mx.model.load_checkpoint reads, each written atomically.

The names and the search for the newest checkpoint are shared with the torch engine (engine.train.checkpoints).
"""

from __future__ import annotations

from engine.paths import write_atomic
from engine.train.checkpoints import symbol_path


def save_params(path: str, arg_params: dict, aux_params: dict) -> None:
    """The params format mx.model.load_checkpoint reads: 'arg:NAME' and 'aux:NAME' NDArrays."""
    import mxnet as mx

    data = {f"arg:{k}": v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    data.update({f"aux:{k}": v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    write_atomic(path, lambda tmp: mx.nd.save(tmp, data))


def load_params(path: str) -> tuple[dict, dict]:
    import mxnet as mx

    arg_params: dict = {}
    aux_params: dict = {}
    for key, value in mx.nd.load(path).items():
        kind, name = key.split(":", 1)
        (arg_params if kind == "arg" else aux_params)[name] = value
    return arg_params, aux_params


def save_symbol(prefix: str, symbol) -> None:
    write_atomic(symbol_path(prefix), symbol.save)


def save_states(path: str, module) -> None:
    write_atomic(path, module.save_optimizer_states)
