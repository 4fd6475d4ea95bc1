"""A real SLURM cluster on this machine: munged, slurmctld and several slurmd, started and stopped by tests.

    cluster = SlurmCluster.start(tmp_dir, nodes=2)
    cluster.env            # {"SLURM_CONF": …}: give it to every SLURM client (sbatch, srun, squeue …)
    cluster.nodes          # [SlurmNode("n1", "127.0.0.2", port), …]
    cluster.partition      # "debug" (its nodes include ``spare`` ones configured but never started,
                           # so a job asking for every node waits, as on a cluster with nodes down)
    cluster.close()        # cancels every job, stops the daemons

Debian's packages (slurmctld, slurmd, slurm-client, munge). Each daemon has its own key, socket, state
and spool folders under the test's folder and its own TCP ports, so the cluster shares nothing with a
SLURM the machine may run. The nodes are named n1, n2 … with NodeAddr 127.0.0.2, .3 …; jobs on them
run on this machine (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none), so their processes
can be checked with /proc. Traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = {
    "munged": "/usr/sbin/munged",
    "slurmctld": "/usr/sbin/slurmctld",
    "slurmd": "/usr/sbin/slurmd",
}
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
READY_TIMEOUT_S = 30.0
PARTITION = "debug"


def slurm_available() -> str:
    """An empty string when a local SLURM cluster can run here, otherwise why not."""
    for name, path in DAEMONS.items():
        if not os.path.exists(path):
            return f"{path} is not installed (apt-get install slurmctld slurmd slurm-client munge: {name})"
    missing = [c for c in CLIENTS if shutil.which(c) is None]
    if missing:
        return f"SLURM clients missing: {', '.join(missing)} (apt-get install slurm-client)"
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs as other users; these tests need root"
    return ""


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclass
class SlurmNode:
    name: str
    address: str
    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)


@dataclass
class SlurmCluster:
    folder: Path
    nodes: list[SlurmNode]
    ctld_port: int
    cpus_per_node: int
    spare: int = 0
    partition: str = PARTITION
    processes: list[subprocess.Popen] = field(default_factory=list, repr=False)

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    @classmethod
    def start(
        cls, folder: Path, nodes: int = 2, cpus_per_node: int = 8, spare: int = 0
    ) -> SlurmCluster:
        folder = Path(folder)
        count = nodes + spare
        ports = [free_port() for _ in range(count + 1)]
        cluster = cls(
            folder,
            [SlurmNode(f"n{i + 1}", f"127.0.0.{i + 2}", ports[i + 1]) for i in range(count)],
            ports[0],
            cpus_per_node,
            spare,
        )
        try:
            cluster._start_munge()
            cluster._write_conf()
            cluster._start_daemons()
            cluster.wait_idle()
        except BaseException:
            cluster.close()
            raise
        return cluster

    # ---- daemons ---------------------------------------------------------------------------
    def _start_munge(self) -> None:
        munge = self.folder / "munge"
        munge.mkdir(parents=True)
        munge.chmod(0o711)  # clients reach the socket through it
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        args = [
            DAEMONS["munged"],
            "--foreground",
            f"--key-file={key}",
            f"--socket={self.munge_socket}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}",
            f"--seed-file={munge / 'seed'}",
            "--force",
        ]
        self.processes.append(_spawn(args, munge / "munged.out"))
        _wait_for(lambda: os.path.exists(self.munge_socket), "munged socket", self.folder)

    @property
    def munge_socket(self) -> str:
        return str(self.folder / "munge" / "munge.sock")

    def _write_conf(self) -> None:
        for sub in ("state", "log", *(f"spool/{n.name}" for n in self.nodes)):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(slurm_conf(self))

    def _start_daemons(self) -> None:
        env = {**os.environ, **self.env}
        self.processes.append(
            _spawn(["/usr/sbin/slurmctld", "-D", "-i"], self.folder / "log" / "slurmctld.out", env)
        )
        for node in self.running_nodes:
            node.process = _spawn(
                ["/usr/sbin/slurmd", "-D", "-N", node.name],
                self.folder / "log" / f"slurmd-{node.name}.out",
                env,
            )
            self.processes.append(node.process)

    def wait_idle(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until sinfo shows every node idle (registered with the controller)."""
        want = len(self.running_nodes)

        def idle() -> bool:
            out = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout
            return sum(1 for line in out.splitlines() if line.split()[-1:] == ["idle"]) >= want

        _wait_for(idle, "every slurmd idle", self.folder, timeout)

    @property
    def running_nodes(self) -> list[SlurmNode]:
        return self.nodes[: len(self.nodes) - self.spare]

    # ---- clients ---------------------------------------------------------------------------
    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def job_ids(self) -> list[str]:
        out = self.run(["squeue", "-h", "-o", "%i"], check=False).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def cancel_all(self) -> None:
        for job in self.job_ids():
            self.run(["scancel", job], check=False)

    def close(self) -> None:
        try:
            if self.conf.exists():
                self.cancel_all()
        except (OSError, subprocess.SubprocessError):
            pass
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def slurm_conf(cluster: SlurmCluster) -> str:
    """One config for the controller, every node and every client."""
    folder = cluster.folder
    host = socket.gethostname().split(".")[0]
    lines = [
        "ClusterName=imgscaletest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={cluster.ctld_port}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={cluster.munge_socket}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}/%n",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'log' / 'slurmd-%n.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "MpiDefault=none",
        # Nodes claim more CPUs than this machine has, so a node holds several ranks of a test job.
        "SlurmdParameters=config_overrides",
        "MailProg=/bin/true",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={folder / 'log' / 'jobcomp.txt'}",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "InactiveLimit=0",
        "KillWait=3",
        "MinJobAge=600",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "SchedulerParameters=sched_interval=1",
        # The controller looks at new jobs at once rather than on its periodic pass.
        "MessageTimeout=10",
    ]
    for node in cluster.nodes:
        lines.append(
            f"NodeName={node.name} NodeAddr={node.address} Port={node.port} "
            f"CPUs={cluster.cpus_per_node} State=UNKNOWN"
        )
    names = ",".join(n.name for n in cluster.nodes)
    lines.append(f"PartitionName={cluster.partition} Nodes={names} Default=YES MaxTime=60 State=UP")
    return "\n".join(lines) + "\n"


def _spawn(argv: list[str], out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(out, "ab") as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


def _wait_for(check, what: str, folder: Path, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll a readiness condition of a daemon we started (no fixed sleep: returns when it holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    logs = sorted(folder.rglob("*.log")) + sorted(folder.rglob("*.out"))
    tail = "\n".join(f"== {p}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)
    raise RuntimeError(f"SLURM test cluster: no {what} after {timeout:.0f} s\n{tail}")
