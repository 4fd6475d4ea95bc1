"""MXNet checkpoint files in the format mx.model.load_checkpoint reads, each written atomically.

The names and the search for the newest checkpoint are shared with the torch engine (engine.train.checkpoints).
"""

from __future__ import annotations

from typing import Any  # mxnet objects: mxnet is imported lazily and ships no type hints

from engine.errors import UserError
from engine.train.checkpoints import save_file, symbol_path


def save_params(path: str, arg_params: dict, aux_params: dict, prefix: str = "") -> None:
    """The params format mx.model.load_checkpoint reads: 'arg:NAME' and 'aux:NAME' NDArrays."""
    import mxnet as mx

    data = {f"arg:{k}": v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    data.update({f"aux:{k}": v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    save_file(prefix or path, path, lambda tmp: mx.nd.save(tmp, data))


def finite(params: dict) -> bool:
    """Every array of ``params`` is free of nan and inf."""
    import numpy as np

    return all(np.isfinite(v.asnumpy()).all() for v in params.values())


def load_params(path: str) -> tuple[dict, dict]:
    import mxnet as mx

    arg_params: dict = {}
    aux_params: dict = {}
    try:
        saved = mx.nd.load(path)
    except mx.base.MXNetError as exc:  # damage the framing check cannot see
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "MXNetError"
        raise UserError(f"{path} cannot be loaded ({first}); move it aside and resume") from None
    for key, value in saved.items():
        kind, name = key.split(":", 1)
        (arg_params if kind == "arg" else aux_params)[name] = value
    return arg_params, aux_params


def save_symbol(prefix: str, symbol: Any) -> None:
    save_file(prefix, symbol_path(prefix), symbol.save)


def save_states(path: str, module: Any, prefix: str = "") -> None:
    save_file(prefix or path, path, module.save_optimizer_states)
