"""Record real nvidia-smi output for the fake: `python tests/data/nvsmi/record.py NAME.csv` on a GPU host.

The file gets a provenance line (host, time, driver, exit status), a ``# query:`` line naming the
fields in the order they were asked for, then what nvidia-smi printed (stdout and stderr, verbatim).
tests/data/nvsmi/fake_nvidia_smi.py answers any query over a subset of those fields from it.
Record every field the probes query (engine.cluster.probes.nvsmi.QUERY_FIELDS) plus a few more, in the
tool's own order, so that a probe asking in another order is answered in that order.
"""

from __future__ import annotations

import datetime
import pathlib
import socket
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository root, for engine.cluster.probes.nvsmi

from engine.cluster.probes.nvsmi import QUERY_FIELDS  # noqa: E402

EXTRA_FIELDS = ("pci.bus_id", "driver_version", "mig.mode.current")
RECORD_FIELDS = (*QUERY_FIELDS, *EXTRA_FIELDS)


def record(target: pathlib.Path) -> int:
    query = ",".join(RECORD_FIELDS)
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    target.write_text(
        f"# recorded by tests/data/nvsmi/record.py on {socket.gethostname()} at {when}, "
        f"nvidia-smi exit status {out.returncode}\n# query: {query}\n{out.stdout}"
    )
    print(f"{target}: {len(out.stdout.splitlines())} line(s), exit status {out.returncode}")
    return out.returncode


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: record.py NAME.csv  (written into tests/data/nvsmi/)")
    sys.exit(record(HERE / pathlib.Path(sys.argv[1]).name))
