"""The torch DDP training loop: NCCL on GPUs, Gloo on CPU, bf16, channels-last, MXNet-format logs, resume.

Every process is one rank (torchrun semantics: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK)
and drives one GPU, or the CPU. Log lines are MXNet's Speedometer and epoch lines, so the console's
parser reads either engine. Checkpoints are PREFIX-NNNN.pt (after N epochs) and
PREFIX-NNNN.bBBBBBB.pt (N epochs and B batches), each written to a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from engine.errors import UserError
from engine.train import checkpoints as ckpt
from engine.train.logsetup import append_summary, setup_logging
from engine.train.options import save_resolved
from engine.train.tboard import Scalars, open_scalars
from engine.train.torch import data, nets

log = logging.getLogger("imgscale.train")


# ---------------------------------------------------------------- where this process stands


@dataclass(frozen=True)
class Rank:
    """This process's place in the job and the device it drives."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    steps: Any = None  # the process group of training steps: a short timeout (--dist-timeout)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sync(self) -> None:
        """Wait for every rank on the default group (its long timeout): where ranks legitimately
        drift apart - loaders starting, rank 0 writing a checkpoint - before short-timeout steps."""
        if self.world > 1:
            dist.barrier()


def env_rank() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) from the launcher's environment; (0, 1, 0) when run alone."""
    try:
        return (
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError:
        raise UserError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by the launcher)"
        ) from None


def pick_device(gpus: list[int], local_rank: int) -> torch.device:
    """GPU ``gpus[LOCAL_RANK]`` (one process per GPU), or the CPU when --gpus is empty."""
    if not gpus:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(
            f"--gpus {','.join(map(str, gpus))}: torch {torch.__version__} sees no CUDA GPU on "
            f"{socket.gethostname()}; install a CUDA build of torch or pass --gpus '' for the CPU"
        )
    if local_rank >= len(gpus):
        raise UserError(
            f"LOCAL_RANK {local_rank} but --gpus lists {len(gpus)} GPUs; start one process per listed GPU"
        )
    return torch.device("cuda", gpus[local_rank])


START_TIMEOUT = timedelta(minutes=5)  # rendezvous, start-up, checkpoint writes, evaluation


def init_distributed(gpus: list[int], step_timeout_s: float = 5.0) -> Rank:
    """Join the process group (NCCL for GPUs, Gloo for CPU) when WORLD_SIZE > 1.

    Two groups: the default one, with a long timeout, for start-up and the points where ranks may
    drift (``Rank.sync``); and one for training steps whose timeout is short, so a survivor of a
    dead or hung rank fails within seconds instead of waiting in an all-reduce for half an hour.
    """
    rank, world, local_rank = env_rank()
    device = pick_device(gpus, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world <= 1:
        return Rank(rank, world, local_rank, device)
    join(world, rank, device)
    steps = dist.new_group(timeout=timedelta(seconds=step_timeout_s))
    return Rank(rank, world, local_rank, device, steps)


def join(world: int, rank: int, device: torch.device) -> None:
    """init_process_group from the launcher's MASTER_ADDR/MASTER_PORT (env://)."""
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise UserError(
                f"WORLD_SIZE={world} but {name} is not set; start workers with the launcher"
            )
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"timeout": START_TIMEOUT}
    try:  # device_id (torch >= 2.3) binds NCCL to this GPU at once instead of at the first collective
        extra: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, rank=rank, world_size=world, **kwargs, **extra)
    except TypeError:
        dist.init_process_group(backend, rank=rank, world_size=world, **kwargs)


# ---------------------------------------------------------------- checkpoints


def checkpoint_path(prefix: str, epoch: int, batch: int = 0) -> str:
    return ckpt.params_path(prefix, epoch, batch, ckpt.TORCH)


def list_checkpoints(prefix: str) -> list[tuple[int, int]]:
    """(epoch, batch) of every complete checkpoint of ``prefix``, oldest first (temp files never match)."""
    return ckpt.checkpoints(prefix, ckpt.TORCH)


def save_checkpoint(path: str, state: dict, prefix: str | None = None) -> None:
    """torch.save to a temporary name, then rename: a file with the final name is always whole; a
    read-only folder or a full disk is one line naming the folder."""
    ckpt.save_file(prefix or path, path, lambda tmp: torch.save(state, tmp))


