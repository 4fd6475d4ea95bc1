"""The scalability table published in MXNet's "Large Scale Image Classification" tutorial, as data.

Source: apache/mxnet docs/tutorials/vision/large_scale_classification.md, section "Scalability":
sixteen P2.16xlarge instances (16 Tesla K80 GPUs each, 256 in all) linked by 20 Gbps Ethernet,
CUDA 7.5 + cuDNN 5.1, synchronous SGD (``--kv-store dist_device_sync``), batch per GPU held fixed
while the number of GPUs doubles. Figures are images/s summed over all GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "MXNet tutorial 'Large Scale Image Classification' (docs/tutorials/vision/large_scale_classification.md)"
MACHINES = 16
GPUS_PER_MACHINE = 16
GPU = "Tesla K80"
NETWORK_GBITS_S = 20.0
KV_STORE = "dist_device_sync"
GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class PublishedSeries:
    """One network's column of the published table."""

    network: str
    batch_per_gpu: int
    model_mb: float  # as printed in the tutorial
    images_per_s: tuple[tuple[int, float], ...]  # (GPUs, images/s)

    def at(self, gpus: int) -> float:
        return dict(self.images_per_s)[gpus]

    @property
    def gpu_counts(self) -> tuple[int, ...]:
        return tuple(n for n, _ in self.images_per_s)


def _series(
    network: str, batch: int, model_mb: float, values: tuple[float, ...]
) -> PublishedSeries:
    return PublishedSeries(network, batch, model_mb, tuple(zip(GPU_COUNTS, values)))


PUBLISHED = {
    s.network: s
    for s in (
        _series(
            "alexnet",
            512,
            203,
            (457.07, 870.43, 1514.8, 2852.5, 4244.18, 7945.57, 15840.52, 31334.88, 61938.36),
        ),
        _series(
            "inception-v3",
            32,
            95,
            (30.4, 59.61, 117.9, 233.39, 447.61, 882.57, 1761.24, 3416.2, 6660.98),
        ),
        _series(
            "resnet-152",
            32,
            240,
            (20.8, 38.76, 77.01, 153.07, 298.03, 595.53, 1179.86, 2333.47, 4630.42),
        ),
    )
}
