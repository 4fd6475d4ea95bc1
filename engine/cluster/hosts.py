"""Hosts files: launch.py's ``host[:port]`` lines plus ``user@``, ``slots=N``, ``gpus=``, options.

Format (see hosts.example at the repository root for a documented example)::

    # comment                          blank lines are ignored
    node-a                             launch.py form: SSH to node-a on port 22 (or ~/.ssh/config)
    node-b:2222                        launch.py form: the number after ':' is the SSH port
    ubuntu@10.0.0.7:22 slots=8         DeepSpeed/Horovod-style slots (processes to place there)
    [fe80::1]:22 gpus=0,1              bracketed IPv6 with port; the GPUs jobs may use
    * known_hosts=/path python=/opt/venv/bin/python   options for every host of the file

Everything after the host is ``key=value`` (shell quoting allowed: ``workdir="/data/my runs"``).
Per-host options override the ``*`` line. A mistake raises UserError naming the file and line.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from engine.errors import UserError
from engine.options import FANOUT_CAP

# key -> what it means (shown in errors about unknown keys and in hosts.example)
KNOWN_OPTIONS = {
    "name": "the name shown for the host (default: the host as written)",
    "slots": "how many processes may be placed on the host",
    "gpus": "comma-separated GPU indices jobs may use on the host",
    "python": "python interpreter on the host (default: this console's interpreter path)",
    "workdir": "directory commands run in on the host",
    "data": "data path whose filesystem the probes report (default: workdir or /)",
    "identity": "private key file(s), comma-separated (default: ssh-agent and ~/.ssh/id_*)",
    "known_hosts": "known_hosts file that verifies the host key (default: ~/.ssh/known_hosts)",
    "insecure_host_key": "yes to skip host key verification for this host (never the default)",
    "ssh_config": "ssh config file(s), comma-separated (default: ~/.ssh/config)",
    "forward_agent": "yes to forward the local ssh-agent to the host (as ssh -A)",
    "path_prepend": "directories put in front of PATH for every command on the host",
    "transport": "ssh (default) or local (run on this machine without SSH)",
    "connect_timeout": "seconds to wait for the TCP connection and SSH login (default 10)",
    "keepalive": "seconds between SSH keepalives (default 5; a host silent for 3 is lost)",
    "env.NAME": "environment variable NAME set for every command on the host",
}
YES = {"yes", "true", "1", "on"}
NO = {"no", "false", "0", "off"}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# NUL, newline, escape …: no host name or option holds one; a NUL reached open() and exec as a
# bare "ValueError: embedded null character", a newline would split a remote command line.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Processes one host may be given (slots=, or a placement without slots): more than any machine
# has GPUs, and far more than its CPUs serve as training processes.
HOST_CAP = 256


@dataclass(frozen=True)
class HostSpec:
    """One line of a hosts file, resolved with the file's ``*`` options."""

    name: str  # shown to the user; unique in a file
    address: str  # host name, IP address or ~/.ssh/config alias to connect to
    port: int | None = None  # SSH port; None lets ssh config (or 22) decide
    user: str | None = None  # None lets ssh config (or the local user name) decide
    slots: int | None = None
    gpus: tuple[int, ...] | None = None
    options: Mapping[str, str] = field(default_factory=dict, hash=False)
    source: str = ""  # "FILE, line N" for messages

    def option(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def flag(self, key: str) -> bool:
        return (self.options.get(key) or "no").lower() in YES

    @property
    def python(self) -> str:
        """The interpreter to run on the host: the same path as here unless ``python=`` says."""
        return self.options.get("python") or sys.executable

    @property
    def env(self) -> dict[str, str]:
        return {k[4:]: v for k, v in self.options.items() if k.startswith("env.")}

    @property
    def path_prepend(self) -> tuple[str, ...]:
        value = self.options.get("path_prepend") or ""
        return tuple(p for p in value.split(":") if p)

    @property
    def is_local(self) -> bool:
        return self.options.get("transport") == "local"


def local_host(name: str = "localhost", **options: str) -> HostSpec:
    """This machine, reached by subprocesses: the default when no hosts file is given."""
    opts = {"transport": "local", **options}
    return HostSpec(name=name, address="localhost", options=MappingProxyType(opts), slots=None)


def read_hosts(path: str | Path) -> list[HostSpec]:
    """Parse a hosts file; UserError names the file and line of the first mistake."""
    if "\0" in str(path):  # no file name can hold one; open() would raise a bare ValueError
        raise UserError(
            f"hosts file {str(path)!r}: a file name cannot contain a NUL byte; fix the name"
        )
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"hosts file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read hosts file {path}: {exc}") from None
    return parse_hosts(text, str(path))


