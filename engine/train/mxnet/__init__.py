"""The MXNet training engine (`imgscale train --engine mxnet`): Module.fit over ImageRecordIter, ps-lite kvstores.

Nothing here imports mxnet at package import; ``run.main(args)`` loads it. Shared with the torch engine,
in engine/train/: options, the log format, checkpoint names, .rec file discovery.
"""

from __future__ import annotations

import importlib.util
import sys

from engine.errors import UserError


def require_mxnet(what: str = "--engine mxnet", instead: str = "; or use --engine torch") -> None:
    """Where mxnet is not installed: one line saying what to install, and that it needs Python <= 3.11."""
    if importlib.util.find_spec("mxnet") is None:
        raise UserError(
            f"{what}: mxnet is not installed here; MXNet 1.9.1 needs Python <= 3.11 "
            f"(this is {sys.version_info.major}.{sys.version_info.minor}): there, "
            f"pip install mxnet==1.9.1 'numpy<1.24' (mxnet-cu112 on GPUs){instead}"
        )
