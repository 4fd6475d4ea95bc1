"""Alerts from a job's supervisor: finished, failed, stalled, straggler -> an event, a command or a webhook.

Generic: the notifier knows a job id, its states, hosts and figures, never a training flag. What
counts as progress (and each host's images/s) is fed to it by the caller's ``reader`` (the train
side turns log lines into rates). It runs in whichever process supervises the job (the foreground
`imgscale launch`, or the background `imgscale attach --supervise`), so alerts need no console.
Each alert is sent once per (attempt, kind); delivery runs in a thread with a short timeout, and a
failed delivery is one LogLine in the job's events, never an exception in the supervisor.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from engine.errors import UserError
from engine.events import Alert, Event, EventSink, JobState, LogLine
from engine.options import option

DELIVERY_TIMEOUT_S = 10.0  # a webhook or command that takes longer is given up (one line says so)
STALL_ALERT_CAP = 7 * 24 * 3600.0  # a week


@dataclass(frozen=True)
class AlertOptions:
    """Where alerts go and when a job counts as stalled or straggling ([alerts] in workspace.toml)."""

    notify: str | None = option(
        None,
        "on finish, failure, stall or straggler: POST JSON to this http(s) URL, or run this "
        "command with the JSON on stdin (on the supervising machine only)",
        metavar="URL|COMMAND",
    )
    stall_alert_s: float | None = option(
        None,
        "alert when no training progress for SEC seconds (0: off)",
        metavar="SEC",
        flags=("--stall-alert",),
        parse=float,
        low=0,
        high=STALL_ALERT_CAP,
        high_why="a week",
    )
    straggler_ratio: float = option(
        0.5,
        "alert when a host's images/s falls below this share of the others' median (0: off)",
        parse=float,
        low=0,
        high=1,
    )


# a LogLine -> (host, images/s) when the line reports progress, else None
Reader = Callable[[LogLine], "tuple[str, float] | None"]


def stragglers(rates: dict[str, float], ratio: float) -> list[tuple[str, float, float]]:
    """(host, its rate, the others' median) for each host below ``ratio`` x the others' median."""
    if ratio <= 0 or len(rates) < 2:
        return []
    slow = []
    for host, rate in sorted(rates.items()):
        others = statistics.median(r for h, r in rates.items() if h != host)
        if others > 0 and rate < ratio * others:
            slow.append((host, rate, others))
    return slow


class Notifier:
    """Turns a supervised job's events into alerts; ``see`` every event, ``tick`` each round."""

    def __init__(
        self, job: str, options: AlertOptions, emit: EventSink, reader: Reader | None = None
    ) -> None:
        self.job, self.options, self.emit, self.reader = job, options, emit, reader
        self.attempt = 0
        self.sent: set[tuple[int, str]] = set()
        self.rates: dict[str, float] = {}
        self.last_progress = time.monotonic()
        self.live = False
        self._deliveries: list[asyncio.Task] = []

    def see(self, event: Event, attempt: int) -> None:
        if attempt != self.attempt:  # a new attempt: its progress starts afresh
            self.attempt, self.rates, self.last_progress = attempt, {}, time.monotonic()
        if isinstance(event, JobState):
            self.live = event.state in ("starting", "running")
            if event.state == "done":
                self.alert("finished", event.message or "done")
            elif event.state == "failed":
                self.alert("failed", event.message or "failed")
        elif isinstance(event, LogLine) and event.role != "alerts":
            if self.reader is None:  # no notion of progress given: any output is progress
                self.last_progress = time.monotonic()
                return
            rate = self.reader(event)
            if rate is not None:
                self.last_progress = time.monotonic()
                self.rates[rate[0]] = rate[1]
                self._check_stragglers()

    def tick(self) -> None:
        """After each status round: a job without progress for --stall-alert seconds is stalled."""
        limit = self.options.stall_alert_s
        idle = time.monotonic() - self.last_progress
        if limit and self.live and idle >= limit:
            self.alert("stalled", f"no progress for {idle:.0f} s", figures=(("idle_s", idle),))

    def _check_stragglers(self) -> None:
        for host, rate, median in stragglers(self.rates, self.options.straggler_ratio):
            message = f"{host}: {rate:.1f} images/s, the others' median {median:.1f}"
            figures = (("images_per_s", rate), ("others_median", median))
            self.alert("straggler", message, host, figures)

    def alert(
        self,
        kind: str,
        message: str,
        host: str = "",
        figures: Sequence[tuple[str, float]] = (),
    ) -> None:
        """Once per (attempt, kind): the Alert event, then delivery off the event loop."""
        if (self.attempt, kind) in self.sent:
            return
        self.sent.add((self.attempt, kind))
        alert = Alert(self.job, kind, message, host, self.attempt, tuple(figures))
        self.emit(alert)
        if self.options.notify:
            task = asyncio.get_running_loop().create_task(self._deliver(alert))
            self._deliveries.append(task)

    async def _deliver(self, alert: Alert) -> None:
        target = self.options.notify or ""
        try:
            await asyncio.to_thread(deliver, target, payload(alert))
        except (OSError, ValueError, subprocess.SubprocessError, UserError) as exc:
            text = f"alert {alert.kind} not delivered to {describe(target)}: {exc}"
            self.emit(LogLine("", "alerts", None, text, "stderr", "warning", self.job))

    async def drain(self) -> None:
        """Wait for the deliveries under way (bounded by their timeout) before the supervisor ends."""
        tasks, self._deliveries = self._deliveries, []
        await asyncio.gather(*tasks, return_exceptions=True)


def payload(alert: Alert) -> bytes:
    data = asdict(alert)
    data["figures"] = dict(alert.figures)
    return json.dumps(data).encode()


def is_webhook(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def describe(target: str) -> str:
    """The target without what may be a secret (a webhook's path and query can hold a token)."""
    if is_webhook(target):
        return "/".join(target.split("/", 3)[:3])
    return target.split()[0] if target.split() else "''"


def deliver(target: str, body: bytes) -> None:
    """POST ``body`` to a webhook, or run a command with it on stdin (blocking; run in a thread)."""
    if is_webhook(target):
        request = urllib.request.Request(
            target, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT_S) as response:
            response.read()
        return
    done = subprocess.run(
        target, shell=True, input=body, capture_output=True, timeout=DELIVERY_TIMEOUT_S
    )
    if done.returncode:
        raise UserError(f"exit status {done.returncode}")
