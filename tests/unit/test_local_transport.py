"""LocalTransport: this machine as a host, with the same command semantics as SSH."""

import asyncio
import os

import pytest

from engine.cluster.transport.base import CommandTimedOut
from engine.cluster.transport.local import LocalTransport


async def test_run_merges_env_over_os_environ_and_uses_cwd(tmp_path):
    t = LocalTransport(env={"HOSTVAR": "from hosts file"})
    r = await t.run(
        'echo "$HOSTVAR|$A|$HOME"; pwd; echo oops >&2; exit 3',
        env={"A": "a 'b' $(c)"},
        cwd=str(tmp_path),
    )
    assert r.exit_status == 3
    assert r.stdout == f"from hosts file|a 'b' $(c)|{os.environ['HOME']}\n{tmp_path}\n"
    assert r.stderr == "oops\n"


async def test_input_reaches_stdin():
    r = await LocalTransport().run("tr a-z A-Z", input="hello\n")
    assert r.stdout == "HELLO\n"


async def test_timeout_ends_the_whole_process_group_and_says_so(tmp_path):
    pidfile = tmp_path / "child.pid"
    t = LocalTransport()
    with pytest.raises(CommandTimedOut, match="timed out after 0.5 s"):
        await t.run(f"sleep 60 & echo $! > {pidfile}; wait", timeout=0.5)
    child = int(pidfile.read_text())
    deadline = asyncio.get_running_loop().time() + 5
    while _alive(child) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert not _alive(child), "the background child of a timed-out command was left running"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_stream_yields_lines_of_both_streams_then_the_exit_status():
    lines = LocalTransport().stream("printf 'a\\nb'; echo e >&2; exit 4")
    got = [(line.stream, line.text) async for line in lines]
    assert sorted(got) == [("stderr", "e"), ("stdout", "a"), ("stdout", "b")]
    assert lines.exit_status == 4


async def test_closing_a_stream_ends_its_command():
    lines = LocalTransport().stream("echo started; exec sleep 60")
    first = await lines.__anext__()
    assert first.text == "started"
    await lines.aclose()
    assert await asyncio.wait_for(lines.wait(), 10) is None
    assert lines.signal == "TERM"


async def test_closing_a_stream_before_it_started_does_not_hang():
    lines = LocalTransport().stream("sleep 60")
    await asyncio.wait_for(lines.aclose(), 10)
    assert lines.finished


async def test_send_signal_reaches_the_command():
    lines = LocalTransport().stream(
        "trap 'echo got INT; exit 7' INT; echo ready; while :; do sleep 0.1; done"
    )
    assert (await lines.__anext__()).text == "ready"
    await lines.send_signal("INT")
    assert [line.text async for line in lines] == ["got INT"]
    assert lines.exit_status == 7


async def test_put_and_get_copy_files_and_trees(tmp_path):
    t = LocalTransport()
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("data")
    dst = tmp_path / "dst"
    dst.mkdir()
    await t.put(str(src), str(dst), recurse=True)
    assert (dst / "src" / "sub" / "f.txt").read_text() == "data"
    await t.get(str(src / "sub" / "f.txt"), str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "data"
    with pytest.raises(IsADirectoryError):
        await t.put(str(src), str(tmp_path / "x"))


async def test_stream_with_stdin_answers_each_request():
    lines = LocalTransport().stream('while read -r x; do echo "got $x"; done', stdin=True)
    try:
        for word in ("one", "two words"):
            await lines.write(word + "\n")
            assert (await asyncio.wait_for(lines.__anext__(), 10)).text == f"got {word}"
    finally:
        await lines.aclose()
