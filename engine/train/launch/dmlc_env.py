"""The environment of each process of a distributed MXNet job: DMLC_* for ps-lite, IMGSCALE_* for us, user env.

Every role gets the user's ``--env`` values (MXNet 1.9.1's launch.py drops them), and every process
carries ``IMGSCALE_JOB`` so that ``imgscale kill`` can prove a pid is still ours before signalling it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.errors import UserError

from .placement import SCHEDULER, Placement
from .torch_env import TORCH_VARS

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Set by the launcher; a user value would break the job (or our bookkeeping), so it is refused.
RESERVED = (
    "DMLC_ROLE",
    "DMLC_PS_ROOT_URI",
    "DMLC_PS_ROOT_PORT",
    "DMLC_NUM_SERVER",
    "DMLC_NUM_WORKER",
    "DMLC_NODE_HOST",
    *TORCH_VARS,
)
RESERVED_PREFIX = "IMGSCALE_"
# Passed from the launching shell when set and not given with --env, as launch.py does.
FORWARDED = ("OMP_NUM_THREADS", "KMP_AFFINITY", "MXNET_CPU_WORKER_NTHREADS")


@dataclass(frozen=True)
class ClusterEnv:
    """What every process of one job shares."""

    job: str
    root_uri: str  # address of the scheduler's host, as the other hosts reach it
    root_port: int
    num_workers: int
    num_servers: int
    interface: str | None = None  # DMLC_INTERFACE, e.g. eth0
    heartbeat_interval: int | None = None  # seconds; PS_HEARTBEAT_INTERVAL
    heartbeat_timeout: int | None = None  # seconds; PS_HEARTBEAT_TIMEOUT
    attempt: int = 0


def parse_env_args(items: Sequence[str]) -> dict[str, str]:
    """``--env K=V`` values (a bare ``K`` copies K from this shell), checked; errors name the item."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            if key not in os.environ:
                raise UserError(f"--env {item}: {key} is not set here; write --env {key}=VALUE")
            value = os.environ[key]
        check_user_key(key, f"--env {item}")
        env[key] = value
    return env


def parse_role_env(items: Sequence[str], flag: str) -> dict[str, str]:
    """launch.py's ``--env-server/--env-worker K:V`` (``K=V`` also accepted)."""
    env: dict[str, str] = {}
    for item in items:
        cut = min((i for i in (item.find("="), item.find(":")) if i > 0), default=-1)
        if cut < 0:
            raise UserError(f"{flag} {item}: write NAME:VALUE (or NAME=VALUE)")
        key, value = item[:cut], item[cut + 1 :]
        check_user_key(key, f"{flag} {item}")
        env[key] = value
    return env


def check_user_key(key: str, where: str) -> None:
    if not NAME.match(key):
        raise UserError(f"{where}: {key!r} is not a valid environment variable name")
    if key in RESERVED or key.startswith(RESERVED_PREFIX):
        raise UserError(f"{where}: {key} is set by the launcher for each process; leave it out")


def forwarded_env(
    user_env: Mapping[str, str], source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Thread settings of the launching shell that the user did not override."""
    source = os.environ if source is None else source
    return {k: source[k] for k in FORWARDED if k in source and k not in user_env}


def process_env(
    cluster: ClusterEnv,
    proc: Placement,
    node_host: str,
    host_name: str,
    user_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The full extra environment for one process (on top of the host's login environment)."""
    env = dict(user_env or {})
    env.update(dmlc_env(cluster, proc, node_host))
    env.update(identity_env(cluster.job, cluster.attempt, proc, host_name))
    return env


def identity_env(job: str, attempt: int, proc: Placement, host_name: str) -> dict[str, str]:
    """IMGSCALE_*: attribution and safe killing, the same for MXNet and torch processes."""
    return {
        "IMGSCALE_JOB": job,
        "IMGSCALE_ROLE": proc.role,
        "IMGSCALE_RANK": str(proc.rank),  # ps-lite assigns DMLC_WORKER_ID itself; this is stable
        "IMGSCALE_HOST": host_name,
        "IMGSCALE_PROC": proc.name,
        "IMGSCALE_ATTEMPT": str(attempt),
    }


def dmlc_env(cluster: ClusterEnv, proc: Placement, node_host: str) -> dict[str, str]:
    """DMLC_* (and ps-lite's heartbeat) for one process of an MXNet job."""
    env = {
        "DMLC_ROLE": proc.role,
        "DMLC_PS_ROOT_URI": cluster.root_uri,
        "DMLC_PS_ROOT_PORT": str(cluster.root_port),
        "DMLC_NUM_SERVER": str(cluster.num_servers),
        "DMLC_NUM_WORKER": str(cluster.num_workers),
        # The scheduler binds DMLC_PS_ROOT_URI; the others announce the address they are reached at.
        "DMLC_NODE_HOST": cluster.root_uri if proc.role == SCHEDULER else node_host,
    }
    if cluster.interface:
        env["DMLC_INTERFACE"] = cluster.interface
    if cluster.heartbeat_interval is not None:
        env["PS_HEARTBEAT_INTERVAL"] = str(cluster.heartbeat_interval)
    if cluster.heartbeat_timeout is not None:
        env["PS_HEARTBEAT_TIMEOUT"] = str(cluster.heartbeat_timeout)
    return env
