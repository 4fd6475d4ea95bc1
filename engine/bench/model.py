"""A scaling model for data-parallel training with parameter servers: images/s and efficiency at N GPUs.

The picture (MXNet ``dist_sync`` / ``dist_device_sync`` with the tutorial's layout): each machine runs
one worker that drives all of its GPUs and one parameter server. Every batch, each GPU computes the
gradient of its share of the batch; the worker first sums its GPUs' gradients on the devices (the
``device`` kvstore: each parameter array is owned by one GPU, which receives the other GPUs' copies,
adds them and sends the result back), then pushes the machine's sum to the servers and pulls the new
weights. Servers hold equal slices of every array, so every worker talks to every server.

Time per batch = compute + device reduce + max(0, network − overlap × compute), where

* compute = batch per GPU / (images/s of one GPU): the only figure calibrated per network;
* device reduce over g GPUs of one worker, on PCIe links of bandwidth B_link each:
  the balanced load on one GPU's link is 2·M·(g−1)/g bytes (reduce in, broadcast in), but the GPU
  that owns the largest array must first receive (g−1) copies of it, then send (g−1) copies back,
  so the critical path is at least 2·(g−1)·m_max bytes: device = max(2(g−1)·m_max, 2M(g−1)/g) / B_link.
  This is why AlexNet (one 151 MB fully connected array, 60 % of its 250 MB) scales badly inside a
  machine while ResNet-152 (240 MB spread over hundreds of arrays) does not;
* network: bytes through the busiest machine's NIC in one direction (full duplex), over the usable
  line rate. A machine with w workers and s of the S servers sends w·M·(1 − s/S) (its workers' pushes
  to remote servers) plus s·(W − w)·M/S (its servers' replies to the remote workers). With one worker
  and one server per machine this is 2·M·(k−1)/k over k machines. Traffic between processes on the
  same machine does not cross the NIC and is not counted;
* overlap: the share of compute during which network traffic can hide. The published K80 table shows
  none (its overhead at 256 GPUs is the device reduce plus the network time, added), so it is 0 unless
  set; frameworks that push each layer's gradient as soon as backward produces it can raise it.

Efficiency = compute / time per batch; images/s = GPUs × batch per GPU / time per batch.
``compare_published`` checks the model against the tutorial's table using only the 1-GPU figures and
each network's parameter count and largest array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.bench import published


@dataclass(frozen=True)
class NetworkFacts:
    """What the model needs to know about a network: parameter count and its largest single array."""

    name: str
    params: float
    largest_array: float  # parameters in the largest array (one kvstore key)
    bytes_per_param: int = 4  # float32 gradients and weights

    @property
    def model_bytes(self) -> float:
        return self.params * self.bytes_per_param

    @property
    def largest_bytes(self) -> float:
        return self.largest_array * self.bytes_per_param


# Counted from the networks' definitions (1000 classes). AlexNet's largest array is fc6's weight
# (9216 × 4096); Inception-v3's is the classifier (2048 × 1000); ResNet-152's a 3×3 512→512 conv.
KNOWN_NETWORKS = {
    f.name: f
    for f in (
        NetworkFacts("alexnet", 62.38e6, 37.75e6),
        NetworkFacts("inception-v3", 23.85e6, 2.05e6),
        NetworkFacts("resnet-152", 60.19e6, 2.36e6),
        NetworkFacts("resnet-50", 25.56e6, 2.36e6),
        NetworkFacts("resnet-18", 11.69e6, 2.36e6),
    )
}


@dataclass(frozen=True)
class Cluster:
    """The machines: GPUs and workers per machine, servers, link and network bandwidth."""

    gpus_per_machine: int = 16
    workers_per_machine: int = 1
    servers: int | None = None  # total; None means one per machine (launch.py's -s default)
    link_gbytes_s: float = 6.0  # usable PCIe bandwidth per GPU for the device reduce
    network_gbits_s: float = 20.0
    network_efficiency: float = 0.9  # payload share of the line rate (TCP/IP, ps-lite framing)
    overlap: float = 0.0  # share of compute time that hides network traffic

    @property
    def network_bytes_s(self) -> float:
        return self.network_gbits_s * 1e9 / 8 * self.network_efficiency


# The tutorial's cluster: P2.16xlarge, 8 K80 boards = 16 GPUs, each board's two GPUs sharing one
# PCIe 3.0 x16 link (~12 GB/s usable, so ~6 GB/s per GPU when both move data); 20 Gbps Ethernet.
TUTORIAL_CLUSTER = Cluster(
    gpus_per_machine=published.GPUS_PER_MACHINE,
    link_gbytes_s=6.0,
    network_gbits_s=published.NETWORK_GBITS_S,
)


@dataclass(frozen=True)
class Prediction:
    """Where the time of one batch goes at one cluster size, and what that gives."""

    gpus: int
    machines: int
    workers: int
    servers: int
    compute_s: float
    device_s: float
    network_s: float
    batch_time_s: float
    images_per_s: float
    speedup: float
    efficiency: float


@dataclass(frozen=True)
class Layout:
    """How many machines, workers and GPUs per worker a GPU count takes."""

    gpus: int
    machines: int
    workers_per_machine: int
    gpus_per_worker: int
    servers: int

    @property
    def workers(self) -> int:
        return self.machines * self.workers_per_machine


def layout(gpus: int, cluster: Cluster) -> Layout:
    """Fill whole machines first (as the tutorial did: 1–16 GPUs on one machine, then 2, 4 … 16)."""
    if gpus < 1:
        raise ValueError(f"number of GPUs must be at least 1, got {gpus}")
    machines = math.ceil(gpus / cluster.gpus_per_machine)
    on_one = min(gpus, cluster.gpus_per_machine)
    per_machine = max(1, min(cluster.workers_per_machine, on_one))
    gpus_per_worker = math.ceil(on_one / per_machine)
    servers = cluster.servers if cluster.servers is not None else machines
    return Layout(gpus, machines, per_machine, gpus_per_worker, max(1, servers))


def device_reduce_s(facts: NetworkFacts, gpus_per_worker: int, cluster: Cluster) -> float:
    """Time to sum one worker's GPU gradients and hand the result back (0 with one GPU)."""
    g = gpus_per_worker
    if g <= 1:
        return 0.0
    balanced = 2 * facts.model_bytes * (g - 1) / g
    largest_key = 2 * (g - 1) * facts.largest_bytes
    return max(balanced, largest_key) / (cluster.link_gbytes_s * 1e9)


