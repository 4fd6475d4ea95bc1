"""A tiny real torch.distributed job for the launcher tests: Gloo all-reduces on the CPU.

Reads torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK), joins the process
group, prints ``rank R of W on HOST``, all-reduces a tensor --steps times (printing the sum, which
every rank must agree on) and leaves the group. --pause S after each step keeps it running.
"""

import argparse
import datetime
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--load-epoch", type=int, default=None)
    parser.add_argument("--engine", default="torch")  # how the launcher tells the engine apart
    args = parser.parse_args()
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    print(
        f"rank {rank} of {world} on {os.environ.get('IMGSCALE_HOST')} "
        f"local_rank={os.environ.get('LOCAL_RANK')} load_epoch={args.load_epoch}",
        flush=True,
    )
    for step in range(args.steps):
        value = torch.tensor([float(rank + 1)])
        dist.all_reduce(value)
        print(f"step {step} sum={value.item():g}", flush=True)
        if args.pause:
            time.sleep(args.pause)  # workload pacing, not synchronisation
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
