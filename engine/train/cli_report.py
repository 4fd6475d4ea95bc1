"""`imgscale report JOB`: a job's curves, images/s, attempts, options and hosts in one HTML file."""

from __future__ import annotations

import argparse
import time

from engine.cluster.process import jobs
from engine.train import history, report

REPORT_HELP = "write a job's report: one self-contained HTML file (plots embedded), or --png DIR"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `report` to the `imgscale` parser."""
    parser = sub.add_parser("report", help=REPORT_HELP, description=REPORT_HELP)
    parser.add_argument("job", help="job id (see `imgscale jobs`)")
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="the HTML file (default: JOB-report.html here)"
    )
    parser.add_argument(
        "--png",
        metavar="DIR",
        help="write the plots alone as DIR/NAME.png (and the HTML only when -o is given)",
    )
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    tic = time.monotonic()
    record = jobs.load(args.job)
    past = history.gather(record)
    plots = report.draw(past)
    written = report.write_pngs(plots, args.png) if args.png else []
    if args.output or not args.png:
        written.append(report.write_html(past, plots, args.output or f"{record.job}-report.html"))
    if not report.can_plot():
        print(report.NO_MATPLOTLIB)
    missing = [str(p.path) for p in past.procs if not p.found]
    if missing:
        print(f"{len(missing)} log(s) not readable here, left out: {', '.join(missing[:3])}")
    print(f"{', '.join(written)} ({time.monotonic() - tic:.1f} s)")
    return 0
