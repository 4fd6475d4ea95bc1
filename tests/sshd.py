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

Traffic stays on 127.0.0.0/8. The remote shell is root's login shell on this same machine, so the
venv's python is at the same path on every test host (hosts files carry ``python=`` for it).
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

SSHD = "/usr/sbin/sshd"
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
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def sshd_available() -> str:
    """An empty string when real sshd test hosts can run here, otherwise why not."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen is not installed (apt-get install openssh-client)"
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

    def __init__(self, root: Path, hosts: list[SshHost], python: str) -> None:
        self.root = root
        self.hosts = hosts
        self.python = python
        self.client_key = root / "id_client"
        self.known_hosts = root / "known_hosts"
        self.ssh_config = root / "ssh_config"
        self.hosts_file = root / "hosts"
        self.fake_nvidia_smi_dir = root / "fake-gpu-bin"

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def start(
        cls, root: Path | str, count: int = 3, *, first_address: int = 2, python: str | None = None
    ) -> SshCluster:
        """Generate keys and configs under ``root`` and start ``count`` sshd hosts."""
        reason = sshd_available()
        if reason:
            raise RuntimeError(reason)
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        hosts = [cls._plan_host(root, i, first_address + i) for i in range(count)]
        cluster = cls(root, hosts, python or sys.executable)
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
        """Start (or restart) host ``index``'s sshd and wait until its port accepts connections."""
        host = self.hosts[index]
        if host.running:
            return
        _ensure_privsep_dir()
        log = open(host.log, "ab")  # noqa: SIM115 - sshd keeps writing to it after this returns
        host.process = subprocess.Popen(
            [SSHD, "-D", "-f", str(host.config), "-E", str(host.log)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        self._wait_ready(host)

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
        session_pids = self._session_pids(host) if sessions else []
        if host.process.poll() is None:
            host.process.terminate()
            try:
                host.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                host.process.kill()
                host.process.wait()
        for pid in session_pids:
            _kill_quietly(pid)
        host.process = None
        self._wait_port_closed(host)

    @staticmethod
    def _session_pids(host: SshHost) -> list[int]:
        try:
            import psutil
        except ImportError:  # still stop the listener below
            return []
        try:
            children = psutil.Process(host.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [c.pid for c in children if _is_sshd(c)]

    @staticmethod
    def _wait_port_closed(host: SshHost) -> None:
        deadline = time.monotonic() + 5
        while port_accepts(host.address, host.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        for i in range(len(self.hosts)):
            self.stop_host(i)
