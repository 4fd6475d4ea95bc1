"""Real OpenSSH sshd test hosts on loopback addresses (127.0.0.2, .3, .4 …) with generated keys.

Used by the session fixture ``ssh_cluster`` (tests/conftest.py) and by benchmarks scripts:

    cluster = SshCluster.start(tmp_dir, count=3)
    cluster.hosts_file     # project hosts file: a "*" line (identity, known_hosts, python) and
                           # "root@127.0.0.2:PORT name=node1" … lines
    cluster.known_hosts    # "[127.0.0.2]:PORT ssh-ed25519 …" for every host
    cluster.client_key     # private key authorized for root on every host
    cluster.ssh_config     # Host node1 … (HostName, Port, User, IdentityFile, UserKnownHostsFile)
    cluster.hosts          # [SshHost(name, address, port, …)]; cluster.addresses: [(n, a, p)]
    cluster.python         # interpreter path for python= (this venv: same machine, same path)
    cluster.stop_host(i)   # i is 0-based; kills the listener and its sessions (host "gone")
    cluster.start_host(i)  # same address, port and host key; waits until the port accepts
    cluster.hosts_text({i: "opts"}) / write_hosts_file(path, {i: "opts"}, slots=N)
    cluster.fake_gpu_option("mig.csv")  # options giving a host the recorded fake nvidia-smi
    cluster.close()

Each host is its own PID, mount and UTS (hostname) namespace (``unshare``; tests/host_init.py is its PID 1): a process
started on one host is invisible from another, and each host has a private /tmp and ~/.imgscale
(so the default run folder ~/.imgscale/runs is per host). The folders named in ``shared`` (the test
session's temporary folder in the fixture) are bound back in at the same paths, like a shared file
system; so are this checkout and the running interpreter's venv, wherever they are (a clone under
/tmp runs its tests too), and every folder outside /tmp is the same path on every host. The network is the
machine's loopback: each sshd listens only on its own 127.0.0.x address. From the test process
(the launching machine, which sees every namespace):

    cluster.processes_of(job)          # {"node1": [pid in node1, …], …, "local": […]}
    cluster.group_alive("node2", pgid) # pids and groups as the host itself numbers them
    cluster.kill("node2", pid, signal.SIGKILL)
    cluster.host_path("node1", "/tmp/x")   # that host's /tmp/x, read from here
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SSHD = "/usr/sbin/sshd"
HOST_INIT = Path(__file__).parent / "host_init.py"
REPO = Path(__file__).resolve().parents[1]
# What every host must see at the same path as here: the checkout (its code, test jobs, .venv-np2)
# and the venv and base interpreter python= names; under /tmp a host's private /tmp would hide them.
ALWAYS_SHARED = tuple(dict.fromkeys(Path(p).resolve() for p in (REPO, sys.prefix, sys.base_prefix)))
READY_TIMEOUT_S = 15.0
FAKE_NVIDIA_SMI = Path(__file__).parent / "data" / "nvsmi" / "fake_nvidia_smi.py"


@dataclass
class SshHost:
    """One sshd test host: its alias, loopback address and port, and its running process."""

    name: str
    address: str
    port: int
    host_key: Path
    config: Path
    log: Path
    private: Path  # its own /tmp and ~/.imgscale live under here (see host_init.py)
    process: subprocess.Popen | None = field(default=None, repr=False)  # nsenter … sshd -D
    namespace: subprocess.Popen | None = field(default=None, repr=False)  # unshare … host_init
    init_pid: int = 0  # the host's PID 1, as this machine numbers it

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class HostProcess:
    """A process on a test host: its pid and group as that host numbers them, and this machine's pid."""

    host: str
    pid: int
    pgid: int
    root_pid: int


