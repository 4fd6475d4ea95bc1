"""Shell command builders: hostile paths, values and commands arrive intact through /bin/sh."""

import json
import subprocess
import sys

import pytest

from engine.cluster.remote_cmd import env_words, join_argv, shell_command

HOSTILE = [
    "plain",
    "with space",
    "it's",
    'dq"uote',
    "semi;colon && rm -rf /nonexistent",
    "$(touch /tmp/imgscale-pwned)",
    "`touch /tmp/imgscale-pwned`",
    "new\nline",
    "back\\slash",
    "glob*?[x]",
    "-starts-with-dash",
    "",
]
DUMP = "import json, os, sys; print(json.dumps([sys.argv[1:], os.getcwd(), dict(os.environ)]))"


def run_sh(line: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, timeout=30)


@pytest.fixture()
def hostile_dir(tmp_path):
    path = tmp_path / "d i r;'$(x)`y`\nz"
    path.mkdir()
    return path


def test_argv_env_and_cwd_arrive_intact_through_sh(hostile_dir, tmp_path):
    env = {f"V{i}": value for i, value in enumerate(HOSTILE)}
    command = join_argv([sys.executable, "-c", DUMP, *HOSTILE])
    result = run_sh(shell_command(command, env=env, cwd=str(hostile_dir)))
    assert result.returncode == 0, result.stderr
    argv, cwd, seen_env = json.loads(result.stdout)
    assert argv == HOSTILE
    assert cwd == str(hostile_dir)
    assert {k: seen_env[k] for k in env} == env


def test_command_substitution_in_values_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"$(touch {marker}) `touch {marker}` ; touch {marker}"
    line = shell_command(join_argv(["echo", evil]), env={"X": evil}, cwd=f"{tmp_path}")
    result = run_sh(line)
    assert result.stdout == evil + "\n"
    assert not marker.exists()


def test_env_applies_to_every_part_of_a_compound_command():
    result = run_sh(shell_command('echo "$A"; echo "$A" >&2', env={"A": "x y"}))
    assert (result.stdout, result.stderr) == ("x y\n", "x y\n")


def test_path_prepend_puts_dirs_first_and_keeps_the_hosts_path(tmp_path):
    odd = tmp_path / "bin dir"
    odd.mkdir()
    result = run_sh(shell_command('echo "$PATH"', path_prepend=[str(odd)]))
    path = result.stdout.strip().split(":")
    assert path[0] == str(odd)
    assert "/bin" in path[1:] or "/usr/bin" in path[1:]


def test_missing_cwd_fails_the_command_instead_of_running_it_elsewhere(tmp_path):
    result = run_sh(shell_command("echo ran", cwd=str(tmp_path / "missing")))
    assert result.returncode != 0 and "ran" not in result.stdout


@pytest.mark.parametrize("name", ["A;rm", "1X", "A B", "", "A=B", "$(x)"])
def test_env_names_that_could_inject_are_refused(name):
    with pytest.raises(ValueError, match="environment variable name"):
        env_words({name: "v"})


def test_nul_bytes_are_refused_instead_of_silently_truncated():
    with pytest.raises(ValueError, match="NUL"):
        shell_command("echo", env={"A": "x\0y"})
    with pytest.raises(ValueError, match="NUL"):
        join_argv(["a\0b"])


def test_a_program_under_home_is_expanded_by_the_hosts_shell_its_arguments_are_not(tmp_path):
    program = tmp_path / "bin" / "show"
    program.parent.mkdir()
    program.write_text('#!/bin/sh\necho "$0" "$1"\n')
    program.chmod(0o755)
    line = join_argv(["~/bin/show", "~/not-expanded"])
    assert line == "\"$HOME\"/bin/show '~/not-expanded'"
    result = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True,
                            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=True)  # fmt: skip
    assert result.stdout == f"{program} ~/not-expanded\n"
