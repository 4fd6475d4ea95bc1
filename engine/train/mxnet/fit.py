"""The MXNet training loop: Module.fit's steps, equal batches per worker, lr schedule that survives resume, checkpoints."""

from __future__ import annotations

import argparse
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any  # mxnet objects: mxnet is imported lazily and ships no type hints

from engine.errors import UserError
from engine.train import checkpoints as ckpt
from engine.train.launch.engines import is_distributed
from engine.train.logsetup import append_summary, setup_logging
from engine.train.mxnet import data, saving
from engine.train.mxnet.networks import get_symbol
from engine.train.options import batch_sizes, epoch_size, save_resolved
from engine.train.recfiles import rec_files
from engine.train.tboard import Interval, Scalars, open_scalars, report_interval

log = logging.getLogger("imgscale.train")


# --- pure helpers (unit-tested without mxnet) ---


def lr_schedule(
    lr: float,
    factor: float,
    step_epochs: list[int],
    epoch_batches: int,
    begin_epoch: int = 0,
    begin_batch: int = 0,
) -> tuple[float, list[int]]:
    """The learning rate to start with and the update counts (from the resume point) at which it steps.

    Steps already passed before the resume point are applied to the starting rate, so a resumed run
    continues the schedule where the first run left it, as common/fit.py does for --load-epoch.
    """
    base = lr
    for step in step_epochs:
        if begin_epoch >= step:
            base *= factor
    done = begin_epoch * epoch_batches + begin_batch
    steps = [step * epoch_batches - done for step in step_epochs if step * epoch_batches - done > 0]
    return base, steps


def lr_at_epoch(lr: float, factor: float, step_epochs: list[int], epoch: int) -> float:
    return lr * factor ** sum(1 for step in step_epochs if epoch >= step)


@dataclass
class Plan:
    """What this worker will do: its place in the job and the epochs and batches to run."""

    rank: int
    num_workers: int
    epoch_batches: int
    begin_epoch: int
    begin_batch: int
    resume: ckpt.ResumePoint | None


def resume_point(args: argparse.Namespace) -> ckpt.ResumePoint | None:
    """--load-epoch N (that epoch's checkpoint) or --resume (the newest complete one, if any)."""
    if args.load_epoch is not None:
        params = ckpt.params_path(args.model_prefix, args.load_epoch)
        if not os.path.isfile(params):
            raise UserError(
                f"--load-epoch {args.load_epoch}: {params} does not exist; newest complete checkpoint: "
                f"{ckpt.newest_checkpoint(args.model_prefix)}"
            )
        problem = ckpt.load_problem(params)
        if problem is not None:
            newest = ckpt.newest_loadable(args.model_prefix, warn=lambda _line: None)
            raise UserError(
                f"--load-epoch {args.load_epoch}: {params} cannot be loaded ({problem}); "
                f"newest checkpoint that loads: {newest[0] if newest else 'none'}"
            )
        states = ckpt.states_path(args.model_prefix, args.load_epoch)
        return ckpt.ResumePoint(
            args.load_epoch, 0, params, states if os.path.isfile(states) else None
        )
    if args.resume:
        return ckpt.newest_resume_point(args.model_prefix)
    return None


def make_plan(args: argparse.Namespace, rank: int, num_workers: int) -> Plan:
    batches = epoch_size(args.num_examples, args.batch_size, num_workers)
    if args.num_batches > 0:  # --test-io and --benchmark may run longer than an epoch of real data
        batches = (
            args.num_batches if args.benchmark or args.test_io else min(batches, args.num_batches)
        )
    point = resume_point(args)
    begin_epoch, begin_batch = (point.epoch, point.batch) if point else (0, 0)
    if begin_batch >= batches:  # a batch checkpoint from a longer epoch: start the next one
        begin_epoch, begin_batch = begin_epoch + 1, 0
    return Plan(rank, num_workers, batches, begin_epoch, begin_batch, point)


# --- the run ---


