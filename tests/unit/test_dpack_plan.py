"""Distributed packing's pure parts: sharing chunks out over hosts, and the pack flags sent to them."""

from engine.cluster.hosts import parse_hosts
from engine.prep.pack import PackOptions
from engine.prep.pack_remote import assign, host_script, pack_args


def test_chunks_are_balanced_by_lines_and_weighted_by_slots(tmp_path):
    sizes = {"c0": 10, "c1": 9, "c2": 2, "c3": 1}
    chunks = []
    for name, lines in sizes.items():
        (tmp_path / f"{name}.lst").write_text("".join(f"{i}\t0\tx{i}.jpg\n" for i in range(lines)))
        chunks.append(tmp_path / f"{name}.lst")
    hosts = parse_hosts("a\nb\n")
    share = {h: [c.stem for c in cs] for h, cs in assign(chunks, hosts).items()}
    assert share == {"a": ["c0", "c3"], "b": ["c1", "c2"]}
    share = assign(chunks, parse_hosts("a slots=4\nb\n"))  # a does 4 times b's work per turn
    assert [c.stem for c in share["a"]] == ["c0", "c2", "c3"] and [c.stem for c in share["b"]] == [
        "c1"
    ]


def test_pack_args_reproduce_the_options_and_the_script_quotes_paths():
    options = PackOptions(
        resize=480, quality=90, num_thread=4, center_crop=True, reduced_decode=False
    )
    args = pack_args(options)
    assert (
        args[:2] == ["--resize", "480"]
        and "--center-crop" in args
        and "--no-reduced-decode" in args
    )
    assert "--pass-through" not in args
    script = host_script("/opt/py", ["/data/my lists/a_0.lst"], "/data/im ages", args)
    assert script.splitlines()[0] == "set -e"
    assert "'/data/my lists/a_0.lst' '/data/im ages' --resize 480" in script
