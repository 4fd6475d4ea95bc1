"""Shared test settings: keep MXNet and OpenMP to the threads we give them on small CI machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "1")