def resume_checkpoint(args: argparse.Namespace) -> str | None:
    """--load-epoch N (that file, which must exist and load) or --resume (the newest that loads)."""
    prefix = args.model_prefix
    if getattr(args, "load_epoch", None) is not None:
        path = checkpoint_path(prefix, args.load_epoch)
        if not os.path.isfile(path):
            have = (
                ", ".join(f"{e}" + (f".b{b}" if b else "") for e, b in list_checkpoints(prefix))
                or "none"
            )
            raise UserError(
                f"--load-epoch {args.load_epoch}: {path} does not exist (checkpoints: {have})"
            )
        refuse_unloadable(path, f"--load-epoch {args.load_epoch}", prefix)
        return path
    if getattr(args, "resume", False) and prefix:
        point = ckpt.newest_loadable(prefix, ckpt.TORCH)
        return checkpoint_path(prefix, *point) if point else None
    return None


def refuse_unloadable(path: str, flag: str, prefix: str) -> None:
    problem = ckpt.load_problem(path)
    if problem is not None:
        point = ckpt.newest_loadable(prefix, ckpt.TORCH, warn=lambda _line: None)
        other = f"; --resume would use {checkpoint_path(prefix, *point)}" if point else ""
        raise UserError(f"{flag}: {path} cannot be loaded ({problem}){other}")


