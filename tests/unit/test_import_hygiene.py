"""The engine stays headless and light: importing it (and its CLI) loads no UI and no heavy framework."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORBIDDEN_EVERYWHERE = ("textual", "rich", "tui")
HEAVY = (
    "mxnet", "cv2", "torch", "textual", "rich", "tui", "matplotlib", "tensorboardX", "tensorboard",
)  # fmt: skip


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in json.loads(out.stdout)}


@pytest.mark.parametrize(
    "statement",
    ["import engine", "import engine.events", "import engine.cli; engine.cli.build_parser()"],
)
def test_engine_import_loads_nothing_heavy(statement):
    assert _loaded_after(statement).isdisjoint(HEAVY)


def _imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_engine_module_imports_ui_anywhere():
    """Even lazily, inside a function: the engine never draws."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_modules(path) & set(FORBIDDEN_EVERYWHERE))
        for path in (ROOT / "engine").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def _engine_imports(path: pathlib.Path) -> set[str]:
    """Every engine.* module a file imports, at any depth (inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.startswith("engine.")}


def _train_imports(folder: str, glob: str = "*.py") -> dict[str, set[str]]:
    return {
        str(path.relative_to(ROOT)): _engine_imports(path)
        for path in (ROOT / "engine" / "train" / folder).glob(glob)
    }


@pytest.mark.parametrize(("engine", "other"), [("mxnet", "torch"), ("torch", "mxnet")])
def test_training_engines_never_import_each_other(engine, other):
    prefix = f"engine.train.{other}"
    offenders = {
        path: sorted(n for n in names if n.startswith(prefix))
        for path, names in _train_imports(engine).items()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_what_both_engines_share_imports_neither():
    """engine/train/*.py (options, log format, checkpoints …) is shared; only run.py picks an engine."""
    engines = ("engine.train.mxnet", "engine.train.torch")
    shared = {k: v for k, v in _train_imports(".").items() if not k.endswith("/run.py")}
    offenders = {
        path: sorted(n for n in names if n.startswith(engines)) for path, names in shared.items()
    }
    assert shared and {k: v for k, v in offenders.items() if v} == {}


CONSOLE_DOORS = ("engine.api", "engine.events", "engine.errors")


def _engine_imports(path: pathlib.Path) -> set[str]:
    """Every engine module a file imports, at module level or inside a function.

    ``from engine import api`` counts as engine.api; ``from engine.api import scaling`` as
    engine.api.scaling when that is a module of its own, so a submodule cannot slip through.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "engine")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "engine":
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                is_module = (ROOT / full.replace(".", "/")).with_suffix(".py").is_file() or (
                    ROOT / full.replace(".", "/") / "__init__.py"
                ).is_file()
                found.add(full if is_module else node.module)
    return found


def test_console_goes_through_the_api_only():
    """tui/ reaches the engine through engine.api, engine.events and engine.errors, nothing else."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(_engine_imports(path) - set(CONSOLE_DOORS))
        for path in (ROOT / "tui").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_door_check_catches_a_console_file_that_reaches_past_it(tmp_path):
    source = tmp_path / "screen.py"
    source.write_text(
        "from engine import api, workspace\n"
        "from engine.api import Session, scaling\n"
        "def later():\n"
        "    import engine.bench.report\n"
    )
    assert _engine_imports(source) - set(CONSOLE_DOORS) == {
        "engine.workspace",
        "engine.api.scaling",
        "engine.bench.report",
    }


def test_the_console_process_loads_nothing_heavy_through_the_api():
    assert _loaded_after("import engine.api").isdisjoint(HEAVY)


def test_the_gpu_benchmark_runs_from_a_checkout_without_the_console_or_ssh_packages():
    # The GPU machine of issue 10 has torch, numpy 2 and opencv, but no textual, rich, asyncssh,
    # psutil or mxnet: what bench_torch_gpu.py imports must not need them.
    pytest.importorskip("torch", reason="the torch engine is an extra: pip install -e .[torch]")
    blocked = "textual", "rich", "asyncssh", "psutil", "mxnet"
    where = "benchmarks"
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r})); sys.path.insert(0, {where!r}); "
        "import engine.train.torch.run, engine.train.torch.fit, engine.train.torch.data; "
        "import bench_torch_loader; import bench_torch_gpu"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)


# What the console may use of a Session: its public face, decided here. Its parts (workspace,
# stream, stages, follower, figures, sweeps, pool) and the job are the session's own business.
SESSION_SURFACE = frozenset(
    {
        "batches",
        "close",
        "closed",
        "doctor",
        "emit",
        "events",
        "export",
        "gpus_per_host",
        "host_cause",
        "host_reading",
        "hosts_file",
        "kill_leftovers",
        "launch",
        "option_fields",
        "plan_launch",
        "rate_history",
        "relaunch",
        "resume_stage",
        "running_job",
        "set_stage_options",
        "set_train_options",
        "snapshot",
        "speeds",
        "stage_options",
        "start_all",
        "start_stage",
        "start_sweep",
        "stop_job",
        "stop_stage",
        "stop_sweep",
        "sweep_running",
        "topology",
        "undo_stage",
        "wait_stage",
    }
)
ENGINE_CALLS = ("engine_call", "confirm_then")  # tui/app.py: their lambdas are given the session


def _session_names(tree: ast.AST) -> list[tuple[ast.AST, set[str]]]:
    """(scope, names that hold a Session there): `session` anywhere, a parameter annotated
    Session, and the parameter of a lambda handed to the app's engine calls."""
    scopes: list[tuple[ast.AST, set[str]]] = [(tree, {"session"})]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = {
                a.arg
                for a in node.args.args
                if a.annotation is not None and ast.unparse(a.annotation).endswith("Session")
            }
            scopes.append((node, names))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ENGINE_CALLS:
            for arg in node.args:
                if isinstance(arg, ast.Lambda):
                    scopes.append((arg.body, {a.arg for a in arg.args.args}))
    return scopes


def _holds_session(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in names
    return isinstance(node, ast.Attribute) and node.attr == "session"


def _reaches(path: pathlib.Path) -> set[str]:
    """What a console file reads of api objects beyond their face: `session.x` outside the
    Session's surface, and `obj._x` on anything but self (another object's private state)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for scope, names in _session_names(tree):
        for node in ast.walk(scope):
            if (
                isinstance(node, ast.Attribute)
                and _holds_session(node.value, names)
                and node.attr not in SESSION_SURFACE
            ):
                found.add(f"session.{node.attr}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            and not (
                isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "super"
            )
        ):
            found.add(f"{ast.unparse(node.value)}.{node.attr}")
    return found


def test_console_reads_only_the_sessions_public_face():
    """tui/ never reaches into the session's parts, its job or any object's private state."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(_reaches(path)) for path in (ROOT / "tui").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_reach_check_catches_the_consoles_old_reaches(tmp_path):
    source = tmp_path / "app.py"
    source.write_text(
        "def bridge(self):\n"
        "    hosts = self.session.workspace.hosts_file\n"
        "    self.grid.histories = self.session.rates.history\n"
        "    self.engine_call(lambda s: s.job.stop(), 'stop')\n"
        "    self.engine_call(lambda s: s.stop_job(), 'stop')\n"
        "async def show(session: api.Session):\n"
        "    return session.follower, session.snapshot()\n"
        "def peek(app):\n"
        "    return app.session.stream._put, self._mine\n"
    )
    assert _reaches(source) == {
        "session.workspace",
        "session.rates",
        "session.job",
        "session.follower",
        "session.stream",
        "app.session.stream._put",
    }


def test_the_sessions_surface_is_what_a_session_has():
    from engine import api

    missing = sorted(name for name in SESSION_SURFACE if not hasattr(api.Session, name))
    assert missing == []


def _private_loop_reads(path: pathlib.Path) -> set[str]:
    """`loop._x` or getattr(loop, "_x"): an event loop's private state, which other loops lack."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            target, name = node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", "") == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and str(node.args[1].value).startswith("_")
        ):
            target, name = node.args[0], str(node.args[1].value)
        else:
            continue
        if ast.unparse(target).split(".")[-1] in ("loop", "_loop", "event_loop"):
            found.add(f"{ast.unparse(target)}.{name}")
    return found


def test_the_engine_reads_no_private_state_of_an_event_loop():
    offenders = {
        str(path.relative_to(ROOT)): sorted(_private_loop_reads(path))
        for path in (ROOT / "engine").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_loop_check_catches_the_sessions_old_thread_test(tmp_path):
    source = tmp_path / "session.py"
    source.write_text(
        "def emit(self, event):\n"
        "    if threading.get_ident() == getattr(self.loop, '_thread_id', None):\n"
        "        return self.loop._ready\n"
    )
    assert _private_loop_reads(source) == {"self.loop._thread_id", "self.loop._ready"}
