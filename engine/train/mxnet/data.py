"""MXNet training input: ImageRecordIter over .rec chunks sharded by worker rank, equal batches per worker, synthetic data."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from typing import Any, Self  # Any: mxnet objects (imported lazily, no type hints)

from engine.errors import UserError
from engine.train.recfiles import rec_files

log = logging.getLogger("imgscale.train")


def imgrec_arg(files: list[str]) -> str:
    """One path_imgrec for several files: dmlc's InputSplit reads ';'-separated files as one stream,
    and num_parts/part_index then shard that stream by bytes across workers."""
    for f in files:
        if ";" in f:
            raise UserError(f"{f}: a ';' in a data file name cannot be read by MXNet; rename it")
    return ";".join(files)


def _aug_kwargs(args: argparse.Namespace) -> dict:
    kwargs = {
        "rand_crop": bool(args.random_crop),
        "rand_mirror": bool(args.random_mirror),
        "random_h": args.max_random_h,
        "random_s": args.max_random_s,
        "random_l": args.max_random_l,
        "max_aspect_ratio": args.max_random_aspect_ratio,
        "max_rotate_angle": args.max_random_rotate_angle,
        "max_shear_ratio": args.max_random_shear_ratio,
        "max_random_scale": args.max_random_scale,
        "min_random_scale": args.min_random_scale,
        "max_random_area": args.max_random_area,
        "min_random_area": args.min_random_area,
        "min_crop_size": args.min_crop_size,
        "max_crop_size": args.max_crop_size,
        "brightness": args.brightness,
        "contrast": args.contrast,
        "saturation": args.saturation,
        "pca_noise": args.pca_noise,
        "random_resized_crop": bool(args.random_resized_crop),
        "pad": args.pad_size,
        "fill_value": args.fill_value,
    }
    if args.min_random_aspect_ratio is not None:
        kwargs["min_aspect_ratio"] = args.min_random_aspect_ratio
    return kwargs


def _common_kwargs(args: argparse.Namespace, rank: int, num_workers: int) -> dict:
    mean, std = args.rgb_mean, args.rgb_std
    kwargs = {
        "label_width": 1,
        "data_name": "data",
        "label_name": "softmax_label",
        "data_shape": tuple(args.image_shape),
        "batch_size": args.batch_size,
        "preprocess_threads": args.data_nthreads,
        "num_parts": num_workers,
        "part_index": rank,
        "mean_r": mean[0],
        "mean_g": mean[1 % len(mean)],
        "mean_b": mean[2 % len(mean)],
        "std_r": std[0],
        "std_g": std[1 % len(std)],
        "std_b": std[2 % len(std)],
    }
    if args.seed is not None:
        kwargs["seed"] = args.seed + rank
    return kwargs


def train_iter(args: argparse.Namespace, rank: int = 0, num_workers: int = 1) -> Any:
    """The training ImageRecordIter: this worker's shard of every chunk, augmented and shuffled."""
    import mxnet as mx

    path = imgrec_arg(rec_files(args.data_train, "--data-train"))
    return mx.io.ImageRecordIter(
        path_imgrec=path,
        shuffle=True,
        **_common_kwargs(args, rank, num_workers),
        **_aug_kwargs(args),
    )


def val_iter(args: argparse.Namespace, rank: int = 0, num_workers: int = 1) -> Any:
    """A validation ImageRecordIter (centre crop, no augmentation), or None without --data-val."""
    import mxnet as mx

    if not args.data_val:
        return None
    path = imgrec_arg(rec_files(args.data_val, "--data-val"))
    # Make a new one for every validation: ImageRecordIter fills the last batch from the start of the data
    # and then begins its next pass after those images, so a reused one scores a different subset each epoch.
    return mx.io.ImageRecordIter(
        path_imgrec=path,
        shuffle=False,
        rand_crop=False,
        rand_mirror=False,
        **_common_kwargs(args, rank, num_workers),
    )


def fixed_batches(it: Any, count: int) -> Iterator:
    """Exactly `count` batches from `it`, continuing where the last call stopped and starting over at its end.

    Every worker runs the same number of batches per epoch whatever its shard holds, which is what keeps
    dist_sync from hanging at an epoch end (the ResizeIter guard), and every image is still visited in turn.
    """
    done = 0
    while done < count:
        try:
            batch = next(it)
        except StopIteration:
            it.reset()
            batch = next(it)
        yield batch
        done += 1


class SyntheticIter:
    """--benchmark: the same random batch again and again, so only compute and communication are measured."""

    def __init__(
        self, num_classes: int, data_shape: tuple, batch_size: int, ctx: Any = None
    ) -> None:
        import mxnet as mx
        import numpy as np

        rng = np.random.default_rng(0)
        shape = (batch_size, *data_shape)
        self.batch_size = batch_size
        ctx = ctx or mx.cpu()
        data = mx.nd.array(rng.uniform(-1, 1, shape).astype("float32"), ctx=ctx)
        label = mx.nd.array(rng.integers(0, num_classes, batch_size).astype("float32"), ctx=ctx)
        self.provide_data = [mx.io.DataDesc("data", shape, "float32")]
        self.provide_label = [mx.io.DataDesc("softmax_label", (batch_size,), "float32")]
        self.batch = mx.io.DataBatch(
            data=[data],
            label=[label],
            pad=0,
            provide_data=self.provide_data,
            provide_label=self.provide_label,
        )

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Any:
        return self.batch

    def reset(self) -> None:
        pass


def run_test_io(
    it: Any, batch_size: int, num_batches: int, disp_batches: int, logger: logging.Logger = log
) -> float:
    """Read and decode `num_batches` batches only; log Speedometer-style lines; return images/s."""
    start = tic = time.time()
    for i, batch in enumerate(fixed_batches(it, num_batches)):
        for array in batch.data:
            array.wait_to_read()
        if (i + 1) % disp_batches == 0:
            now = time.time()
            logger.info(
                "test-io: Batch [%d-%d]\tSpeed: %.2f samples/sec",
                i + 1 - disp_batches,
                i + 1,
                disp_batches * batch_size / max(now - tic, 1e-9),
            )
            tic = now
    elapsed = time.time() - start
    rate = num_batches * batch_size / max(elapsed, 1e-9)
    logger.info(
        "test-io: %d images in %.3f s: %.2f images/sec", num_batches * batch_size, elapsed, rate
    )
    return rate
