"""The `imgscale` command: user mistakes get one line and exit status 2, never a traceback."""

import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args, names",
    [
        (("pack", "--bogus", "p", "r"), "--bogus"),
        (("filter",), "ROOT"),
        (("nosuch",), "nosuch"),
        (("filter", "/no/such/folder"), "/no/such/folder"),
    ],
)
def test_user_error_is_one_line_naming_the_culprit(args, names):
    result = _run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "Traceback" not in result.stderr


def test_help_lists_every_area():
    out = _run("--help").stdout
    for command in ("prepare", "pack", "launch", "train", "bench"):
        assert command in out


def test_sigterm_ends_a_running_command_like_ctrl_c():
    """A terminated command takes its Ctrl-C way out (for probe: a clean end) instead of dying."""
    import signal

    probe = subprocess.Popen(
        [sys.executable, "-m", "engine", "probe", "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert probe.stdout.readline(), "the probe printed nothing"
        probe.send_signal(signal.SIGTERM)
        assert probe.wait(timeout=30) == 0  # killed by the signal it would be -15
        assert "Traceback" not in probe.stderr.read()
    finally:
        if probe.poll() is None:
            probe.kill()
        probe.wait()


def test_training_workers_keep_the_default_sigterm(monkeypatch):
    """The supervisor's TERM must end a worker at once, even inside a ps-lite barrier."""
    import argparse
    import signal

    from engine import cli

    seen = {}
    real_parser = cli.build_parser

    def parser_that_records_the_handler(command=None):
        parser = real_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name in ("train", "jobs"):

            def record(_args, name=name):
                seen[name] = signal.getsignal(signal.SIGTERM)
                return 0

            sub.choices[name].set_defaults(func=record)
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_that_records_the_handler)
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert cli.main(["train"]) == 0
        assert cli.main(["jobs"]) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == {"train": signal.SIG_DFL, "jobs": cli._terminate}


def test_the_command_table_names_exactly_what_each_area_registers():
    """build_parser(COMMAND) loads one area by this table, so it must not drift from register()."""
    import argparse
    import importlib

    from engine import cli

    for module, names in cli.COMMAND_MODULES.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert tuple(sub.choices) == names, module


def test_a_local_pack_loads_neither_the_cluster_nor_the_benchmark_code():
    """Its workers start once the parser is built: every module loaded first delays them."""
    code = (
        "import sys; from engine import cli; cli.build_parser('pack'); "
        "print(sorted(m for m in sys.modules if m.startswith(('engine.cluster', 'engine.bench', "
        "'engine.train', 'asyncio'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
