"""A recorded-output stand-in for nvidia-smi on test hosts: prints a recorded CSV sample.

The sample is $IMGSCALE_FAKE_NVSMI (a file name in this folder, default normal_4gpu.csv); a
``*.fail`` file is printed once with exit status 9, as nvidia-smi does without a working driver.
``-l N`` / ``--loop=N`` repeats it every N seconds, as the real tool does; other options are
accepted and ignored, since the recordings were made with the query the probes use.
"""

import os
import sys
import time
from pathlib import Path


def loop_seconds(argv: list[str]) -> float | None:
    for i, arg in enumerate(argv):
        if arg in ("-l", "--loop") and i + 1 < len(argv):
            return float(argv[i + 1])
        if arg.startswith("--loop="):
            return float(arg.split("=", 1)[1])
    return None


def main() -> int:
    name = os.environ.get("IMGSCALE_FAKE_NVSMI", "normal_4gpu.csv")
    text = (Path(__file__).parent / name).read_text()
    if name.endswith(".fail"):  # a host whose driver is broken: message and nvidia-smi's status 9
        sys.stdout.write(text)
        return 9
    every = loop_seconds(sys.argv[1:])
    while True:
        sys.stdout.write(text)
        sys.stdout.flush()
        if every is None:
            return 0
        time.sleep(every)  # the tool's own sampling period, like nvidia-smi -l


if __name__ == "__main__":
    sys.exit(main())
