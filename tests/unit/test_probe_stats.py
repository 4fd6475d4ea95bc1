"""Host stats parsing (/proc readings) and the rates computed from two readings."""

import subprocess

from engine.cluster.probes.grid import HostCounters, host_sample, parse_stats, stats_command

READING = """@uptime
1000.00 1900.00
@stat
cpu  100 0 100 700 100 0 0 0 0 0
cpu0 50 0 50 350 50 0 0 0 0 0
cpu1 50 0 50 350 50 0 0 0 0 0
@mem
MemTotal:       16000000 kB
MemAvailable:   12000000 kB
@load
0.52 0.40 0.30 1/200 1234
@net
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 999999    10    0    0    0     0          0         0   999999    10    0    0    0     0       0          0
  eth0: 1000      10    0    0    0     0          0         0   2000      10    0    0    0     0       0          0
@df
/dev/sda1 1000 400 600 40% /
@gpu
no
"""  # noqa: E501 (recorded /proc/net/dev lines are wide)


def test_reading_is_parsed_into_counters():
    c = parse_stats(READING)
    assert (c.uptime_s, c.cpu_busy, c.cpu_total, c.cpu_count) == (1000.0, 200, 1000, 2)
    assert (c.mem_total, c.mem_available, c.load1) == (16000000 * 1024, 12000000 * 1024, 0.52)
    assert (c.net_rx, c.net_tx) == (1000, 2000)  # loopback traffic is not network throughput
    assert (c.disk_total, c.disk_used, c.has_gpu) == (1024000, 409600, False)


def test_cpu_percent_and_net_rates_come_from_two_readings():
    prev = parse_stats(READING)
    cur = HostCounters(
        **{
            **prev.__dict__,
            "uptime_s": 1002.0,
            "cpu_busy": 300,
            "cpu_total": 1200,
            "net_rx": 3000,
            "net_tx": 2000,
        }
    )
    s = host_sample("h", cur, prev, gpu_count=0, now=1.0)
    assert s.cpu_percent == 50.0 and s.net_rx_bytes_per_s == 1000.0 and s.net_tx_bytes_per_s == 0
    assert s.mem_used_bytes == 4000000 * 1024 and s.gpu_count == 0


def test_first_reading_has_no_rates_rather_than_made_up_ones():
    s = host_sample("h", parse_stats(READING), None, gpu_count=0)
    assert s.cpu_percent is None and s.net_rx_bytes_per_s is None and s.cpu_count == 2


def test_counter_reset_never_gives_a_negative_rate():
    prev = parse_stats(READING)
    cur = HostCounters(**{**prev.__dict__, "uptime_s": 1001.0, "net_rx": 10})
    assert host_sample("h", cur, prev, 0).net_rx_bytes_per_s == 0.0


def test_garbled_or_missing_sections_become_none_not_exceptions():
    c = parse_stats("@stat\ncpu x y\n@mem\nnonsense\n@df\n\n")
    assert c.cpu_busy is None and c.mem_total is None and c.disk_total is None and not c.has_gpu


def test_the_real_command_parses_on_this_machine(tmp_path):
    out = subprocess.run(
        ["/bin/sh", "-c", stats_command(str(tmp_path))], capture_output=True, text=True, timeout=30
    ).stdout
    c = parse_stats(out)
    assert c.cpu_count and c.cpu_total and c.mem_total and c.disk_total and c.uptime_s
