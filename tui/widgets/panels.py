"""Small text panels: the status bar, a stage's details, the job summary and the actions list."""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.reactive import reactive
from textual.widgets import Static

from engine.events import ClusterRate, EpochSummary
from tui.widgets import fmt
from tui.widgets.stagetable import StageView


class StatusBar(Static):
    """Top line: workspace, job state, cluster images/s, and the settings the next launch uses."""

    workspace: reactive[str] = reactive("")
    job: reactive[str] = reactive("")
    job_state: reactive[str] = reactive("")
    rate: reactive[float | None] = reactive(None)
    mirror: reactive[bool] = reactive(False)
    nthreads: reactive[int | None] = reactive(None)
    hosts: reactive[int] = reactive(0)

    def render(self) -> str:
        job = f"job {self.job} {self.job_state}" if self.job else "no job"
        rate = f"{fmt.num(self.rate, 0)} img/s" if self.rate is not None else "-- img/s"
        mirror = "MIRROR on" if self.mirror else "mirror off"
        threads = fmt.num(self.nthreads) if self.nthreads is not None else fmt.NA
        # Most useful first: narrow terminals cut the end.
        return f" {self.workspace} · {job} · {rate} · {mirror} · nthreads {threads} · {self.hosts} host(s)"

    def watch_mirror(self, mirror: bool) -> None:
        self.set_class(mirror, "-mirror")

    def watch_job_state(self, state: str) -> None:
        self.set_class(state == "failed", "-failed")
        self.set_class(state in ("running", "starting", "relaunching"), "-running")


class StageDetails(Static):
    """The selected stage: message, options and the last skipped files."""

    view: reactive[StageView | None] = reactive(None, always_update=True, layout=True)
    options: reactive[dict] = reactive(dict, always_update=True, layout=True)

    def render(self) -> str:
        view = self.view
        if view is None:
            return ""
        s = view.status
        lines = [f"{s.name}: {s.state}" + (f" — {s.message}" if s.message else "")]
        if self.options:
            lines.append(
                "options: " + "  ".join(f"{k}={_short(v)}" for k, v in self.options.items())
            )
        if view.skipped_items:
            lines.append(
                f"skipped ({len(view.skipped_items)} shown, full list in the stage report):"
            )
            lines.extend(f"  {item.path}: {item.reason}" for item in view.skipped_items[-5:])
        return "\n".join(lines)


class JobSummary(Static):
    """Cluster images/s with a sparkline, speedup against ideal, and each worker's last epoch."""

    rate: reactive[ClusterRate | None] = reactive(None, always_update=True, layout=True)
    epochs: reactive[dict] = reactive(dict, always_update=True, layout=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history: deque[float] = deque(maxlen=60)

    def watch_rate(self, rate: ClusterRate | None) -> None:
        if rate is not None:
            self.history.append(rate.images_per_sec)
        self.set_class(bool(rate and rate.stragglers), "-stragglers")

    def render(self) -> str:
        r = self.rate
        if r is None:
            head = "cluster: -- img/s (no throughput yet)"
        else:
            speedup = f"×{r.speedup:.2f} of ideal ×{r.workers}" if r.speedup is not None else ""
            head = (
                f"cluster: {r.images_per_sec:,.0f} img/s {fmt.spark(self.history, 24)}  {speedup}"
            )
            if r.stragglers:
                head += f"  stragglers: {', '.join(r.stragglers[:6])}"
        lines = [head]
        for _key, epoch in sorted(self.epochs.items(), key=lambda kv: str(kv[0]))[-4:]:
            lines.append(_epoch_line(epoch))
        return "\n".join(lines)


def _epoch_line(e: EpochSummary) -> str:
    train = " ".join(f"{k}={v:.3f}" for k, v in e.train)
    val = " ".join(f"{k}={v:.3f}" for k, v in e.validation)
    cost = f" {e.time_cost_s:.1f}s" if e.time_cost_s is not None else ""
    return f"epoch {e.epoch} {e.host}#{e.rank}: train {train or 'N/A'}  val {val or 'N/A'}{cost}"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "…"