def finite_weights(model: torch.nn.Module) -> bool:
    """Every floating tensor of the model (weights and BatchNorm statistics) is finite."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


# ---------------------------------------------------------------- learning rate


def lr_multiplier(
    step: int,
    epoch_batches: int,
    step_epochs: Sequence[float],
    factor: float,
    warmup_epochs: float = 0,
) -> float:
    """lr / --lr after ``step`` updates: x factor at each step epoch passed, linear warm-up first."""
    epoch = step / max(1, epoch_batches)
    mult = factor ** sum(1 for e in step_epochs if epoch >= e)
    if warmup_epochs and epoch < warmup_epochs:
        mult *= (step + 1) / (warmup_epochs * epoch_batches)
    return mult


def make_optimizer(args: argparse.Namespace, model: torch.nn.Module) -> torch.optim.Optimizer:
    name = getattr(args, "optimizer", "sgd")
    lr, wd, mom = args.lr, getattr(args, "wd", 1e-4), getattr(args, "mom", 0.9)
    if name in ("sgd", "nag"):
        # fused: one kernel for all parameters' updates on GPUs, instead of a few per tensor
        kwargs = {"lr": lr, "momentum": mom, "weight_decay": wd, "nesterov": name == "nag"}
        if next(model.parameters()).is_cuda:
            try:
                return torch.optim.SGD(model.parameters(), fused=True, **kwargs)
            except (TypeError, RuntimeError):  # torch < 2.4 has no fused SGD
                pass
        return torch.optim.SGD(model.parameters(), **kwargs)
    if name == "adam":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=lr, weight_decay=wd, momentum=mom)
    raise UserError(f"--optimizer {name}: the torch engine supports sgd, nag, adam and rmsprop")


# ---------------------------------------------------------------- metrics and the Speedometer


class Metrics:
    """Accuracy (and top-k, cross-entropy) kept on the device: no GPU sync until a line is logged."""

    def __init__(self, device: torch.device, top_k: int = 0, ce: bool = False) -> None:
        self.top_k, self.ce = top_k, ce
        self.sums = torch.zeros(
            4, device=device, dtype=torch.float64
        )  # correct, top-k, loss, count

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        with torch.no_grad():
            row = [(logits.argmax(1) == labels).sum(), torch.zeros((), device=labels.device)]
            if self.top_k > 1:
                top = logits.topk(min(self.top_k, logits.shape[1]), 1).indices
                row[1] = (top == labels[:, None]).any(1).sum()
            # new_full is a fill on the device; torch.tensor(n, device=...) would copy from the host each step
            row += [loss.detach().float() * len(labels), labels.new_full((), len(labels))]
            self.sums += torch.stack([v.to(torch.float64) for v in row])

    def values(self) -> list[tuple[str, float]]:
        correct, top, loss, count = self.sums.tolist()
        count = max(count, 1.0)
        out = [("accuracy", correct / count)]
        if self.top_k > 1:
            out.append((f"top_k_accuracy_{self.top_k}", top / count))
        if self.ce:
            out.append(("cross-entropy", loss / count))
        return out

    def reset(self) -> None:
        self.sums.zero_()


class Speedometer:
    """MXNet's Speedometer: every ``frequent`` batches, samples/s and the window's metrics, then reset."""

    def __init__(
        self,
        batch_size: int,
        frequent: int,
        report: Callable[[int, int, float, list[tuple[str, float]]], None] | None = None,
    ):
        self.batch_size, self.frequent = batch_size, frequent
        self.report = report  # (epoch, nbatch, images/s, metrics) of each line, for TensorBoard
        self.tic: float | None = None

    def __call__(self, epoch: int, nbatch: int, metrics: Metrics) -> None:
        # Same counting as Module.fit: the first call starts the clock, lines at nbatch % frequent == 0.
        if self.tic is None:
            self.tic = time.time()
            return
        if nbatch % self.frequent:
            return
        values = metrics.values()  # syncs the GPU, so the time below covers finished work
        speed = self.frequent * self.batch_size / max(time.time() - self.tic, 1e-9)
        msg = "Epoch[%d] Batch [%d-%d]\tSpeed: %.2f samples/sec" + "\t%s=%f" * len(values)
        log.info(
            msg, epoch, nbatch - self.frequent, nbatch, speed, *[x for kv in values for x in kv]
        )
        if self.report is not None:
            self.report(epoch, nbatch, speed, values)
        metrics.reset()
        self.tic = time.time()


# ---------------------------------------------------------------- the loop


JUDGE_AFTER = 1000  # images seen before the share of undecodable ones is judged mid-epoch


@dataclass
class Trainer:
    """Everything one epoch needs; built once by ``build_trainer``."""

    args: argparse.Namespace
    rank: Rank
    model: torch.nn.Module  # the network itself (for checkpoints and evaluation)
    step_model: torch.nn.Module  # what the training step calls: DDP-wrapped, maybe compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    batch_size: int
    epoch_batches: int
    amp: bool
    begin_epoch: int = 0
    begin_batch: int = 0
    # The first batch of the epoch whose loss was nan or inf (-1: none), kept on the device so
    # that watching costs no GPU sync per step; read where the Speedometer syncs anyway.
    bad_step: Any = None
    corrupt: int = 0  # images of this epoch that did not decode (trained as black)
    seen: int = 0
    corrupt_at: str = ""  # the first of them: file and offset
    scalars: Scalars = field(default_factory=Scalars)  # TensorBoard, on rank 0

    def autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.rank.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def train_epoch(self, epoch: int, batches: Iterable[data.Batch], start_batch: int) -> Metrics:
        self.step_model.train()
        epoch_metrics = Metrics(self.rank.device, self.args.top_k, self.args.loss == "ce")
        window = Metrics(self.rank.device, self.args.top_k, self.args.loss == "ce")
        speed = Speedometer(self.batch_size, self.args.disp_batches, self.report_interval)
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=self.rank.device)
        self.corrupt = self.seen = 0
        self.corrupt_at = ""
        for nbatch, batch in enumerate(self.synced(batches), start_batch):
            if nbatch >= self.epoch_batches:
                break
            self.count_corrupt(batch)
            self.step(batch, (window, epoch_metrics), nbatch)
            speed(epoch, nbatch, window)
            if (nbatch + 1) % self.args.disp_batches == 0:
                self.check_sound(epoch)
            self.maybe_save_batch(epoch, nbatch + 1)
        self.check_sound(epoch, end=True)
        log.info(
            "Epoch[%d] Undecodable images: %d of %d%s",
            epoch,
            self.corrupt,
            self.seen,
            f" (first: {self.corrupt_at})" if self.corrupt else "",
        )
        return epoch_metrics

    def report_interval(
        self, epoch: int, nbatch: int, speed: float, values: list[tuple[str, float]]
    ) -> None:
        self.scalars.interval(epoch * self.epoch_batches + nbatch, speed, values)

    def count_corrupt(self, batch: data.Batch) -> None:
        self.seen += len(batch.label)
        self.corrupt += batch.corrupt
        self.corrupt_at = self.corrupt_at or getattr(batch, "corrupt_at", "")

    def check_sound(self, epoch: int, end: bool = False) -> None:
        """Stop on a diverged loss or on more undecodable images than --max-bad-images allows."""
        bad = int(self.bad_step) if self.bad_step is not None else -1
        if bad >= 0:
            raise UserError(
                f"the loss is not finite (nan or inf) at epoch {epoch} batch {bad}: training "
                f"diverged and no checkpoint is written from it; lower --lr ({self.args.lr}) "
                "or --wd, or resume from the last checkpoint with --resume"
            )
        limit = getattr(self.args, "max_bad_images", 0.01)
        judged = end or self.seen >= JUDGE_AFTER  # a few unlucky first batches are no share yet
        if judged and self.corrupt and self.corrupt > limit * self.seen:
            raise UserError(
                f"{self.corrupt} of {self.seen} images in epoch {epoch} did not decode, more than "
                f"--max-bad-images {limit} allows (first: {self.corrupt_at}); "
                "pack that data again with `imgscale pack` (without --pass-through)"
            )

    def synced(self, batches: Iterable[data.Batch]) -> Iterator[data.Batch]:
        """The batches, every rank waiting for the others once its first batch is ready: loader
        start-up takes each rank its own time, which the steps' short timeout must not count."""
        it = iter(batches)
        first = next(it, None)
        self.rank.sync()
        if first is not None:
            yield first
            yield from it

    def step(self, batch: data.Batch, meters: tuple[Metrics, Metrics], nbatch: int = 0) -> None:
        with self.autocast():
            logits = self.step_model(batch.data)
            loss = F.cross_entropy(logits.float(), batch.label)
        if self.bad_step is not None:
            first = (self.bad_step < 0) & ~torch.isfinite(loss.detach())
            self.bad_step = torch.where(first, nbatch, self.bad_step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        for meter in meters:
            meter.update(logits.detach(), batch.label, loss.detach())

    def state(self, epoch: int, batch: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "arch": arch_of(self.args),
            "epoch_batches": self.epoch_batches,
        }

    def maybe_save_batch(self, epoch: int, done: int) -> None:
        every = getattr(self.args, "save_batches", 0) or 0
        due = every and done % every == 0 and done < self.epoch_batches
        if not (due and self.args.model_prefix):
            return
        self.check_sound(epoch)
        if self.rank.main:
            self.refuse_diverged(epoch, done)
            save_checkpoint(
                checkpoint_path(self.args.model_prefix, epoch, done),
                self.state(epoch, done),
                self.args.model_prefix,
            )
        self.rank.sync()  # the others wait here, not in a short-timeout step, while rank 0 writes

    def save_epoch(self, done_epochs: int) -> None:
        """PREFIX-NNNN.pt after NNNN complete epochs; batch checkpoints before it are dropped."""
        prefix = self.args.model_prefix
        if not (prefix and self.rank.main and done_epochs % max(1, self.args.save_period) == 0):
            return
        path = checkpoint_path(prefix, done_epochs)
        self.refuse_diverged(done_epochs - 1, self.epoch_batches)
        save_checkpoint(path, self.state(done_epochs, 0), prefix)
        log.info('Saved checkpoint to "%s"', path)
        for e, b in list_checkpoints(prefix):
            if b and (e, b) < (done_epochs, 0):
                os.remove(checkpoint_path(prefix, e, b))
        ckpt.prune_epochs(prefix, self.args.keep_checkpoints, self.args.save_period, ckpt.TORCH)

    def refuse_diverged(self, epoch: int, batch: int) -> None:
        """The last update may make the weights nan or inf with no loss computed after it yet."""
        if not finite_weights(self.model):
            raise UserError(
                f"the weights are not finite (nan or inf) after epoch {epoch} batch {batch}: "
                f"training diverged and no checkpoint is written from it; lower --lr ({self.args.lr})"
            )

    def evaluate(self, loader: Iterable[data.Batch]) -> list[tuple[str, float]]:
        """Accuracy over the whole validation set: each rank scores its shard, the counts are summed."""
        metrics = Metrics(self.rank.device, self.args.top_k, self.args.loss == "ce")
        self.model.eval()
        with torch.no_grad(), self.autocast():
            for batch in loader:
                logits = self.model(batch.data)
                metrics.update(logits, batch.label, F.cross_entropy(logits.float(), batch.label))
        if self.rank.world > 1:
            sums = metrics.sums.to(
                torch.float32 if self.rank.device.type == "cpu" else torch.float64
            )
            dist.all_reduce(sums)
            metrics.sums.copy_(sums)
        return metrics.values()


def arch_of(args: argparse.Namespace) -> dict:
    return {
        "network": args.network,
        "num_layers": args.num_layers,
        "num_classes": args.num_classes,
        "width": getattr(args, "width", 64),
    }


def use_amp(args: argparse.Namespace, device: torch.device) -> bool:
    """bf16 autocast: on by default on GPUs (--amp auto), and for --dtype float16."""
    amp = getattr(args, "amp", "auto")
    if amp == "off":
        return False
    return amp == "bf16" or device.type == "cuda" or getattr(args, "dtype", "float32") == "float16"


def use_mirror(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "mirror", False)) or os.environ.get("MXNET_BACKWARD_DO_MIRROR") == "1"


