"""The one door the console uses: open a workspace, read a snapshot, iterate events, start/stop things.

session   Session: a thin facade over the parts below, over one HostPool (a connection per host)
stream    EventStream: the session's events on one asyncio queue (SweepEvent, SweepEnd for the sweep)
stages    StageThreads: the preparation stages, each in a thread
follow    JobFollower: the workspace's job, launched or re-attached, followed
speeds    Speeds: the job's rate board, each mode's speeds, the doctor's and the grid's readings
sweeps    SweepRunner: the Scaling screen's sweep as a session part
export    the hosts grid and the throughput history as files
plan      LaunchPlan: the workers' command line, roles, batches and pre-flight findings
jobs      launch, re-attach, stop and kill detached jobs; probe hosts
scaling   the scaling sweep (as `imgscale bench scaling` runs it), the published table, rows, plots

It also re-exports what the console draws from elsewhere in the engine: the cluster rate board
and the doctor (engine.train.rates, engine.train.doctor), stage statuses (engine.workspace).

The console (tui/) imports this package, engine.events and engine.errors, nothing else (a test
checks it), so every name it needs is re-exported here.
"""

from engine.api.plan import LaunchPlan, check_hosts_file
from engine.api.scaling import (
    IDEAL,
    KV_STORES,
    STAGE,
    TABLE_COLUMNS,
    Sweep,
    SweepConfig,
    SweepResult,
    TextPlot,
    add_speedup,
    estimate_seconds,
    published_cluster,
    published_points,
    speedup_plot,
    speedup_series,
    sweep_config,
    sweep_defaults,
    table_rows,
)
from engine.api.session import (
    Session,
    StageStopped,
    check_workspace,
    create_demo_workspace,
    open_workspace,
)
from engine.api.stream import SweepEnd, SweepEvent
from engine.api.sweeps import launching
from engine.cli import OneLineParser
from engine.cli_progress import human_duration
from engine.options import FormField
from engine.train.doctor import CAUSE_ADVICE, Diagnosis, HostReading, Topology, diagnose, host_cause
from engine.train.rates import RATE_WINDOW_S, RateBoard, Series
from engine.workspace import PREP_STAGES, StageStatus, WorkspaceSnapshot

__all__ = [
    "estimate_seconds",
    "sweep_defaults",
    "CAUSE_ADVICE",
    "IDEAL",
    "KV_STORES",
    "PREP_STAGES",
    "RATE_WINDOW_S",
    "STAGE",
    "TABLE_COLUMNS",
    "Diagnosis",
    "FormField",
    "HostReading",
    "LaunchPlan",
    "OneLineParser",
    "RateBoard",
    "Session",
    "StageStatus",
    "StageStopped",
    "SweepEnd",
    "SweepEvent",
    "Sweep",
    "Series",
    "SweepConfig",
    "SweepResult",
    "TextPlot",
    "Topology",
    "WorkspaceSnapshot",
    "add_speedup",
    "check_hosts_file",
    "check_workspace",
    "create_demo_workspace",
    "diagnose",
    "host_cause",
    "human_duration",
    "launching",
    "open_workspace",
    "published_cluster",
    "published_points",
    "speedup_plot",
    "speedup_series",
    "sweep_config",
    "table_rows",
]