def train(args: argparse.Namespace) -> int:
    """Run `imgscale train` with the MXNet engine in this process; returns the exit status."""
    import mxnet as mx

    if args.mirror:
        os.environ["MXNET_BACKWARD_DO_MIRROR"] = "1"  # read by MXNet when it builds the executor
    if args.seed is not None:
        _seed(args.seed)
    if is_distributed(args.kv_store) and not os.environ.get("DMLC_PS_ROOT_URI"):
        raise UserError(
            f"--kv-store {args.kv_store} needs the DMLC_* environment of a launched job: start it with "
            "`imgscale launch -n N -s S -H hosts -- python -m engine.train.run …`, or use --kv-store local"
        )
    kv = mx.kvstore.create(args.kv_store) if is_distributed(args.kv_store) else None
    rank, num_workers = (kv.rank, kv.num_workers) if kv else (0, 1)
    # The launcher's IMGSCALE_HOST/IMGSCALE_RANK label the log (its ranks are stable across relaunches;
    # ps-lite numbers workers in the order they register); ps-lite's rank shards the data.
    host = os.environ.get("IMGSCALE_HOST", "") or (socket.gethostname() if kv else "")
    setup_logging(int(os.environ.get("IMGSCALE_RANK", "") or rank), host)
    plan = make_plan(args, rank, num_workers)
    _log_start(args, plan)
    if args.model_prefix and plan.rank == 0:
        _prepare_prefix(args)
    if args.test_io:
        it = data.train_iter(args, rank, num_workers)
        data.run_test_io(it, args.batch_size, plan.epoch_batches, args.disp_batches, log)
        return 0
    train_it = _train_source(args, rank, num_workers)
    make_val = _validation_source(args, rank, num_workers)
    module = _build_module(args, train_it, plan, kv)
    # one writer per worker, tagged with the launcher's stable rank as its log lines are
    scalars = open_scalars(
        args.tensorboard_dir, args.model_prefix, int(os.environ.get("IMGSCALE_RANK", "") or rank)
    )
    try:
        _run_epochs(args, module, train_it, make_val, plan, scalars)
    finally:
        scalars.close()
    return 0


def _seed(seed: int) -> None:
    import mxnet as mx
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def _log_start(args: argparse.Namespace, plan: Plan) -> None:
    sizes = batch_sizes(args.batch_size, args.gpus, plan.num_workers)
    devices = ",".join(f"gpu{g}" for g in args.gpus) or "cpu"
    log.info(
        "start: network=%s%s kv-store=%s workers=%d devices=%s",
        args.network,
        f"-{args.num_layers}" if args.network == "resnet" else "",
        args.kv_store,
        plan.num_workers,
        devices,
    )
    log.info(
        "batch: per-gpu=%d per-worker=%d global=%d; %d batches per epoch per worker",
        sizes["per_gpu"],
        sizes["per_worker"],
        sizes["global"],
        plan.epoch_batches,
    )
    log.info("MXNET_BACKWARD_DO_MIRROR=%s", os.environ.get("MXNET_BACKWARD_DO_MIRROR", "0"))
    if plan.resume:
        log.info(
            "resume: from %s at epoch %d batch %d",
            plan.resume.params,
            plan.begin_epoch,
            plan.begin_batch,
        )


def _prepare_prefix(args: argparse.Namespace) -> None:
    prefix = args.model_prefix
    with ckpt.refusing_write(prefix, os.path.basename(f"{prefix}-args.json")):
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        ckpt.start_fresh(prefix, args.resume, args.load_epoch, args.fresh)
        save_resolved(args, f"{prefix}-args.json")


def _train_source(args: argparse.Namespace, rank: int, parts: int) -> Any:

    if not args.benchmark:
        return data.train_iter(args, rank, parts)
    import mxnet as mx

    ctx = mx.Context("cpu_pinned", 0) if args.gpus else mx.cpu()
    return data.SyntheticIter(args.num_classes, tuple(args.image_shape), args.batch_size, ctx)


def _validation_source(args: argparse.Namespace, rank: int, parts: int) -> Callable[[], Any] | None:
    """A function making a fresh validation iterator (see data.val_iter), or None."""
    if not args.data_val or args.benchmark:
        return None

    rec_files(args.data_val, "--data-val")  # a wrong path fails now, not after the first epoch
    return lambda: data.val_iter(args, rank, parts)


def _initializer(name: str) -> Any:
    import mxnet as mx

    if name == "msra":
        return mx.init.MSRAPrelu()
    # common/fit.py's default: Xavier, gaussian, fan-in, magnitude 2
    return mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)