def build_trainer(
    args: argparse.Namespace, rank: Rank, epoch_batches: int, batch_size: int
) -> Trainer:
    """Network, optimizer and schedule; loaded from a checkpoint when resuming; wrapped in DDP."""
    torch.manual_seed(args.seed or 0)
    model = nets.build(args.network, args.num_layers, args.num_classes, getattr(args, "width", 64))
    nets.set_mirror(model, use_mirror(args))
    # Module.to takes memory_format at run time (documented), but torch's stubs omit it
    model = model.to(rank.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = make_optimizer(args, model)
    steps, factor, warm = (
        args.lr_step_epochs,
        args.lr_factor,
        getattr(args, "warmup_epochs", 0) or 0,
    )

    def schedule(step: int) -> float:
        return lr_multiplier(step, epoch_batches, steps, factor, warm)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    trainer = Trainer(
        args,
        rank,
        model,
        model,
        optimizer,
        scheduler,
        batch_size,
        epoch_batches,
        use_amp(args, rank.device),
    )
    load_state(trainer, resume_checkpoint(args))
    step_model = model
    if rank.world > 1:
        ids = [rank.device.index] if rank.device.type == "cuda" else None
        step_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=ids, gradient_as_bucket_view=True, process_group=rank.steps
        )
    if getattr(args, "compile", False):
        step_model = torch.compile(step_model)
    trainer.step_model = step_model
    return trainer


