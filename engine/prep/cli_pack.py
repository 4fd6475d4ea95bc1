"""`imgscale list` and `imgscale pack`: im2rec's positional arguments and options, resumable and reported."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from engine.errors import UserError

LIST_HELP = (
    "write .lst files exactly as `im2rec.py --list` does, plus PREFIX_labels.txt (class -> label)"
)
PACK_HELP = (
    "pack .lst files into .rec/.idx like im2rec.py, in worker processes; resumes after interruption"
)


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prefix", help="prefix of the .lst files to write (PREFIX.lst, PREFIX_0.lst …)"
    )
    parser.add_argument(
        "root", help="folder that holds the images (one subfolder per class with --recursive)"
    )
    parser.add_argument(
        "--recursive", action="store_true", help="walk subfolders; each folder gets its own label"
    )
    parser.add_argument("--chunks", type=int, default=1, help="number of chunks (PREFIX_0.lst …)")
    parser.add_argument(
        "--train-ratio", type=float, default=1.0, help="share of images for PREFIX_train.lst"
    )
    parser.add_argument(
        "--test-ratio", type=float, default=0.0, help="share of images for PREFIX_test.lst"
    )
    parser.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        help="keep walk order (no seeded shuffle)",
    )
    parser.add_argument(
        "--exts", nargs="+", default=[".jpeg", ".jpg", ".png"], help="image extensions (any case)"
    )


def build_list_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgscale list", description=LIST_HELP)
    add_list_arguments(parser)
    return parser


def add_pack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prefix", help="a .lst file's prefix, or a folder: every matching .lst is packed"
    )
    parser.add_argument("root", help="folder the .lst paths are relative to")
    parser.add_argument(
        "--resize",
        type=int,
        default=0,
        help="resize the short edge to this many pixels (im2rec enlarges smaller images too)",
    )
    parser.add_argument("--center-crop", action="store_true", help="crop the centre square first")
    parser.add_argument(
        "--quality", type=int, default=95, help="JPEG quality 1-100, or PNG compression 0-9"
    )
    parser.add_argument("--encoding", default=".jpg", help=".jpg or .png")
    parser.add_argument(
        "--color", type=int, default=1, help="1 colour, 0 greyscale, -1 unchanged (with alpha)"
    )
    parser.add_argument(
        "--pass-through",
        action="store_true",
        help="store the files as they are (checked, not decoded)",
    )
    parser.add_argument(
        "--pack-label", action="store_true", help="store every label of multi-label lines"
    )
    parser.add_argument(
        "--num-thread",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: all cores)",
    )
    parser.add_argument(
        "--no-upscale",
        action="store_true",
        help="store JPEGs whose short edge is already at or below --resize as they are (no re-encoding)",
    )
    parser.add_argument(
        "--no-reduced-decode",
        dest="reduced_decode",
        action="store_false",
        help="decode with OpenCV at full size like im2rec: byte-identical records, slower",
    )
    parser.add_argument(
        "--codec",
        choices=("auto", "opencv"),
        default="auto",
        help="auto: libjpeg-turbo's YUV planes where libturbojpeg is installed (fastest); "
        "opencv: OpenCV's BGR path",
    )
    parser.add_argument(
        "--hosts", metavar="FILE", help="spread the chunks over the hosts of a hosts file"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _progress(args):
    from engine.cli_progress import CliProgress
    from engine.events import StageProgress, StageState

    draw = CliProgress(quiet=args.quiet)

    def sink(event):
        # The bar shows the whole run; per-chunk events are for the console. Quiet keeps skips only.
        if (
            isinstance(event, StageProgress)
            and event.part
            or isinstance(event, StageState)
            and args.quiet
        ):
            return
        draw(event)

    return sink


def write_lists_from(args: argparse.Namespace, on_event=None) -> list:
    """Write the .lst files that the `list` command's parsed arguments describe."""
    from engine.events import ignore
    from engine.prep import lst

    return lst.write_lists(
        args.prefix,
        args.root,
        recursive=args.recursive,
        chunks=args.chunks,
        train_ratio=args.train_ratio,
        test_ratio=args.test_ratio,
        shuffle=args.shuffle,
        exts=tuple(args.exts),
        on_event=on_event or ignore,
    )


def run_list(args: argparse.Namespace) -> int:
    from engine.prep import lst

    written = write_lists_from(args, _progress(args))
    for path in written:
        print(path)
    print(lst.labels_path(os.path.abspath(args.prefix)))
    return 0


def options_from_args(args: argparse.Namespace):
    from engine.prep.pack import PackOptions

    return PackOptions(
        resize=args.resize,
        center_crop=args.center_crop,
        quality=args.quality,
        encoding=args.encoding,
        color=args.color,
        pass_through=args.pass_through,
        pack_label=args.pack_label,
        num_thread=args.num_thread,
        no_upscale=args.no_upscale,
        reduced_decode=args.reduced_decode,
        codec=args.codec,
    )


def _dpack():
    try:
        return importlib.import_module("engine.cluster.dpack")
    except ModuleNotFoundError as exc:
        if exc.name != "engine.cluster.dpack":
            raise
        raise UserError(
            "--hosts: distributed packing is not available in this version; pack without --hosts"
        ) from None


def run_pack(args: argparse.Namespace) -> int:
    from engine.prep import pack

    options = options_from_args(args)
    pack.validate(options)
    lists = pack.find_lists(args.prefix)
    sink = _progress(args)
    if args.hosts:
        if not os.path.isfile(args.hosts):
            raise UserError(f"--hosts {args.hosts}: no such file")
        _dpack().pack_on_hosts(args.hosts, lists, os.path.abspath(args.root), options, sink)
        return 0
    result = pack.pack_lists(lists, args.root, options, on_event=sink)
    for chunk in result.chunks:
        print(f"{chunk.rec}\t{chunk.records} records\t{chunk.skipped} skipped\t{chunk.report}")
    rate = result.records / result.seconds if result.seconds else 0.0
    print(
        f"{result.records} records, {result.skipped} skipped in {result.seconds:.1f} s ({rate:.1f} images/s)",
        file=sys.stderr,
    )
    return 0


def register(sub) -> None:
    """Add `list` and `pack` to the `imgscale` parser."""
    parser = sub.add_parser("list", help=LIST_HELP, description=LIST_HELP)
    add_list_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run_list)
    parser = sub.add_parser("pack", help=PACK_HELP, description=PACK_HELP)
    add_pack_arguments(parser)
    parser.set_defaults(func=run_pack)
