"""`imgscale report JOB`: one self-contained HTML file (plots as base64 PNG) or the plots alone.

What it shows comes from engine.train.history (the job's record and its logs); matplotlib is
imported only when a plot is drawn.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import shlex
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.paths import write_atomic, write_text_atomic
from engine.train.history import JobHistory, ProcHistory

NO_MATPLOTLIB = "plots not drawn: they need matplotlib (pip install 'imgscale[plot]')"
HIDDEN = ("env", "env_server", "env_worker")  # values may be secrets: only their names are shown
ACCURACY = ("accuracy", "acc")
LOSS = ("cross-entropy", "ce", "loss")


def can_plot() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


# ---------------------------------------------------------------- plots


def _figure(rows: int = 1) -> tuple[Any, list[Any]]:  # matplotlib, imported lazily
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(8, 3 * rows), squeeze=False)
    return fig, [row[0] for row in axes]


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _pick(metrics: Iterable[tuple[str, float]], names: tuple[str, ...]) -> float | None:
    found = dict(metrics)
    return next((found[n] for n in names if n in found), None)


def plot_epochs(history: JobHistory) -> bytes | None:
    """Accuracy and loss per epoch, training and validation."""
    curves = history.epoch_curves()
    if not curves:
        return None
    fig, axes = _figure(2)
    epochs = sorted(curves)
    for ax, names, title in ((axes[0], ACCURACY, "accuracy"), (axes[1], LOSS, "loss")):
        for side in ("train", "validation"):
            points = [(e, _pick(getattr(curves[e], side), names)) for e in epochs]
            points = [(e, v) for e, v in points if v is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=side)
        ax.set(title=f"{title} per epoch", xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend() if ax.lines else ax.text(0.5, 0.5, "not logged", ha="center")
    return _png(fig)


def _minutes(history: JobHistory, t: float) -> float:
    return (t - history.start) / 60


def plot_intervals(history: JobHistory) -> bytes | None:
    """Each worker's Speedometer metrics per display interval, over the job's time."""
    workers = [w for w in history.workers() if any(s.metrics for s in w.speeds)]
    if not workers:
        return None
    fig, axes = _figure(2)
    for proc in workers:
        for ax, names in ((axes[0], ACCURACY), (axes[1], LOSS)):
            points = [(_minutes(history, s.time), _pick(s.metrics, names)) for s in proc.speeds]
            points = [(t, v) for t, v in points if v is not None]
            if points:
                ax.plot(*zip(*points), ".-", label=_who(proc))
    for ax, title in zip(axes, ("accuracy", "loss")):
        ax.set(title=f"{title} per display interval", xlabel="minutes since the job started")
        ax.legend(fontsize="small") if ax.lines else ax.text(0.5, 0.5, "not logged", ha="center")
    return _png(fig)


def plot_learning_rate(history: JobHistory) -> bytes | None:
    rates = history.learning_rates()
    if not rates:
        return None
    fig, axes = _figure()
    epochs = sorted(rates)
    axes[0].step(epochs, [rates[e] for e in epochs], where="post", marker="o")
    axes[0].set(title="learning rate per epoch", xlabel="epoch", yscale="log")
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def plot_throughput(history: JobHistory) -> bytes | None:
    """Images/s of every worker, labelled by host, over the job's time."""
    workers = [w for w in history.workers() if w.speeds]
    if not workers:
        return None
    fig, axes = _figure()
    for proc in workers:
        times = [_minutes(history, s.time) for s in proc.speeds]
        axes[0].plot(times, [s.samples_per_sec for s in proc.speeds], ".-", label=_who(proc))
    axes[0].set(title="images/s per host", xlabel="minutes since the job started", ylabel="img/s")
    axes[0].legend(fontsize="small")
    return _png(fig)


def plot_timeline(history: JobHistory) -> bytes | None:
    """Each process of each attempt as a bar from its first to its last log line; a failed end in red."""
    procs = [p for p in history.procs if p.start is not None and p.end is not None]
    if not procs:
        return None
    fig, axes = _figure()
    ax = axes[0]
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
    for row, proc in enumerate(procs):
        begin, end = _minutes(history, proc.start or 0), _minutes(history, proc.end or 0)
        colour = colours[proc.attempt % len(colours)]
        ax.barh(row, max(end - begin, 0.01), left=begin, color=colour, height=0.6)
        if proc.exit_status not in (None, 0):
            ax.plot(end, row, "x", color="red", markersize=10)
    ax.set_yticks(range(len(procs)), [f"a{p.attempt} {_who(p)}" for p in procs], fontsize="small")
    ax.set(title="attempts (x: exited with a fault)", xlabel="minutes since the job started")
    return _png(fig)