def load_state(trainer: Trainer, path: str | None) -> None:
    if not path:
        return
    try:
        state = torch.load(path, map_location=trainer.rank.device, weights_only=False)
    except Exception as exc:  # damage the framing check cannot see: unpickling fails somewhere
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path} cannot be loaded ({why}); move it aside and resume from the one before"
        ) from None
    if state.get("arch") != arch_of(trainer.args):
        raise UserError(
            f"{path}: saved for {state.get('arch')}, but the options ask for {arch_of(trainer.args)}"
        )
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.begin_epoch, trainer.begin_batch = state["epoch"], state["batch"]
    if state.get("epoch_batches") not in (None, trainer.epoch_batches):
        log.warning(
            "%s was saved with %d batches per epoch, now %d: the lr schedule's epochs shift",
            path,
            state["epoch_batches"],
            trainer.epoch_batches,
        )
    log.info("Resuming from %s: epoch %d, batch %d", path, trainer.begin_epoch, trainer.begin_batch)


# ---------------------------------------------------------------- data


def augment(args: argparse.Namespace, train: bool) -> data.Augment:
    """The image pipeline that train_imagenet's augmentation flags describe."""
    size = args.image_shape[1]
    mirror = bool(getattr(args, "random_mirror", 1))
    if not train:
        return data.Augment(size=size, mode="centre", mirror=False)
    if getattr(args, "random_resized_crop", 0):
        low, high = aspect_range(args)
        return data.Augment(
            size=size,
            mode="resized",
            min_area=args.min_random_area,
            max_area=args.max_random_area,
            min_aspect=low,
            max_aspect=high,
            mirror=mirror,
        )
    if getattr(args, "random_crop", 1):
        return data.Augment(
            size=size,
            mode="scale",
            min_scale=args.min_random_scale,
            max_scale=args.max_random_scale,
            mirror=mirror,
        )
    return data.Augment(size=size, mode="centre", mirror=mirror)


