"""The MXNet trainer's child process turns how training ended into the exit status the launcher reads."""

import pytest

from engine.errors import UserError
from engine.train.mxnet import run


@pytest.mark.parametrize(
    ("ending", "status"),
    [
        (SystemExit(), 0),  # a ps-lite scheduler or server: `import mxnet` serves, then sys.exit()
        (SystemExit(0), 0),
        (SystemExit(3), 3),
        (SystemExit("stopped: bad flag"), 1),
        (UserError("--data-train x: no .rec files"), 2),
        (RuntimeError("boom"), 1),
    ],
)
def test_child_exit_status(monkeypatch, ending, status):
    def train(args):
        raise ending

    monkeypatch.setattr(run, "_train", train)
    assert run._child(None) == status
