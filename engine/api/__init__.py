"""The one door the console uses: open a workspace, read a snapshot, iterate events, start/stop things.

session   Session: a workspace's stages, hosts, telemetry and job; events on one asyncio queue
plan      LaunchPlan: the workers' command line, roles, batches and pre-flight findings
jobs      launch, re-attach, stop and kill detached jobs; probe hosts
rates     RateBoard: cluster images/s, speedup and stragglers from the workers' logs
doctor    diagnose: IO-, compute- or network-bound, from --test-io, --benchmark and the real job
"""

from engine.api.doctor import Diagnosis, diagnose
from engine.api.plan import LaunchPlan
from engine.api.rates import RATE_WINDOW_S, RateBoard
from engine.api.session import (
    Session,
    StageStopped,
    check_workspace,
    create_demo_workspace,
    open_workspace,
)

__all__ = [
    "RATE_WINDOW_S",
    "Diagnosis",
    "LaunchPlan",
    "RateBoard",
    "Session",
    "StageStopped",
    "check_workspace",
    "create_demo_workspace",
    "diagnose",
    "open_workspace",
]