PLOTS: dict[str, Callable[[JobHistory], bytes | None]] = {
    "epochs": plot_epochs,
    "intervals": plot_intervals,
    "learning_rate": plot_learning_rate,
    "throughput": plot_throughput,
    "timeline": plot_timeline,
}


def draw(history: JobHistory) -> dict[str, bytes]:
    """Every plot there is data for, as PNG bytes; none without matplotlib."""
    if not can_plot():
        return {}
    drawn = {name: plot(history) for name, plot in PLOTS.items()}
    return {name: png for name, png in drawn.items() if png is not None}


def write_pngs(plots: dict[str, bytes], folder: str) -> list[str]:
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in plots.items():
        path = str(Path(folder) / f"{name}.png")
        write_atomic(path, _bytes_writer(png))
        paths.append(path)
    return paths


def _bytes_writer(data: bytes) -> Callable[[str], object]:
    return lambda tmp: Path(tmp).write_bytes(data)


# ---------------------------------------------------------------- HTML


def _who(proc: ProcHistory) -> str:
    return f"{proc.proc.host} {proc.proc.name}"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(plots: dict[str, bytes], name: str, missing: str) -> str:
    if name not in plots:
        return f"<p>{html.escape(missing)}</p>"
    data = base64.b64encode(plots[name]).decode("ascii")
    return f'<img alt="{name}" src="data:image/png;base64,{data}">'


def curves_section(plots: dict[str, bytes]) -> str:
    return (
        "<h2>Curves</h2>"
        + _img(plots, "epochs", "no epoch summaries in the logs")
        + _img(plots, "intervals", "no Speedometer metrics in the logs")
        + _img(plots, "learning_rate", "no learning-rate lines in the logs")
    )


def faults_section(history: JobHistory, plots: dict[str, bytes]) -> str:
    record = history.record
    summary = (
        f"state {record.state}; attempt {record.attempt}, restarts {record.restarts}"
        + (f"; hosts left out: {', '.join(record.excluded)}" if record.excluded else "")
        + (f"; {record.message}" if record.message else "")
    )
    rows = [
        (
            p.attempt,
            p.proc.name,
            p.proc.host,
            _when(p.start),
            _when(p.end),
            "-" if p.exit_status is None else p.exit_status,
            str(p.path) if p.found else f"{p.path} (not readable here)",
        )
        for p in history.procs
    ]
    header = ("attempt", "process", "host", "first line", "last line", "exit status", "log")
    return (
        "<h2>Faults and relaunches</h2>"
        + f"<p>{html.escape(summary)}</p>"
        + _img(plots, "timeline", "no timestamped log lines")
        + _table(header, rows)
    )


def options_section(history: JobHistory) -> str:
    record = history.record
    spec = {
        k: (sorted(v) if k in HIDDEN and isinstance(v, dict) else v)
        for k, v in record.launch_args.items()
        if k != "command"
    }
    return (
        "<h2>Options</h2>"
        + f"<pre>{html.escape(shlex.join(record.command))}</pre>"
        + _table(("launch option", "value"), sorted(spec.items()))
        + "<p>(environment: names only)</p>"
    )


def hosts_section(history: JobHistory) -> str:
    rows = []
    for host in history.record.host_names:
        procs = [p for p in history.procs if p.proc.host == host]
        current = [p for p in procs if p.attempt == history.record.attempt and p.speeds]
        rate = sum(p.speeds[-1].samples_per_sec for p in current)
        rows.append(
            (
                host,
                ", ".join(sorted({p.proc.name for p in procs})),
                f"{rate:,.1f}" if current else "-",
                "yes" if host in history.record.excluded else "no",
            )
        )
    return "<h2>Hosts</h2>" + _table(("host", "processes", "last images/s", "left out"), rows)


STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px}"
    "img{max-width:100%;display:block;margin:1em 0}pre{white-space:pre-wrap}"
)


def render(history: JobHistory, plots: dict[str, bytes], note: str = "") -> str:
    record = history.record
    title = f"imgscale report: job {record.job}"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(record.kind)} job, created {_when(record.created)}, "
        f"last updated {_when(record.updated)}</p>"
        + (f"<p>{html.escape(note)}</p>" if note else "")
        + curves_section(plots)
        + "<h2>Images/s per host</h2>"
        + _img(plots, "throughput", "no Speedometer lines in the logs")
        + faults_section(history, plots)
        + options_section(history)
        + hosts_section(history)
        + "</body></html>\n"
    )


def write_html(history: JobHistory, plots: dict[str, bytes], path: str) -> str:
    note = "" if can_plot() else NO_MATPLOTLIB
    write_text_atomic(path, render(history, plots, note))
    return path