def _build_module(args: argparse.Namespace, train_it: Any, plan: Plan, kv: Any) -> Any:
    import mxnet as mx

    symbol = get_symbol(
        args.network, args.num_classes, args.num_layers, tuple(args.image_shape), args.dtype
    )
    contexts = [mx.gpu(g) for g in args.gpus] or [mx.cpu()]
    module = mx.mod.Module(symbol, context=contexts, logger=log)
    module.bind(
        data_shapes=train_it.provide_data, label_shapes=train_it.provide_label, for_training=True
    )
    arg_params = aux_params = None
    if plan.resume:
        arg_params, aux_params = saving.load_params(plan.resume.params)
    module.init_params(
        _initializer(args.initializer),
        arg_params=arg_params,
        aux_params=aux_params,
        allow_missing=False,
    )
    # One device and no distributed store: pass the name, so Module updates in place without a kvstore,
    # exactly as Module.fit(kvstore='local') would.
    module.init_optimizer(
        kvstore=kv or args.kv_store,
        optimizer=args.optimizer,
        optimizer_params=_optimizer_params(args, plan),
    )
    if plan.resume and plan.resume.states and not kv:
        try:
            module.load_optimizer_states(plan.resume.states)
        except Exception as exc:  # a damaged states file: the weights still resume
            log.warning(
                "%s cannot be loaded (%s): the optimizer's momentum starts again from zero",
                plan.resume.states,
                type(exc).__name__,
            )
    return module


def _optimizer_params(args: argparse.Namespace, plan: Plan) -> dict:
    import mxnet as mx

    base_lr, steps = lr_schedule(
        args.lr,
        args.lr_factor,
        args.lr_step_epochs,
        plan.epoch_batches,
        plan.begin_epoch,
        plan.begin_batch,
    )
    params = {"learning_rate": base_lr, "wd": args.wd}
    if steps:
        params["lr_scheduler"] = mx.lr_scheduler.MultiFactorScheduler(
            step=steps, factor=args.lr_factor, base_lr=base_lr
        )
    if args.optimizer in ("sgd", "nag", "signum"):
        params["momentum"] = args.mom
    if args.dtype == "float16":
        params["multi_precision"] = True
    return params


def _metrics(args: argparse.Namespace) -> Any:
    import mxnet as mx

    metric = mx.metric.CompositeEvalMetric()
    metric.add(mx.metric.create("accuracy"))
    if args.top_k > 0:
        metric.add(mx.metric.create("top_k_accuracy", top_k=args.top_k))
    if "ce" in args.loss.split(","):
        metric.add(mx.metric.create("ce"))
    return metric


def _run_epochs(
    args: argparse.Namespace,
    module: Any,
    train_it: Any,
    make_val: Callable[[], Any] | None,
    plan: Plan,
    scalars: Scalars,
) -> None:
    import mxnet as mx

    metric = _metrics(args)
    # no auto-reset: the epoch's Train- line then covers the whole epoch, not the last few batches
    speedometer = mx.callback.Speedometer(args.batch_size, args.disp_batches, auto_reset=False)
    source = iter(train_it)
    for epoch in range(plan.begin_epoch, args.num_epochs):
        first = plan.begin_batch if epoch == plan.begin_epoch else 0
        metric.reset()
        tic = time.time()
        rate = lr_at_epoch(args.lr, args.lr_factor, args.lr_step_epochs, epoch)
        log.info("Epoch[%d] Learning-rate=%g", epoch, rate)
        clock = Interval(args.batch_size, args.disp_batches)
        _train_epoch(
            args, module, source, metric, (speedometer, clock, scalars), plan, epoch, first
        )
        for name, value in metric.get_name_value():
            log.info("Epoch[%d] Train-%s=%f", epoch, name, value)
        seconds = time.time() - tic
        log.info("Epoch[%d] Time cost=%.3f", epoch, seconds)
        if _due(args.save_period, epoch + 1) or epoch + 1 == args.num_epochs:
            _save(args, module, plan, epoch + 1, 0)
        validation = _validate(module, make_val, args, epoch)
        _append_summary(args, plan, epoch, metric, validation, time.time() - tic)
        scalars.epoch(epoch, rate, seconds, metric.get_name_value(), validation)


