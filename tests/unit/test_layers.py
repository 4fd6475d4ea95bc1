"""The engine's layers: the cluster and prep code sit below training, the workspace, the api and the
CLI, and what differs between engines is decided by the engines (engine.train.launch) alone."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from engine.cluster.hosts import parse_hosts
from engine.train.launch import registry
from engine.train.launch.engines import Engine, Layout, Rendezvous
from engine.train.launch.launch import LaunchSpec, place_processes, plan_lines
from engine.train.launch.placement import WORKER, Placement

ENGINE = Path(__file__).resolve().parents[2] / "engine"
LOWER = ("cluster", "prep")
HIGHER = ("engine.train", "engine.workspace", "engine.api", "engine.cli")
ENGINE_FILES = {"engines.py", "mxnet_engine.py", "torch_engine.py", "registry.py"}
# an engine decided by name, or "is it distributed" spelled by hand instead of asking the engine
BRANCH = re.compile(
    r'[!=]= *"(torch|mxnet)"|"(torch|mxnet)" *[!=]=|startswith\("dist|"dist" (not )?in'
)


def imported(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside a function, relative ones resolved."""
    package = ".".join(path.relative_to(ENGINE.parent).with_suffix("").parts[:-1])
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            names |= {base, *(f"{base}.{a.name}" for a in node.names)}
    return names


def test_cluster_and_prep_import_nothing_from_training_the_workspace_the_api_or_the_cli():
    above = [
        f"{path.relative_to(ENGINE.parent)} imports {name}"
        for layer in LOWER
        for path in sorted((ENGINE / layer).rglob("*.py"))
        for name in sorted(imported(path))
        if any(name == h or name.startswith(h + ".") for h in HIGHER)
    ]
    assert above == []


def test_the_layer_check_sees_imports_inside_functions_and_relative_ones():
    source = "def f():\n    from engine.train import options\n\nfrom ..api import session\n"
    found = imports_in(source, "engine.cluster")
    assert {"engine.train.options", "engine.api.session"} <= found


def test_no_engine_branch_outside_the_engines_and_their_registry():
    roots = [ENGINE, ENGINE.parent / "tui"]
    found = [
        f"{path.relative_to(ENGINE.parent)}:{n}: {line.strip()}"
        for root in roots
        for path in sorted(root.rglob("*.py"))
        if not (path.parent.name == "launch" and path.name in ENGINE_FILES)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if BRANCH.search(line)
    ]
    assert found == []


class OneRankPerHost(Engine):
    """A third engine, as a new file would declare it: one rank on each host, no servers."""

    name = "onerank"
    label = "one rank per host"
    package = "json"
    install_hint = "nothing to install"
    has_servers = False
    trainer = "engine.train.run"

    def place(self, layout: Layout, slots: Sequence[int | None]) -> list[Placement]:
        return [Placement(WORKER, rank, rank) for rank in range(min(layout.workers, len(slots)))]

    def environments(
        self, meet: Rendezvous, placement: Sequence[Placement], addresses: Sequence[str]
    ) -> list[dict[str, str]]:
        return [{"LEADER": meet.master, "ME": addresses[p.host]} for p in placement]

    def resume_command(self, command: Sequence[str], prefix: str) -> tuple[str, ...]:
        return (*command, "--from", prefix)

    def crosses_hosts(self, kv_store: str, workers: int) -> bool:
        return workers > 1

    def describe(
        self, placement: Sequence[Placement], host_names: Sequence[str], master: str, port: str
    ) -> list[str]:
        return [f"{host_names[p.host]}: rank {p.rank}" for p in placement]


@pytest.fixture
def third_engine(monkeypatch) -> Engine:
    engine = OneRankPerHost()
    engines: Mapping[str, Engine] = {**registry.ENGINES, engine.name: engine}
    monkeypatch.setattr(registry, "ENGINES", engines)
    return engine


def test_a_third_engine_is_one_class_and_one_registry_entry(tmp_path, third_engine):
    hosts = tmp_path / "hosts"
    hosts.write_text("a slots=4\nb slots=4\n")
    spec = LaunchSpec(("imgscale", "train", "--engine", "onerank"), 2, hosts_file=str(hosts))
    assert spec.training_engine is third_engine  # read from the command, once, by the registry
    assert plan_lines(spec) == ["engine: onerank", "a: rank 0", "b: rank 1"]
    assert registry.engine_for(None, ("python", "x.py", "--engine", "nope")).name == "mxnet"


def test_resize_fits_the_workers_to_the_slots_left_and_places_servers_on_them():
    mxnet = registry.ENGINES["mxnet"]
    smaller = mxnet.resize(Layout(8, 2), [4])  # one of two 4-slot hosts is gone
    assert smaller == Layout(4, 2)
    placement = mxnet.place(smaller, [4])
    assert {p.host for p in placement} == {0} and sum(p.role == WORKER for p in placement) == 4
    torch = registry.ENGINES["torch"]
    assert torch.resize(Layout(16), [8, None]) == Layout(9)  # a host without slots= offers one


@pytest.mark.parametrize(
    ("name", "kv_store", "workers", "crosses"),
    [
        ("mxnet", "dist_sync", 2, True),
        ("mxnet", "device", 2, False),  # each worker alone: no gradient leaves the host
        ("mxnet", "dist_sync", 1, False),
        ("torch", "device", 2, True),  # DDP all-reduces whatever the kvstore says
        ("torch", "dist_sync", 1, False),
    ],
)
def test_whether_gradients_cross_hosts_is_the_engines_answer(name, kv_store, workers, crosses):
    assert registry.ENGINES[name].crosses_hosts(kv_store, workers) is crosses


def test_each_engine_places_as_its_launcher_did(tmp_path):
    hosts = parse_hosts("a slots=2\nb slots=2\n")
    torch = LaunchSpec(("imgscale", "train", "--engine", "torch"), 3)
    assert [(p.role, p.rank, p.host) for p in place_processes(torch, hosts)] == [
        ("worker", 0, 0),
        ("worker", 1, 0),
        ("worker", 2, 1),
    ]
    mxnet = LaunchSpec(("python", "train.py"), 2, num_servers=2)
    roles = [(p.role, p.host) for p in place_processes(mxnet, hosts)]
    assert roles[0] == ("scheduler", 0) and roles.count(("server", 0)) == 1