def servers_on(machine: int, lay: Layout) -> int:
    """Servers placed round-robin over the machines (as launch.py places them)."""
    return lay.servers // lay.machines + (1 if machine < lay.servers % lay.machines else 0)


def nic_bytes(facts: NetworkFacts, lay: Layout, machine: int) -> float:
    """Bytes one machine sends per batch (and, symmetrically, receives) over its NIC."""
    model, s, total_servers = facts.model_bytes, servers_on(machine, lay), lay.servers
    w, total_workers = lay.workers_per_machine, lay.workers
    pushes_to_remote = w * model * (1 - s / total_servers)
    replies_to_remote = s * (total_workers - w) * model / total_servers
    return pushes_to_remote + replies_to_remote


def network_s(facts: NetworkFacts, lay: Layout, cluster: Cluster) -> float:
    """Time on the busiest NIC; 0 on one machine (loopback traffic does not touch the NIC)."""
    if lay.machines == 1:
        return 0.0
    busiest = max(nic_bytes(facts, lay, m) for m in range(lay.machines))
    return busiest / cluster.network_bytes_s


def predict(
    facts: NetworkFacts, batch_per_gpu: int, images_per_s_1gpu: float, gpus: int, cluster: Cluster
) -> Prediction:
    """Predict one cluster size from the 1-GPU rate (compute time per batch) and the network's size."""
    if images_per_s_1gpu <= 0:
        raise ValueError("images/s on one GPU must be positive")
    lay = layout(gpus, cluster)
    compute = batch_per_gpu / images_per_s_1gpu
    device = device_reduce_s(facts, lay.gpus_per_worker, cluster)
    network = network_s(facts, lay, cluster)
    batch_time = compute + device + max(0.0, network - cluster.overlap * compute)
    images = gpus * batch_per_gpu / batch_time
    speedup = images / images_per_s_1gpu
    return Prediction(
        gpus,
        lay.machines,
        lay.workers,
        lay.servers,
        compute,
        device,
        network,
        batch_time,
        images,
        speedup,
        speedup / gpus,
    )


def predict_series(
    facts: NetworkFacts,
    batch_per_gpu: int,
    images_per_s_1gpu: float,
    gpu_counts: tuple[int, ...],
    cluster: Cluster,
) -> list[Prediction]:
    return [predict(facts, batch_per_gpu, images_per_s_1gpu, n, cluster) for n in gpu_counts]


@dataclass(frozen=True)
class Comparison:
    """The model against one published figure."""

    network: str
    gpus: int
    published_images_per_s: float
    predicted_images_per_s: float
    published_efficiency: float
    predicted_efficiency: float

    @property
    def error_points(self) -> float:
        """Predicted minus published efficiency, in percentage points."""
        return 100 * (self.predicted_efficiency - self.published_efficiency)

    @property
    def relative_error(self) -> float:
        return self.predicted_images_per_s / self.published_images_per_s - 1


def compare_published(cluster: Cluster = TUTORIAL_CLUSTER) -> list[Comparison]:
    """Predict every cell of the tutorial's table from its 1-GPU row and the networks' sizes."""
    rows = []
    for name, series in published.PUBLISHED.items():
        one = series.at(1)
        for n, images in series.images_per_s:
            p = predict(KNOWN_NETWORKS[name], series.batch_per_gpu, one, n, cluster)
            rows.append(
                Comparison(name, n, images, p.images_per_s, images / (n * one), p.efficiency)
            )
    return rows