def _train_epoch(
    args: argparse.Namespace,
    module: Any,
    source: Any,
    metric: Any,
    meters: tuple[Any, Any, Scalars],
    plan: Plan,
    epoch: int,
    first: int,
) -> None:
    """Module.fit's inner loop, from batch `first` (a resumed epoch) to the epoch's fixed length.
    `meters`: MXNet's Speedometer, and the clock and writer of the TensorBoard scalars."""
    import mxnet as mx

    speedometer, clock, scalars = meters
    batches = data.fixed_batches(source, plan.epoch_batches - first)
    for nbatch, batch in enumerate(batches, start=first):
        module.forward_backward(batch)
        module.update()
        module.update_metric(metric, batch.label)
        _refuse_diverged(module, epoch, nbatch)
        speedometer(
            mx.model.BatchEndParam(epoch=epoch, nbatch=nbatch, eval_metric=metric, locals=None)
        )
        step = epoch * plan.epoch_batches + nbatch
        report_interval(scalars, clock, step, nbatch, metric.get_name_value)
        if _due(args.save_batches, nbatch + 1) and nbatch + 1 < plan.epoch_batches:
            _save(args, module, plan, epoch, nbatch + 1)


def _refuse_diverged(module: Any, epoch: int, nbatch: int) -> None:
    """Stop at the first batch whose output (and so its loss) is nan or inf. The accuracy metric
    above has already waited for this output, so reading it costs no extra sync; each device's
    part is read where it is (merging them would be one more copy per batch)."""
    import numpy as np

    parts = module.get_outputs(merge_multi_context=False)[0]
    if not all(np.isfinite(part.asnumpy()).all() for part in parts):
        raise UserError(
            f"the loss is not finite (nan or inf) at epoch {epoch} batch {nbatch}: training "
            "diverged and no checkpoint is written from it; lower --lr or --wd, or resume from "
            "the last checkpoint with --resume"
        )


def _due(period: int, count: int) -> bool:
    return period > 0 and count % period == 0


def _validate(
    module: Any, make_val: Callable[[], Any] | None, args: argparse.Namespace, epoch: int
) -> list[tuple[str, float]]:
    if make_val is None:
        return []
    results = score(module, make_val(), _metrics(args))
    for name, value in results:
        log.info("Epoch[%d] Validation-%s=%f", epoch, name, value)
    return results


def score(module: Any, it: Any, metric: Any) -> list[tuple[str, float]]:
    """Module.score, except that the padding of a last partial batch is not counted: every image once."""
    metric.reset()
    for batch in it:
        module.forward(batch, is_train=False)
        outputs, labels = module.get_outputs(), batch.label
        if batch.pad:
            keep = outputs[0].shape[0] - batch.pad
            outputs, labels = [o[:keep] for o in outputs], [lab[:keep] for lab in labels]
        metric.update(labels, outputs)
    return metric.get_name_value()


def _save(args: argparse.Namespace, module: Any, plan: Plan, epoch: int, batch: int) -> None:
    """Rank 0 writes the checkpoint (weights are the same on every worker in dist_sync)."""
    if not args.model_prefix or plan.rank != 0:
        return
    import mxnet as mx

    # MKLDNN's BatchNorm writes its moving mean/var in the backward pass behind the engine's dependency
    # tracking; without this wait a checkpoint can catch them one update stale.
    mx.nd.waitall()
    arg_params, aux_params = module.get_params()
    if not (saving.finite(arg_params) and saving.finite(aux_params)):
        raise UserError(
            f"the weights are not finite (nan or inf) after {epoch} epoch(s) and {batch} "
            "batch(es): training diverged and no checkpoint is written from it; lower --lr or --wd"
        )
    prefix = args.model_prefix
    saving.save_symbol(prefix, module.symbol)
    params = ckpt.params_path(prefix, epoch, batch)
    saving.save_params(params, arg_params, aux_params, prefix)
    if not is_distributed(args.kv_store):  # else the optimizer state lives on the servers
        saving.save_states(ckpt.states_path(prefix, epoch, batch), module, prefix)
    ckpt.remove_batch_checkpoints(prefix, keep=(epoch, batch) if batch else None)
    log.info('Saved checkpoint to "%s"', params)
    if not batch:
        ckpt.prune_epochs(prefix, args.keep_checkpoints, args.save_period)


def _append_summary(
    args: argparse.Namespace,
    plan: Plan,
    epoch: int,
    metric: Any,
    validation: list[tuple[str, float]],
    seconds: float,
) -> None:
    """PREFIX-summary.csv: one row per epoch, for plots and for comparing runs."""
    if not args.model_prefix or plan.rank != 0:
        return
    append_summary(args.model_prefix, epoch, seconds, metric.get_name_value(), validation)
