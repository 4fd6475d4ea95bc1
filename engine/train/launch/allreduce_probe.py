"""A two-second all-reduce across every process of a torch job: bus bandwidth per rank.

``imgscale check -H HOSTS --engine torch`` launches it as a torch job (``python -m
engine.train.launch.allreduce_probe --seconds 2``) on the slots a training run would use: Gloo on the
CPU, NCCL when --gpus. Each rank prints ``allreduce-probe {json}``; a slow link or a wrong network
interface shows as one host's low figure before a long job starts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import time

TAG = "allreduce-probe"


def bus_bandwidth(nbytes: int, world: int, seconds: float, ops: int) -> float:
    """MB/s each rank moves in a ring all-reduce (nccl-tests' busbw: 2 (n-1)/n bytes per op)."""
    if seconds <= 0 or ops == 0:
        return 0.0
    return 2 * (world - 1) / max(world, 1) * nbytes * ops / seconds / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.train.launch.allreduce_probe")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--mbytes", type=float, default=16.0, help="tensor size in MB")
    parser.add_argument("--gpu", action="store_true", help="NCCL on GPU LOCAL_RANK")
    args = parser.parse_args()
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if args.gpu else None
    if device is not None:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if args.gpu else "gloo", timeout=datetime.timedelta(seconds=60))
    world = dist.get_world_size()
    tensor = torch.ones(int(args.mbytes * 1e6 / 4), device=device)
    dist.all_reduce(tensor)  # warm-up: connections open
    ops, start = 0, time.perf_counter()
    # Every rank runs the same number of ops: rank 0 decides, each round, whether time is up.
    go = torch.ones(1, device=device)
    while go.item():
        dist.all_reduce(tensor)
        ops += 1
        go.fill_(1.0 if time.perf_counter() - start < args.seconds else 0.0)
        dist.broadcast(go, 0)
    seconds = time.perf_counter() - start
    result = {
        "rank": dist.get_rank(),
        "world": world,
        "host": os.environ.get("IMGSCALE_HOST") or socket.gethostname(),
        "ops": ops,
        "seconds": round(seconds, 3),
        "MBps": round(bus_bandwidth(tensor.numel() * 4, world, seconds, ops), 1),
    }
    print(f"{TAG} {json.dumps(result)}", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
