"""What one host says about itself before a job: versions, GPUs, the data files (run there).

``python -m engine.train.launch.hostreport [--torch] [--port=N] PATH …`` prints one JSON object; the pre-flight
(engine.train.launch.preflight_hosts) runs it on every host and compares the answers. Standard library only,
plus torch when asked (for its version and the GPUs it sees).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from collections.abc import Sequence


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_facts() -> dict:
    """torch's version, its CUDA and the GPUs it sees (None when torch is not installed)."""
    if importlib.util.find_spec("torch") is None:
        return {"torch": None, "cuda": None, "gpus": None}
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": gpus}


def data_facts(paths: Sequence[str]) -> dict[str, list]:
    """Every .rec a data path names (the file, or a folder's .rec files) with its size, and each
    .idx beside it (or in the parent's sibling folders, where `imgscale place` keeps them) with its
    size and SHA-256. A path that does not exist maps to an empty list."""
    out: dict[str, list] = {}
    for path in paths:
        where = os.path.expanduser(path)  # ~ is this host's home (the argv reached us quoted)
        recs = [where] if os.path.isfile(where) else _recs_in(where)
        out[path] = [_rec_entry(rec) for rec in recs]
    return out


def _recs_in(folder: str) -> list[str]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if n.endswith(".rec")]


def _rec_entry(rec: str) -> list:
    idx = _index_of(rec)
    if idx is None:
        return [os.path.basename(rec), os.path.getsize(rec), None, None]
    with open(idx, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return [os.path.basename(rec), os.path.getsize(rec), os.path.getsize(idx), digest]


def _index_of(rec: str) -> str | None:
    folder = os.path.dirname(os.path.abspath(rec))
    stem = os.path.basename(rec)[: -len(".rec")]
    parent = os.path.dirname(folder)
    try:
        siblings = sorted(os.path.join(parent, d) for d in os.listdir(parent))
    except OSError:
        siblings = []
    for where in [folder, parent, *siblings]:
        candidate = os.path.join(where, stem + ".idx")
        if os.path.isfile(candidate):
            return candidate
    return None


def port_free(port: int) -> bool:
    """Whether this host could listen on ``port`` now (the rendezvous binds it on the master)."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def report(paths: Sequence[str], with_torch: bool, port: int | None = None) -> dict:
    facts: dict = {
        "imgscale": version("imgscale"),
        "python": platform.python_version(),
        "mxnet": version("mxnet") or version("mxnet-cu112"),
        "data": data_facts(paths),
    }
    if with_torch:
        facts.update(torch_facts())
    if port:
        facts["port_free"] = port_free(port)
    return facts


def main(argv: Sequence[str]) -> int:
    """ARGV: [--torch] [--port=N] PATH …"""
    port = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--port=")), None)
    paths = [a for a in argv if not a.startswith("--")]
    print(json.dumps(report(paths, "--torch" in argv, port)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
