"""Print pyproject's requirements (base + the given extras) as Python VERSION would resolve them.

`.ci/run` uses it to build the numpy-2 environment on this machine's Python 3.11: the markers are
evaluated as on Python 3.12+, so mxnet and the numpy/opencv/matplotlib caps it forces drop out.
Usage: python .ci/requirements_as.py 3.12 test torch
"""

import sys
import tomllib

from packaging.markers import default_environment
from packaging.requirements import Requirement


def requirements(version: str, extras: list[str]) -> list[str]:
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    env = {
        **default_environment(),
        "python_version": version,
        "python_full_version": version + ".0",
    }
    out = []
    for line in wanted:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(str(req))
    return out


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