def aspect_range(args: argparse.Namespace) -> tuple[float, float]:
    """Width/height range as ImageRecordIter reads its flags: [min, max] when --min-random-aspect-ratio
    is given, else 1 -/+ --max-random-aspect-ratio; with neither, 3/4..4/3 (fixed 1 would never vary)."""
    high = getattr(args, "max_random_aspect_ratio", 0.0) or 0.0
    low = getattr(args, "min_random_aspect_ratio", None)
    if low is not None:
        return max(low, 0.05), max(high, low)
    if high == 0:
        return 3 / 4, 4 / 3
    return max(1 - high, 0.05), 1 + high


def make_loader(
    args: argparse.Namespace, rank: Rank, path: str, flag: str, batch_size: int, train: bool
) -> data.RecordLoader:
    index = data.open_index(path, flag)
    return data.RecordLoader(
        index,
        batch_size,
        augment(args, train),
        rank=rank.rank,
        world=rank.world,
        seed=args.seed or 0,
        threads=args.data_nthreads,
        device=rank.device,
        mean=args.rgb_mean,
        std=args.rgb_std,
        num_classes=args.num_classes,
        gpu_decode=gpu_decode_choice(args, rank.device),
    )


def gpu_decode_choice(args: argparse.Namespace, device: torch.device) -> bool | None:
    """--decode: None lets the loader use nvJPEG when it can; cpu forces OpenCV workers."""
    choice = getattr(args, "decode", "auto")
    if choice == "gpu" and not data.gpu_decode_available(device):
        raise UserError(
            "--decode gpu needs a CUDA device and an importable torchvision; use --decode cpu"
        )
    return {"auto": None, "cpu": False, "gpu": True}[choice]


class Synthetic:
    """--benchmark: the same random batch on the device, again and again: compute and network only."""

    def __init__(self, args: argparse.Namespace, rank: Rank, batch_size: int, batches: int) -> None:
        g = torch.Generator().manual_seed(0)
        c, h, w = args.image_shape
        x = torch.randn(batch_size, c, h, w, generator=g)
        y = torch.randint(0, args.num_classes, (batch_size,), generator=g)
        self.batch = data.Batch(
            x.to(rank.device).contiguous(memory_format=torch.channels_last), y.to(rank.device)
        )
        self.batches = batches

    def __len__(self) -> int:
        return self.batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.start = start_batch

    def __iter__(self) -> Iterator[data.Batch]:
        return (self.batch for _ in range(self.batches - getattr(self, "start", 0)))


# ---------------------------------------------------------------- entry points


