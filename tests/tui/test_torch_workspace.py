"""A workspace whose [train] engine is "torch": the console plans and launches torch ranks."""

from __future__ import annotations

from engine import api
from engine import workspace as wsmod


async def test_the_plan_dialog_of_a_torch_workspace_shows_ranks_and_no_servers(demo_ws):
    session = await api.open_workspace(demo_ws, telemetry=False)
    try:
        await session.set_train_options({"engine": "torch"})
        plan = await session.plan_launch("train")
    finally:
        await session.close()
    assert plan.engine == "torch"
    assert [role for _, role, _ in plan.roles] == ["rank"] * len(plan.roles)
    assert [rank for _, _, rank in plan.roles] == list(range(len(plan.roles)))
    assert "--engine" in plan.command and "torch" in plan.command
    spec = api.jobs.launch_spec(wsmod.load(demo_ws), "train")
    assert spec.training_engine.name == "torch" and spec.num_servers == 0


async def test_an_mxnet_workspace_still_plans_mxnet_roles(demo_ws):
    session = await api.open_workspace(demo_ws, telemetry=False)
    try:
        plan = await session.plan_launch("train")
    finally:
        await session.close()
    assert plan.engine == "mxnet" and "--engine" not in plan.command
    assert "worker" in {role for _, role, _ in plan.roles}
    assert "rank" not in {role for _, role, _ in plan.roles}
