"""Console test fixtures: a real demo workspace per test, and waiting on conditions (never on time)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine import api


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory) -> Path:
    """One generated demo workspace, copied for each test (generation is the slow part)."""
    return api.create_demo_workspace(tmp_path_factory.mktemp("template") / "demo")


@pytest.fixture
def demo_ws(demo_template, tmp_path) -> Path:
    target = tmp_path / "demo"
    shutil.copytree(demo_template, target)
    return target


@pytest.fixture(autouse=True)
def job_records_in_tmp(tmp_path, monkeypatch):
    """Job records of launched jobs go to this test's folder, not the user's ~/.imgscale."""
    monkeypatch.setenv("IMGSCALE_HOME", str(tmp_path / "imgscale-home"))


@pytest.fixture(scope="session")
def prepared_template(demo_template, tmp_path_factory) -> Path:
    """A demo workspace with every preparation stage done (for launching jobs)."""
    import asyncio

    target = tmp_path_factory.mktemp("prepared") / "demo"
    shutil.copytree(demo_template, target)

    async def prepare() -> None:
        session = await api.open_workspace(target, telemetry=False)
        await session.start_all()
        await asyncio.gather(*session.tasks)
        states = {s.name: s.state for s in session.snapshot().stages}
        await session.close()
        prepared = {name: state for name, state in states.items() if name != "train"}
        assert prepared and set(prepared.values()) == {"done"}, states

    asyncio.run(prepare())
    return target


@pytest.fixture
def prepared_ws(prepared_template, tmp_path) -> Path:
    target = tmp_path / "demo"
    shutil.copytree(prepared_template, target)
    return target