def per_process_batch(args: argparse.Namespace) -> int:
    """--batch-size is per worker, split over its --gpus, as MXNet has it: one process per GPU gets a share."""
    return max(1, args.batch_size // max(1, len(args.gpus)))


def fit(args: argparse.Namespace) -> int:
    """Train (or --test-io / --benchmark) as one rank of the job; returns the exit status."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    rank = init_distributed(args.gpus, getattr(args, "dist_timeout", 5.0))
    host = os.environ.get("IMGSCALE_HOST", "") or (socket.gethostname() if rank.world > 1 else "")
    setup_logging(rank.rank, host)
    try:
        status = run_test_io(args, rank) if args.test_io else train(args, rank)
    except UserError:
        raise
    except Exception:
        if rank.world > 1:
            leave_at_once()
        raise
    # Only after a clean run: with a peer dead or hung, leaving the group would wait on it, and
    # this rank must exit at once so the supervisor stops the job everywhere.
    if dist.is_initialized():
        dist.destroy_process_group()
    return status


def leave_at_once() -> None:
    """A collective failed (a peer died or hung): print why and exit now. A normal exit would
    shut the data loader's workers down first, which waits seconds per worker, while the job
    should be stopped everywhere as soon as possible."""
    traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def run_test_io(args: argparse.Namespace, rank: Rank) -> int:
    """Read, decode and augment only, as train_imagenet's --test-io; log images/s."""
    batch_size = per_process_batch(args)
    loader = make_loader(args, rank, args.data_train, "--data-train", batch_size, train=True)
    limit = args.num_batches or len(loader)
    loader.set_epoch(0)
    start = tic = time.time()
    done = 0
    for i, _batch in enumerate(loader):
        done = i + 1
        if done % args.disp_batches == 0:
            now = time.time()
            log.info(
                "test-io: Batch [%d-%d]\tSpeed: %.2f samples/sec",
                done - args.disp_batches,
                done,
                args.disp_batches * batch_size / max(now - tic, 1e-9),
            )
            tic = now
        if done >= limit:
            break
    elapsed = time.time() - start
    log.info(
        "test-io: %d images in %.3f s: %.2f images/sec",
        done * batch_size,
        elapsed,
        done * batch_size / max(elapsed, 1e-9),
    )
    return 0


def train(args: argparse.Namespace, rank: Rank) -> int:
    batch_size = per_process_batch(args)
    train_data, val_data = training_data(args, rank, batch_size)
    epoch_batches = min(len(train_data), args.num_batches) if args.num_batches else len(train_data)
    if epoch_batches < 1:
        raise UserError(
            f"--data-train {args.data_train}: fewer records than one batch of {batch_size} per rank"
        )
    records = getattr(train_data, "num_records", None)
    if records is not None and records != args.num_examples:
        log.info(
            "epoch length from the data: %d records (--num-examples %d is not used by the torch engine)",
            records,
            args.num_examples,
        )
    trainer = build_trainer(args, rank, epoch_batches, batch_size)
    if rank.main and args.model_prefix:
        prefix = args.model_prefix
        with ckpt.refusing_write(prefix, os.path.basename(f"{prefix}-args.json")):
            os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
            ckpt.start_fresh(prefix, args.resume, args.load_epoch, getattr(args, "fresh", False))
            save_resolved(args, f"{prefix}-args.json")
    log.info(
        "torch engine: rank %d of %d on %s, batch %d per process, %d batches per epoch, bf16 %s, mirror %s",
        rank.rank,
        rank.world,
        rank.device,
        batch_size,
        epoch_batches,
        "on" if trainer.amp else "off",
        "on" if use_mirror(args) else "off",
    )
    if rank.main:
        trainer.scalars = open_scalars(
            getattr(args, "tensorboard_dir", None), args.model_prefix, rank.rank
        )
    try:
        for epoch in range(trainer.begin_epoch, args.num_epochs):
            start_batch = trainer.begin_batch if epoch == trainer.begin_epoch else 0
            run_epoch(trainer, epoch, start_batch, train_data, val_data)
    finally:
        trainer.scalars.close()
    return 0


def training_data(
    args: argparse.Namespace, rank: Rank, batch_size: int
) -> tuple[data.RecordLoader | Synthetic, data.RecordLoader | None]:
    if args.benchmark:
        batches = args.num_batches or max(1, args.num_examples // (batch_size * rank.world))
        return Synthetic(args, rank, batch_size, batches), None
    train_data = make_loader(args, rank, args.data_train, "--data-train", batch_size, train=True)
    val_data = None
    if getattr(args, "data_val", None):
        val_data = make_loader(args, rank, args.data_val, "--data-val", batch_size, train=False)
    return train_data, val_data


def run_epoch(
    trainer: Trainer,
    epoch: int,
    start_batch: int,
    train_data: data.RecordLoader | Synthetic,
    val_data: data.RecordLoader | None,
) -> None:
    tic = time.time()
    lr = trainer.optimizer.param_groups[0]["lr"]
    log.info("Epoch[%d] Learning-rate=%g", epoch, lr)  # MXNet's line, for the report's lr curve
    train_data.set_epoch(epoch, start_batch)
    metrics = trainer.train_epoch(epoch, train_data, start_batch).values()
    for name, value in metrics:
        log.info("Epoch[%d] Train-%s=%f", epoch, name, value)
    seconds = time.time() - tic
    log.info("Epoch[%d] Time cost=%.3f", epoch, seconds)
    trainer.save_epoch(epoch + 1)
    validation: list[tuple[str, float]] = []
    if val_data is not None:
        val_data.set_epoch(epoch)
        validation = trainer.evaluate(val_data)
        for name, value in validation:
            log.info("Epoch[%d] Validation-%s=%f", epoch, name, value)
    if trainer.rank.main and trainer.args.model_prefix:
        append_summary(trainer.args.model_prefix, epoch, seconds, metrics, validation)
    trainer.scalars.epoch(epoch, lr, seconds, metrics, validation)
