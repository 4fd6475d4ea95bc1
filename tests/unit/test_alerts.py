"""Issue 23 item 9: a job's supervisor alerts (finished, failed, stalled, straggler) with no console open."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from webhook import Webhook

from engine import workspace as wsmod
from engine.api import jobs
from engine.cluster.process.alerts import AlertOptions, Notifier, stragglers
from engine.errors import UserError
from engine.events import Alert, JobState, LogLine
from engine.train.logparse import progress_of

REPO = pathlib.Path(__file__).resolve().parents[2]
WAIT_S = 30.0


@pytest.fixture
def webhook():
    """A loopback HTTP server; yields (url, queue of the (path, JSON body) posted to it)."""
    hook = Webhook()
    yield hook.url, hook.received
    hook.close()


def imgscale(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "IMGSCALE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def launch_detached(tmp_path, job: str, notify: str, script: str, *flags: str) -> None:
    done = imgscale(
        tmp_path,
        "launch", "--launcher", "local", "-n", "1", "-s", "0", "--detach", "--job", job,
        "--run-dir", str(tmp_path / "runs"), "--notify", notify, *flags,
        "--", sys.executable, "-c", script,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def next_alert(received) -> tuple[str, dict]:
    return received.get(timeout=WAIT_S)


def test_finished_job_posts_to_webhook_with_no_console(tmp_path, webhook):
    url, received = webhook
    launch_detached(tmp_path, "al-done", url + "/hook/secret", "print('ok')")
    path, alert = next_alert(received)
    assert path == "/hook/secret"
    assert (alert["job"], alert["kind"], alert["attempt"]) == ("al-done", "finished", 0)


def test_failed_job_posts_to_webhook_with_no_console(tmp_path, webhook):
    url, received = webhook
    launch_detached(tmp_path, "al-fail", url, "raise SystemExit(3)")
    _, alert = next_alert(received)
    assert (alert["job"], alert["kind"]) == ("al-fail", "failed")


def test_stalled_job_posts_to_webhook_and_once_only(tmp_path, webhook):
    url, received = webhook
    script = "import time; print('Epoch[0] Batch [20] Speed: 50.0 samples/sec', flush=True); time.sleep(600)"
    launch_detached(tmp_path, "al-stall", url, script, "--stall-alert", "1")
    try:
        _, alert = next_alert(received)
        assert (alert["job"], alert["kind"]) == ("al-stall", "stalled")
        assert alert["figures"]["idle_s"] >= 1
    finally:
        imgscale(tmp_path, "kill", "al-stall", "--grace", "0")
    assert received.empty()  # sent once for the attempt, though the job stayed stalled


def test_command_target_gets_the_json_on_stdin(tmp_path):
    out = tmp_path / "alert.json"
    launch_detached(tmp_path, "al-cmd", f"cat > {out}.part && mv {out}.part {out}", "print(1)")
    deadline = time.monotonic() + WAIT_S
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the file the command writes (another process), bounded
    alert = json.loads(out.read_text())
    assert (alert["job"], alert["kind"]) == ("al-cmd", "finished")


def test_webhook_url_is_kept_in_the_owner_only_job_record_not_the_run_folder(tmp_path, webhook):
    url, received = webhook
    launch_detached(tmp_path, "al-rec", url + "/token123", "print('ok')")
    next_alert(received)
    record = tmp_path / "state" / "jobs" / "al-rec" / "job.json"
    assert json.loads(record.read_text())["launch_args"]["alerts"]["notify"].endswith("/token123")
    assert record.stat().st_mode & 0o077 == 0
    run_files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert run_files and not [p for p in run_files if b"token123" in p.read_bytes()]


def speed_line(host: str, rate: float) -> LogLine:
    return LogLine(host, "worker", 0, f"Epoch[1] Batch [40-60] Speed: {rate} samples/sec acc=0.5")


def test_straggler_found_from_recorded_throughput():
    rates = dict(
        progress_of(speed_line(h, r)) for h, r in [("a", 410.0), ("b", 395.0), ("c", 120.0)]
    )  # type: ignore[misc]
    assert rates == {"a": 410.0, "b": 395.0, "c": 120.0}
    assert [s[0] for s in stragglers(rates, 0.5)] == ["c"]
    assert stragglers(rates, 0.0) == [] and stragglers({"a": 1.0}, 0.5) == []


def test_straggler_alert_raised_once_per_attempt():
    seen: list = []
    notifier = Notifier("j", AlertOptions(straggler_ratio=0.5), seen.append, progress_of)
    for host, rate in [("a", 400.0), ("b", 100.0), ("a", 410.0), ("b", 90.0)]:
        notifier.see(speed_line(host, rate), 0)
    alerts = [e for e in seen if isinstance(e, Alert)]
    assert [(a.kind, a.host) for a in alerts] == [("straggler", "b")]


def test_workspace_alerts_table_reaches_the_console_launch(tmp_path):
    ws = wsmod.create(tmp_path / "ws", {"root": "images"})
    ws.config["alerts"] = {"notify": "https://hooks.example/T0K3N", "stall_alert_s": 60}
    spec = jobs.launch_spec(ws, "train")
    assert spec.alert_options() == AlertOptions("https://hooks.example/T0K3N", 60.0)


def test_workspace_alerts_bad_ratio_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "workspace.toml"
    with pytest.raises(UserError, match="workspace.toml: .*straggler-ratio 3: give at most 1"):
        wsmod.check_config(path, {"alerts": {"straggler_ratio": 3}})


def test_an_undeliverable_alert_is_one_warning_line_not_a_crash():
    closed = Webhook()
    closed.close()  # nothing listens there any more: the POST is refused

    async def run() -> list:
        seen: list = []
        notifier = Notifier("j", AlertOptions(notify=closed.url + "/T0K3N"), seen.append)
        notifier.see(JobState("j", "failed", message="worker 0 exited 1"), 0)
        await notifier.drain()
        return seen

    seen = asyncio.run(run())
    warnings = [e for e in seen if isinstance(e, LogLine)]
    assert [type(e).__name__ for e in seen] == ["Alert", "LogLine"]
    assert warnings[0].level == "warning" and "alert failed not delivered" in warnings[0].text
    assert "T0K3N" not in warnings[0].text  # the URL's path may be a secret


def test_an_out_of_bounds_alert_flag_is_refused_in_one_line_before_starting(tmp_path):
    done = imgscale(tmp_path, "launch", "--launcher", "local", "-n", "1", "-s", "0",
                    "--straggler-ratio", "2", "--", "true")  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "imgscale launch: --straggler-ratio 2.0: give at most 1"
    assert not (tmp_path / "state" / "jobs").exists()


def test_a_console_job_without_an_alerts_table_still_alerts_on_stragglers(tmp_path):
    ws = wsmod.create(tmp_path / "ws", {"root": "images"})
    assert jobs.launch_spec(ws, "train").alert_options() == AlertOptions()
