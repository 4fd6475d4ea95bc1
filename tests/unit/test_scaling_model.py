"""The scaling model: it reproduces the tutorial's published table from the 1-GPU row, and behaves sanely."""

import pytest

from engine.bench import model, published
from engine.bench.model import KNOWN_NETWORKS, TUTORIAL_CLUSTER, Cluster, NetworkFacts, predict

# The tolerance the model is held to against the published K80 table (calibrated on the 1-GPU row
# only): efficiency within 8 percentage points and images/s within 10 % at every size, 2 to 256 GPUs.
MAX_EFFICIENCY_POINTS = 8.0
MAX_RELATIVE_ERROR = 0.10


def test_published_table_is_complete_and_matches_the_tutorials_endpoints():
    assert set(published.PUBLISHED) == {"alexnet", "inception-v3", "resnet-152"}
    for series in published.PUBLISHED.values():
        assert series.gpu_counts == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert published.PUBLISHED["alexnet"].at(1) == 457.07
    assert published.PUBLISHED["alexnet"].at(256) == 61938.36
    assert published.PUBLISHED["inception-v3"].at(256) == 6660.98
    assert published.PUBLISHED["resnet-152"].at(256) == 4630.42


@pytest.mark.parametrize("row", model.compare_published(), ids=lambda c: f"{c.network}-{c.gpus}")
def test_model_reproduces_the_published_table_within_tolerance(row):
    assert abs(row.error_points) <= MAX_EFFICIENCY_POINTS
    assert abs(row.relative_error) <= MAX_RELATIVE_ERROR


def test_model_explains_why_alexnet_scales_worst():
    """AlexNet's single 151 MB array makes the device reduce its bottleneck inside one machine."""
    at16 = {
        name: predict(KNOWN_NETWORKS[name], s.batch_per_gpu, s.at(1), 16, TUTORIAL_CLUSTER)
        for name, s in published.PUBLISHED.items()
    }
    assert at16["alexnet"].efficiency < 0.7 < at16["resnet-152"].efficiency
    assert at16["alexnet"].device_s > at16["resnet-152"].device_s
    assert at16["alexnet"].network_s == 0  # one machine: nothing crosses the NIC


def test_one_gpu_is_pure_compute():
    p = predict(KNOWN_NETWORKS["resnet-152"], 32, 20.8, 1, TUTORIAL_CLUSTER)
    assert (p.device_s, p.network_s, p.efficiency) == (0, 0, 1)
    assert p.compute_s == pytest.approx(32 / 20.8)


def test_layout_fills_machines_before_adding_more():
    lay = model.layout(64, TUTORIAL_CLUSTER)
    assert (lay.machines, lay.workers, lay.gpus_per_worker, lay.servers) == (4, 4, 16, 4)
    assert model.layout(8, TUTORIAL_CLUSTER).machines == 1
    with pytest.raises(ValueError):
        model.layout(0, TUTORIAL_CLUSTER)


def test_network_time_with_one_server_per_machine_is_two_model_copies_times_remote_share():
    facts = NetworkFacts("x", params=25e6, largest_array=1e6)  # 100 MB
    cluster = Cluster(gpus_per_machine=1, network_gbits_s=8.0, network_efficiency=1.0)  # 1 GB/s
    lay = model.layout(4, cluster)
    assert model.network_s(facts, lay, cluster) == pytest.approx(2 * 0.1 * 3 / 4)


def test_fewer_servers_than_machines_makes_server_machines_the_bottleneck():
    facts = NetworkFacts("x", params=25e6, largest_array=1e6)
    one = Cluster(gpus_per_machine=1, servers=1, network_gbits_s=8.0, network_efficiency=1.0)
    many = Cluster(gpus_per_machine=1, network_gbits_s=8.0, network_efficiency=1.0)
    slow = model.network_s(facts, model.layout(8, one), one)
    fast = model.network_s(facts, model.layout(8, many), many)
    assert slow == pytest.approx(7 * 0.1)  # the one server answers 7 remote workers
    assert fast < slow


def test_overlap_hides_network_time_but_never_makes_it_negative():
    facts = KNOWN_NETWORKS["resnet-152"]
    plain = predict(facts, 32, 20.8, 256, TUTORIAL_CLUSTER)
    hidden = predict(facts, 32, 20.8, 256, Cluster(overlap=1.0))
    assert hidden.batch_time_s == pytest.approx(plain.compute_s + plain.device_s)
    assert plain.batch_time_s > hidden.batch_time_s


def test_faster_network_and_links_only_help():
    facts = KNOWN_NETWORKS["alexnet"]
    base = predict(facts, 512, 457.07, 256, TUTORIAL_CLUSTER)
    better = predict(facts, 512, 457.07, 256, Cluster(link_gbytes_s=12.0, network_gbits_s=100.0))
    assert better.efficiency > base.efficiency
    assert 0 < base.efficiency <= 1


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        predict(KNOWN_NETWORKS["alexnet"], 512, 0.0, 2, TUTORIAL_CLUSTER)