def sshd_available() -> str:
    """An empty string when real sshd test hosts can run here, otherwise why not."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    for tool in ("ssh-keygen", "unshare", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install openssh-client util-linux)"
    if os.geteuid() != 0:
        return "test hosts need root for their PID and mount namespaces (unshare)"
    return ""


def free_port(address: str) -> int:
    """A TCP port that is free on ``address`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def port_accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def keygen(path: Path, comment: str) -> str:
    """Generate an ed25519 key pair without a passphrase; return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path.with_suffix(".pub").read_text().strip()


def _ensure_privsep_dir() -> None:
    # sshd run as root refuses to start without its privilege separation directory; the
    # package's service unit normally creates it, but no service runs in containers/CI.
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)


def _sshd_config(host: SshHost, root: Path) -> str:
    return "\n".join(
        [
            f"ListenAddress {host.address}:{host.port}",
            f"HostKey {host.host_key}",
            f"PidFile {root / (host.name + '.pid')}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "UsePAM no",
            "AllowAgentForwarding yes",
            # The transport multiplexes many channels over one connection (default is 10).
            "MaxSessions 200",
            "MaxStartups 200",
            "PrintMotd no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def _is_sshd(proc) -> bool:
    try:
        return proc.name() == "sshd"
    except Exception:  # the process ended meanwhile
        return False


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class SshCluster:
    """Several sshd processes on loopback sharing one client key and one known_hosts file."""

    def __init__(
        self, root: Path, hosts: list[SshHost], python: str, shared: tuple[Path, ...]
    ) -> None:
        self.root = root
        self.hosts = hosts
        self.python = python
        self.shared = shared
        self.client_key = root / "id_client"
        self.known_hosts = root / "known_hosts"
        self.ssh_config = root / "ssh_config"
        self.hosts_file = root / "hosts"
        self.fake_nvidia_smi_dir = root / "fake-gpu-bin"

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        root: Path | str,
        count: int = 3,
        *,
        first_address: int = 2,
        python: str | None = None,
        shared: tuple[Path | str, ...] = (),
    ) -> SshCluster:
        """Generate keys and configs under ``root`` and start ``count`` sshd hosts.

        Every host sees ``root`` and the ``shared`` folders; the rest of /tmp is its own.
        """
        reason = sshd_available()
        if reason:
            raise RuntimeError(reason)
        root = Path(root).absolute()
        root.mkdir(parents=True, exist_ok=True)
        hosts = [cls._plan_host(root, i, first_address + i) for i in range(count)]
        seen = (root, *ALWAYS_SHARED, *(Path(p).absolute() for p in shared))
        cluster = cls(root, hosts, python or sys.executable, seen)
        cluster._write_client_files()
        try:
            for i in range(count):
                cluster.start_host(i)
        except BaseException:
            cluster.close()
            raise
        return cluster

    @staticmethod
    def _plan_host(root: Path, index: int, last_octet: int) -> SshHost:
        name = f"node{index + 1}"
        address = f"127.0.0.{last_octet}"
        host_key = root / f"host_{name}"
        keygen(host_key, f"{name}-hostkey")
        host = SshHost(
            name,
            address,
            free_port(address),
            host_key,
            root / f"sshd_{name}.conf",
            root / f"sshd_{name}.log",
            root / "host-dirs" / name,
        )
        host.config.write_text(_sshd_config(host, root))
        return host

    def _write_client_files(self) -> None:
        public = keygen(self.client_key, "imgscale-tests")
        (self.root / "authorized_keys").write_text(public + "\n")
        self.known_hosts.write_text("".join(self.known_hosts_line(h) for h in self.hosts))
        self.ssh_config.write_text("".join(self._ssh_config_block(h) for h in self.hosts))
        self.hosts_file.write_text(self.hosts_text())
        self._write_fake_nvidia_smi()

    def known_hosts_line(self, host: SshHost) -> str:
        key = host.host_key.with_suffix(".pub").read_text().split()
        return f"[{host.address}]:{host.port} {key[0]} {key[1]}\n"

    def _ssh_config_block(self, host: SshHost) -> str:
        return (
            f"Host {host.name}\n"
            f"    HostName {host.address}\n"
            f"    Port {host.port}\n"
            "    User root\n"
            f"    IdentityFile {self.client_key}\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
        )

    def _write_fake_nvidia_smi(self) -> None:
        # A directory holding only "nvidia-smi": prepend it to PATH on one host (path_prepend=)
        # to give that host recorded GPUs.
        self.fake_nvidia_smi_dir.mkdir(exist_ok=True)
        script = self.fake_nvidia_smi_dir / "nvidia-smi"
        script.write_text(f'#!/bin/sh\nexec {self.python} {FAKE_NVIDIA_SMI} "$@"\n')
        script.chmod(0o755)

    # ---- hosts files --------------------------------------------------------------------
    def hosts_text(self, extra: dict[int, str] | None = None, *, slots: int | None = None) -> str:
        """The project hosts file for these hosts; ``extra`` adds options to host i's line."""
        extra = extra or {}
        lines = [
            "# imgscale test hosts (generated by tests/sshd.py)",
            f"* identity={self.client_key} known_hosts={self.known_hosts} python={self.python}",
        ]
        for i, h in enumerate(self.hosts):
            line = f"root@{h.address}:{h.port} name={h.name}"
            if slots is not None:
                line += f" slots={slots}"
            if i in extra:
                line += " " + extra[i]
            lines.append(line)
        return "\n".join(lines) + "\n"

    def write_hosts_file(
        self, path: Path | str, extra: dict[int, str] | None = None, *, slots: int | None = None
    ) -> Path:
        path = Path(path)
        path.write_text(self.hosts_text(extra, slots=slots))
        return path

    def fake_gpu_option(self, csv_name: str = "normal_4gpu.csv") -> str:
        """Hosts-file options that give a host the recorded-output fake nvidia-smi."""
        return f"path_prepend={self.fake_nvidia_smi_dir} env.IMGSCALE_FAKE_NVSMI={csv_name}"

    @property
    def addresses(self) -> list[tuple[str, str, int]]:
        return [(h.name, h.address, h.port) for h in self.hosts]

    # ---- lifecycle ----------------------------------------------------------------------
    def start_host(self, index: int) -> None:
        """Start (or restart) host ``index``'s sshd and wait until its port accepts connections.

        The host's namespaces outlive its sshd: what ran there before a restart still runs.
        """
        host = self.hosts[index]
        if host.running:
            return
        _ensure_privsep_dir()
        if host.namespace is None:
            self._start_namespace(host)
        log = open(host.log, "ab")  # noqa: SIM115 - sshd keeps writing to it after this returns
        host.process = subprocess.Popen(
            [
                *("nsenter", f"--target={host.init_pid}", "--pid", "--mount", "--uts", "--"),
                *(SSHD, "-D", "-f", str(host.config), "-E", str(host.log)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        self._wait_ready(host)

    def _start_namespace(self, host: SshHost) -> None:
        host.private.mkdir(parents=True, exist_ok=True)
        host.namespace = subprocess.Popen(
            [
                *("unshare", "--pid", "--mount", "--uts", "--fork", "--mount-proc"),
                *(self.python, str(HOST_INIT), str(host.private), *map(str, self.shared)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = host.namespace.stdout.readline()  # host_init prints it once its mounts are in place
        if ready != "ready\n":
            host.namespace.kill()
            raise RuntimeError(
                f"{host.name}'s namespace did not start: {host.namespace.stderr.read()}"
            )

        (init,) = psutil.Process(host.namespace.pid).children()  # unshare forked PID 1
        host.init_pid = init.pid

    def _wait_ready(self, host: SshHost) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if host.process.poll() is not None:
                raise RuntimeError(f"sshd for {host.name} exited: {host.log.read_text()[-2000:]}")
            if port_accepts(host.address, host.port):
                return
            time.sleep(0.05)  # polling a condition with a deadline, not a synchronising sleep
        raise RuntimeError(
            f"sshd for {host.name} did not accept connections within "
            f"{READY_TIMEOUT_S} s: {host.log.read_text()[-2000:]}"
        )

    def stop_host(self, index: int, *, sessions: bool = True) -> None:
        """Stop host ``index``'s sshd, as if the host went away.

        With ``sessions`` (the default) the per-connection sshd processes are killed too, so open
        connections break at once (a listener alone going away leaves them working). Commands
        started through those sessions are not killed: detached jobs survive, as on a real host
        that became unreachable.
        """
        host = self.hosts[index]
        if host.process is None:
            return
        listener, session_pids = self._sshd_pids(host)
        if host.process.poll() is None:
            # nsenter passes no signal on: end the sshd it started, then nsenter ends with it.
            for pid in listener:
                os.kill(pid, signal.SIGTERM)
            try:
                host.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                for pid in listener:
                    _kill_quietly(pid)
                host.process.wait()
        for pid in session_pids if sessions else []:
            _kill_quietly(pid)
        if sessions:  # a connection accepted while the listener was being stopped
            for pid in self._sessions_left(host):
                _kill_quietly(pid)
        host.process = None
        self._wait_port_closed(host)

    @staticmethod
    def _sshd_pids(host: SshHost) -> tuple[list[int], list[int]]:
        """The listening sshd (nsenter's child) and the per-connection sshd processes under it."""

        try:
            listener = psutil.Process(host.process.pid).children()
            sessions = [c for p in listener for c in p.children(recursive=True)]
        except psutil.NoSuchProcess:
            return [], []
        return [p.pid for p in listener], [c.pid for c in sessions if _is_sshd(c)]

    @staticmethod
    def _sessions_left(host: SshHost) -> list[int]:
        """sshd processes still in the host's namespace once its listener is gone: sessions."""
        try:
            found = psutil.Process(host.init_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [p.pid for p in found if _is_sshd(p)]

    @staticmethod
    def _wait_port_closed(host: SshHost) -> None:
        deadline = time.monotonic() + 5
        while port_accepts(host.address, host.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        """Stop every host; ending its PID 1 ends whatever still ran there."""
        for i, host in enumerate(self.hosts):
            self.stop_host(i)
            if host.namespace is not None:
                _kill_quietly(host.init_pid)
                host.namespace.wait()
                host.namespace = None

    # ---- looking inside the hosts -------------------------------------------------------
    def host(self, name: str) -> SshHost:
        (found,) = [h for h in self.hosts if h.name == name]
        return found

    def host_path(self, name: str, path: str | Path) -> Path:
        """``path`` as host ``name`` sees it (its private /tmp and ~/.imgscale), readable from here."""
        return Path(f"/proc/{self.host(name).init_pid}/root") / Path(path).relative_to("/")

    def processes(self) -> list[HostProcess]:
        """Every process on the test hosts, and on this machine as host "local"."""
        names = {_pid_namespace("self"): "local"}
        names.update({_pid_namespace(str(h.init_pid)): h.name for h in self.hosts if h.init_pid})
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                seen = _host_process(int(entry), names)
                if seen is not None:
                    found.append(seen)
        return found

    def processes_of(self, job: str) -> dict[str, list[int]]:
        """Host name -> pids (as that host numbers them) whose environment names ``job``."""
        needle = f"IMGSCALE_JOB={job}".encode()
        found: dict[str, list[int]] = {}
        for proc in self.processes():
            if needle in _environ(proc.root_pid):
                found.setdefault(proc.host, []).append(proc.pid)
        return found

    def group_alive(self, name: str, pgid: int) -> bool:
        """Whether host ``name`` has a live (not zombie) process in group ``pgid``."""
        return any(p.host == name and p.pgid == pgid for p in self.processes())

    def kill(self, name: str, pid: int, sig: int) -> None:
        """Send ``sig`` to the process host ``name`` calls ``pid``."""
        (proc,) = [p for p in self.processes() if p.host == name and p.pid == pid]
        os.kill(proc.root_pid, sig)


def _pid_namespace(pid: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def _environ(root_pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{root_pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _host_process(root_pid: int, names: dict[str, str]) -> HostProcess | None:
    """The process as its own host sees it; None when it ended, is a zombie or is on no test host."""
    try:
        host = names.get(_pid_namespace(str(root_pid)))
        status = Path(f"/proc/{root_pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if host is None or fields["State"].split()[0] == "Z":
        return None
    # NSpid / NSpgid list the ids from the outermost namespace to the process's own.
    return HostProcess(
        host, int(fields["NSpid"].split()[-1]), int(fields["NSpgid"].split()[-1]), root_pid
    )
