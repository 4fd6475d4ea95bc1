"""The training-log format both engines write on stdout (MXNet's common/fit.py lines); engine.train.logparse reads it."""

from __future__ import annotations

import csv
import logging
import os
import sys
from collections.abc import Iterable


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


def append_summary(
    prefix: str,
    epoch: int,
    seconds: float,
    train: Iterable[tuple[str, float]],
    validation: Iterable[tuple[str, float]],
) -> None:
    """PREFIX-summary.csv: one row per epoch, for plots and for comparing runs (rank 0 writes it)."""
    path = f"{prefix}-summary.csv"
    row = {"epoch": epoch, "time_s": f"{seconds:.3f}"}
    row.update({f"train_{k}": f"{v:.6f}" for k, v in train})
    row.update({f"val_{k}": f"{v:.6f}" for k, v in validation})
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