def parse_hosts(text: str, source: str = "hosts file") -> list[HostSpec]:
    """Parse the text of a hosts file (``source`` names it in errors)."""
    defaults: dict[str, str] = {}
    lines: list[tuple[int, str, dict[str, str]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        words = _split(raw, source, number)
        if not words:
            continue
        options = _parse_options(words[1:], source, number)
        if words[0] == "*":
            defaults.update(options)
        else:
            lines.append((number, words[0], options))
    if not lines:
        raise UserError(f"{source}: no hosts listed (one host per line, e.g. 'node-a slots=4')")
    if len(lines) > FANOUT_CAP:  # every command connects to every host at once
        raise UserError(f"{source}: {len(lines)} hosts; give at most {FANOUT_CAP} in one file")
    return _resolve(lines, defaults, source)


def _resolve(
    lines: list[tuple[int, str, dict[str, str]]], defaults: dict[str, str], source: str
) -> list[HostSpec]:
    hosts: list[HostSpec] = []
    seen: dict[str, int] = {}
    for number, word, options in lines:
        where = f"{source}, line {number}"
        spec = _host_spec(word, {**defaults, **options}, where)
        if spec.name in seen:
            raise UserError(
                f"{where}: host {spec.name!r} is already listed on line {seen[spec.name]}; "
                "give it slots=N instead of listing it twice (or a different name=)"
            )
        seen[spec.name] = number
        hosts.append(spec)
    return hosts


def _split(raw: str, source: str, number: int) -> list[str]:
    try:
        words = shlex.split(raw, comments=True)
    except ValueError as exc:  # unbalanced quotes
        raise UserError(f"{source}, line {number}: {exc} in {raw.strip()!r}") from None
    for word in words:
        if CONTROL.search(word):
            raise UserError(
                f"{source}, line {number}: {word!r} holds a control character "
                "(NUL, newline, escape …); host names and options are plain text"
            )
    return words


def _parse_options(words: list[str], source: str, number: int) -> dict[str, str]:
    options: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UserError(
                f"{source}, line {number}: {word!r} is not key=value "
                "(one host per line; options look like slots=4)"
            )
        _check_option(key, value, f"{source}, line {number}")
        options[key] = value
    return options


def _check_option(key: str, value: str, where: str) -> None:
    if key.startswith("env."):
        if not ENV_NAME.match(key[4:]):
            raise UserError(f"{where}: {key!r} is not a valid environment variable name")
        return
    if key not in KNOWN_OPTIONS:
        known = ", ".join(sorted(KNOWN_OPTIONS))
        raise UserError(f"{where}: unknown option {key!r} (known: {known})")
    if key in ("insecure_host_key", "forward_agent") and value.lower() not in YES | NO:
        raise UserError(f"{where}: {key}={value!r} must be yes or no")
    if key == "transport" and value not in ("ssh", "local"):
        raise UserError(f"{where}: transport={value!r} must be ssh or local")
    if key in ("connect_timeout", "keepalive"):
        _positive_float(key, value, where)


def _positive_float(key: str, value: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise UserError(f"{where}: {key}={value!r} must be a number of seconds above 0")
    return number


def _host_spec(word: str, options: dict[str, str], where: str) -> HostSpec:
    user, address, port = split_host(word, where)
    slots = _slots(options.pop("slots", None), where)
    gpus = _gpus(options.pop("gpus", None), where)
    name = options.pop("name", None) or word.split("@")[-1]
    return HostSpec(name, address, port, user, slots, gpus, MappingProxyType(options), where)


def split_host(word: str, where: str = "host") -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` / ``[user@][v6addr][:port]`` -> (user, address, port)."""
    user, at, rest = word.rpartition("@")
    if at and not user:
        raise UserError(f"{where}: {word!r} has an empty user name before '@'")
    address, port_text = _split_port(rest, word, where)
    if not address:
        raise UserError(f"{where}: {word!r} has no host name")
    port = _port(port_text, word, where) if port_text is not None else None
    return (user or None), address, port


def _split_port(rest: str, word: str, where: str) -> tuple[str, str | None]:
    if rest.startswith("["):
        address, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise UserError(f"{where}: {word!r}: write IPv6 addresses as [addr] or [addr]:port")
        return address, (tail[1:] if tail else None)
    if rest.count(":") > 1:  # a bare IPv6 address has no port
        return rest, None
    address, colon, port_text = rest.partition(":")
    return address, (port_text if colon else None)


def _port(text: str, word: str, where: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UserError(
            f"{where}: {word!r}: the SSH port after ':' must be a number from 1 to 65535 "
            "(for a process count use slots=N)"
        )
    return int(text)


def _slots(value: str | None, where: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{where}: slots={value!r} must be a whole number of at least 1")
    if int(value) > HOST_CAP:
        raise UserError(f"{where}: slots={value}: give at most {HOST_CAP} processes per host")
    return int(value)


def _gpus(value: str | None, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if value.lower() == "none" or value == "":
        return ()
    parts = value.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise UserError(f"{where}: gpus={value!r} must be GPU indices like 0,1,2 (or none)")
    indices = tuple(int(p) for p in parts)
    if len(set(indices)) != len(indices):
        raise UserError(f"{where}: gpus={value!r} lists a GPU twice")
    return indices
