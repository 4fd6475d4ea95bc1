"""A recorded-output stand-in for nvidia-smi on test hosts: answers --query-gpu from a recorded sample.

The sample is $IMGSCALE_FAKE_NVSMI (a file name in this folder, default normal_4gpu.csv), written by
record.py: a ``# query:`` line names the recorded fields, then the rows. The fake prints exactly the
fields asked for with ``--query-gpu=``, in the order asked, as nvidia-smi does; a field the sample
does not hold is refused like nvidia-smi refuses an unknown one (exit status 2). Lines that are not
rows (a GPU fallen off the bus) are printed as recorded. ``--format`` must be
``csv,noheader,nounits``, the only format recorded. A ``*.fail`` file is printed once with exit
status 9, as nvidia-smi does without a working driver. ``-l N`` / ``--loop=N`` repeats the answer
every N seconds, as the real tool does.
"""

import os
import sys
import time
from pathlib import Path

FORMAT = "csv,noheader,nounits"


def option(argv: list[str], short: str | None, long: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in (short, long) and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
    return None


def read_sample(text: str) -> tuple[list[str], list[str]]:
    """(recorded field names, output lines without the comment lines)."""
    fields: list[str] = []
    lines = []
    for line in text.splitlines():
        if line.startswith("# query:"):
            fields = line.split(":", 1)[1].strip().split(",")
        elif not line.startswith("#"):
            lines.append(line)
    return fields, lines


def answer(fields: list[str], lines: list[str], asked: list[str]) -> str:
    out = []
    for line in lines:
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(fields):
            out.append(line)  # not a row: an error line, printed as nvidia-smi printed it
            continue
        row = dict(zip(fields, values, strict=True))
        out.append(", ".join(row[name] for name in asked))
    return "".join(line + "\n" for line in out)


def main() -> int:
    name = os.environ.get("IMGSCALE_FAKE_NVSMI", "normal_4gpu.csv")
    text = (Path(__file__).parent / name).read_text()
    if name.endswith(".fail"):  # a host whose driver is broken: message and nvidia-smi's status 9
        sys.stdout.write(text)
        return 9
    argv = sys.argv[1:]
    query, form = option(argv, None, "--query-gpu"), option(argv, None, "--format")
    fields, lines = read_sample(text)
    if query is None or form != FORMAT:
        sys.stderr.write(f"fake nvidia-smi: give --query-gpu=… --format={FORMAT}\n")
        return 2
    asked = query.split(",")
    unknown = [f for f in asked if f not in fields]
    if unknown:
        sys.stdout.write(f'Field "{unknown[0]}" is not a valid field to query.\n')
        return 2
    every = option(argv, "-l", "--loop")
    while True:
        sys.stdout.write(answer(fields, lines, asked))
        sys.stdout.flush()
        if every is None:
            return 0
        time.sleep(float(every))  # the tool's own sampling period, like nvidia-smi -l


if __name__ == "__main__":
    sys.exit(main())
