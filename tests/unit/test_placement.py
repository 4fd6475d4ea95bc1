"""Placement of scheduler, servers and workers: launch.py's round-robin, slots, --servers-per-host."""

import pytest

from engine.errors import UserError
from engine.train.launch.placement import Placement, describe, place


def by_host(plan, hosts):
    return describe(plan, hosts)


def test_default_matches_launch_py_round_robin_servers_first():
    # launch.py: process i of [servers..., workers...] goes to host i % len(hosts)
    plan = place(4, 2, [None, None, None])
    assert plan[0] == Placement("scheduler", 0, 0)
    assert [(p.role, p.rank, p.host) for p in plan[1:]] == [
        ("server", 0, 0),
        ("server", 1, 1),
        ("worker", 0, 2),
        ("worker", 1, 0),
        ("worker", 2, 1),
        ("worker", 3, 2),
    ]


def test_servers_default_to_the_number_of_workers_like_launch_py():
    plan = place(3, None, [None, None])
    assert sum(p.role == "server" for p in plan) == 3


def test_no_servers_means_no_scheduler_either():
    plan = place(2, 0, [None, None])
    assert [p.role for p in plan] == ["worker", "worker"]


def test_slots_fill_hosts_in_file_order_and_servers_stay_round_robin():
    plan = place(5, 2, [2, 3, 4])
    workers = [p.host for p in plan if p.role == "worker"]
    assert workers == [0, 0, 1, 1, 1]
    assert [p.host for p in plan if p.role == "server"] == [0, 1]


def test_host_without_slots_offers_one_when_others_have_slots():
    plan = place(3, 1, [2, None])
    assert [p.host for p in plan if p.role == "worker"] == [0, 0, 1]


def test_more_workers_than_slots_is_refused_with_the_numbers():
    with pytest.raises(UserError, match="-n 9 workers but the hosts file offers only 5 slots"):
        place(9, 1, [2, 3])


def test_servers_per_host_puts_exactly_k_servers_on_every_host():
    plan = place(3, None, [None, None, None], servers_per_host=2)
    assert [p.host for p in plan if p.role == "server"] == [0, 0, 1, 1, 2, 2]
    assert [p.host for p in plan if p.role == "worker"] == [0, 1, 2]


def test_servers_per_host_conflicting_with_s_is_refused():
    with pytest.raises(UserError, match="disagrees with --servers-per-host"):
        place(2, 3, [None, None], servers_per_host=2)


def test_names_are_unique_so_hosts_sharing_a_home_never_share_a_log():
    plan = place(4, 4, [None, None])
    names = [p.name for p in plan]
    assert len(names) == len(set(names)) and "scheduler" in names and "worker-3" in names


def test_describe_lists_every_host_including_idle_ones():
    assert by_host(place(1, 1, [None, None, None]), ["a", "b", "c"]) == [
        "a: scheduler, server-0",
        "b: worker-0",
        "c: (nothing)",
    ]


@pytest.mark.parametrize("workers, hosts", [(0, [None]), (1, [])])
def test_empty_jobs_are_refused(workers, hosts):
    with pytest.raises(UserError):
        place(workers, 1, hosts)
