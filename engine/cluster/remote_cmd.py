"""Pure builders of shell command lines for hosts; every value goes through ``shlex.quote``.

The line a host's login shell receives is ``cd -- DIR && exec env K=V … /bin/sh -c COMMAND``:
environment travels in the command line (sshd's AcceptEnv would drop SSH "setenv" requests),
and ``/bin/sh -c`` makes the variables and directory apply to the whole command, even a compound
one like ``a; b``. The remote login shell must be a POSIX shell (sh, bash, dash, zsh, ksh).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PYTHON_WORDS = ("python", "python3")


def shell_path(path: str) -> str:
    """Quote a host path for the shell; a leading ``~/`` becomes ``"$HOME"/`` so the host expands it."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def join_argv(argv: Sequence[str]) -> str:
    """One shell word per argument: ``["python", "a b"]`` -> ``python 'a b'``.

    The program is a host path (a hosts file's ``python=~/venv/bin/python``): a leading ``~/``
    is left for the host to expand. Every other argument is passed as it is.
    """
    for arg in argv:
        _refuse_nul(arg, "argument")
    if not argv:
        return ""
    return " ".join([shell_path(argv[0]), *(shlex.quote(a) for a in argv[1:])])


def env_words(env: Mapping[str, str]) -> list[str]:
    """``NAME=value`` words for ``env``, each quoted; names are checked (no injection via keys)."""
    words = []
    for name, value in env.items():
        if not ENV_NAME.match(name):
            raise ValueError(f"not a valid environment variable name: {name!r}")
        _refuse_nul(value, f"value of {name}")
        words.append(shlex.quote(f"{name}={value}"))
    return words


def path_word(path_prepend: Iterable[str]) -> str | None:
    """``PATH='/a':'/b':"$PATH"`` - the host's own PATH is expanded there, after ours."""
    dirs = [d for d in path_prepend if d]
    if not dirs:
        return None
    for d in dirs:
        _refuse_nul(d, "path_prepend entry")
    return "PATH=" + ":".join(shlex.quote(d) for d in dirs) + ':"$PATH"'


def shell_command(
    command: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    path_prepend: Iterable[str] = (),
) -> str:
    """The line to hand a host's shell so ``command`` runs with ``env`` in ``cwd``."""
    _refuse_nul(command, "command")
    words = ["exec", "env"]
    path = path_word(path_prepend)
    if path:
        words.append(path)
    words += env_words(env or {})
    words += ["/bin/sh", "-c", shlex.quote(command)]
    line = " ".join(words)
    if cwd:
        _refuse_nul(cwd, "cwd")
        line = f"cd -- {shlex.quote(cwd)} && {line}"
    return line


def _refuse_nul(text: str, what: str) -> None:
    # A NUL byte cannot be passed through any shell or exec call; say so instead of truncating.
    if "\0" in text:
        raise ValueError(f"{what} contains a NUL byte")


def with_python(argv: Sequence[str], python: str) -> tuple[str, ...]:
    """Replace a leading ``python`` word by the host's interpreter."""
    if argv and (argv[0] in PYTHON_WORDS or argv[0] == sys.executable):
        return (python, *argv[1:])
    return tuple(argv)
