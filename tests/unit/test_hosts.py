"""Hosts-file parsing: launch.py's lines, user@/IPv6/slots/gpus/options, errors naming the line."""

import sys

import pytest

from engine.cluster.hosts import HostSpec, parse_hosts, read_hosts, split_host
from engine.errors import UserError


def one(text: str) -> HostSpec:
    (spec,) = parse_hosts(text, "hosts")
    return spec


def test_launch_py_lines_keep_their_meaning_port_after_colon_is_ssh_port():
    specs = parse_hosts("node-a\nnode-b:2222\n", "hosts")
    assert [(s.name, s.address, s.port, s.user) for s in specs] == [
        ("node-a", "node-a", None, None),
        ("node-b:2222", "node-b", 2222, None),
    ]


def test_user_at_host_port_with_slots_and_gpus():
    spec = one("ubuntu@10.0.0.7:22 slots=8 gpus=0,1,2,3")
    assert (spec.user, spec.address, spec.port, spec.slots, spec.gpus) == (
        "ubuntu",
        "10.0.0.7",
        22,
        8,
        (0, 1, 2, 3),
    )
    assert spec.name == "10.0.0.7:22"  # the user is not part of the shown name


def test_ipv6_with_and_without_brackets_is_not_mistaken_for_a_port():
    assert split_host("[fe80::1]:2200") == (None, "fe80::1", 2200)
    assert split_host("root@[::1]") == ("root", "::1", None)
    assert split_host("fe80::1") == (None, "fe80::1", None)


def test_comments_blank_lines_and_quoted_values():
    spec = one('# cluster\n\n  node-a   workdir="/data/my runs"  # trailing comment\n')
    assert spec.option("workdir") == "/data/my runs"


def test_star_line_gives_every_host_defaults_and_a_host_overrides_them():
    specs = parse_hosts("* python=/opt/py known_hosts=/kh\na\nb python=/usr/bin/python3\n")
    assert [s.python for s in specs] == ["/opt/py", "/usr/bin/python3"]
    assert all(s.option("known_hosts") == "/kh" for s in specs)


def test_python_defaults_to_this_interpreters_path():
    assert one("a").python == sys.executable


def test_env_and_path_prepend_options():
    spec = one("a env.MXNET_BACKWARD_DO_MIRROR=1 path_prepend=/opt/bin:/x/bin")
    assert spec.env == {"MXNET_BACKWARD_DO_MIRROR": "1"}
    assert spec.path_prepend == ("/opt/bin", "/x/bin")


def test_name_option_renames_the_host():
    assert one("root@127.0.0.2:2222 name=node1").name == "node1"


def test_host_key_checking_is_on_unless_the_line_opts_out():
    assert not one("a").flag("insecure_host_key")
    assert one("a insecure_host_key=yes").flag("insecure_host_key")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("node-a:notaport", "SSH port"),
        ("node-a:70000", "SSH port"),
        ("node-a slots=0", "slots"),
        ("node-a slots=four", "slots"),
        ("node-a gpus=0,x", "gpus"),
        ("node-a gpus=1,1", "twice"),
        ("node-a slot=4", "unknown option 'slot'"),
        ("node-a 4", "not key=value"),
        ("@node-a", "empty user"),
        ("node-a insecure_host_key=maybe", "yes or no"),
        ("node-a env.1BAD=x", "environment variable name"),
        ("[fe80::1", "IPv6"),
        ('node-a workdir="/unterminated', "quotation"),
        ("node-a connect_timeout=0", "seconds"),
        ("node-a slots=100000", "at most 256 processes per host"),
        ("node\0a slots=2", "control character"),
        ("node-a workdir=/x\x1b[2J", "control character"),
    ],
)
def test_bad_line_error_names_file_line_and_problem(line, words):
    with pytest.raises(UserError) as err:
        parse_hosts(f"# header\n\n{line}\n", "cluster.hosts")
    message = str(err.value)
    assert message.startswith("cluster.hosts, line 3: ")
    assert words in message


def test_duplicate_host_names_the_first_line_and_suggests_slots():
    with pytest.raises(UserError, match=r"line 3: host 'a' is already listed on line 1.*slots"):
        parse_hosts("a\nb\na\n", "h")


def test_empty_file_is_an_error_not_an_empty_cluster():
    with pytest.raises(UserError, match="no hosts"):
        parse_hosts("# only a comment\n\n", "h")


def test_missing_hosts_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_hosts(tmp_path / "nope")


def test_host_spec_is_frozen_and_hashable():
    spec = one("a slots=2")
    with pytest.raises(AttributeError):
        spec.slots = 3  # type: ignore[misc]
    assert {spec: 1}[spec] == 1


def test_the_documented_example_file_parses():
    from pathlib import Path

    specs = read_hosts(Path(__file__).parents[2] / "hosts.example")
    assert [s.name for s in specs][:2] == ["gpu-node-1", "gpu-node-2:2222"]
    assert all(s.option("known_hosts") for s in specs)
    assert not any(s.flag("insecure_host_key") for s in specs)
