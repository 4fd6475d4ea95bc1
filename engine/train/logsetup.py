"""The training-log format both engines write on stdout (MXNet's common/fit.py lines); engine.train.logparse reads it."""

from __future__ import annotations

import logging
import sys


def node_label(rank: int, host: str) -> str:
    """'Node[0]' as common/fit.py logs it, with the host when the launcher told us: 'Node[0@node-a]'."""
    return f"Node[{rank}@{host}]" if host else f"Node[{rank}]"


def setup_logging(rank: int, host: str) -> None:
    """MXNet's training-log format on stdout, whichever engine trains."""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)-15s {node_label(rank, host)} %(message)s",
        handlers=[logging.StreamHandler(sys.stdout)],
        force=True,
    )
