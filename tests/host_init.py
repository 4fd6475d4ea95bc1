"""PID 1 of one sshd test host's PID and mount namespace (started by tests/sshd.py under ``unshare``).

Usage: host_init.py PRIVATE_DIR SHARED_DIR...   (PRIVATE_DIR's last part is the host's name)

It gives the host a private /tmp (PRIVATE_DIR/tmp) and a private ~/.imgscale (the default run
folder; PRIVATE_DIR/imgscale), with each SHARED_DIR under /tmp bound back in at its own path (the test session's folders play the
part of a shared file system), prints "ready", then reaps every orphan until it is killed. Reaping
matters: a zombie still answers kill(pid, 0), so a test would think a killed job lived on.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def private_tree(private: str, shared: list[str]) -> None:
    tmp, state = os.path.join(private, "tmp"), os.path.join(private, "imgscale")
    os.makedirs(state, exist_ok=True)
    for path in shared:
        if os.path.commonpath([path, "/tmp"]) != "/tmp":
            continue  # outside /tmp: every host sees it anyway
        inside = os.path.join(tmp, os.path.relpath(path, "/tmp"))
        os.makedirs(inside, exist_ok=True)
        mount("--bind", path, inside)
    os.chmod(tmp, 0o1777)
    # Not all of HOME: the venv's interpreter may live under it (pyenv), the same on every host.
    home_state = os.path.expanduser("~root/.imgscale")
    os.makedirs(home_state, exist_ok=True)
    mount("--bind", state, home_state)  # before /tmp is covered: PRIVATE_DIR may be under it
    mount("--rbind", tmp, "/tmp")


def reap_forever() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        signal.sigwait({signal.SIGCHLD})


def main() -> None:
    # argv[1] is HOST_DIR/NAME: the host's name is its hostname in its own UTS namespace
    socket.sethostname(os.path.basename(sys.argv[1]))
    private_tree(sys.argv[1], sys.argv[2:])
    print("ready", flush=True)
    reap_forever()


if __name__ == "__main__":
    main()
