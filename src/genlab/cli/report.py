"""``genlab report RUN [RUN ...]``: the trilemma table and chart (quality, coverage, speed, likelihood)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    r = sub.add_parser("report", help="the trilemma table and chart (quality, coverage, speed, likelihood) of runs",
                       description="Collect every evaluation in the runs' metrics.jsonl into one table (FID, KID, "
                                   "precision, recall, bits/dim, NFE, seconds per sample) written as Markdown, "
                                   "with a PNG chart of quality against speed (point size: recall) beside it.")
    r.add_argument("runs", type=Path, nargs="+", help="run directories evaluated with genlab eval")
    r.add_argument("--out", type=Path, default=Path("report.md"), help="Markdown file to write (default report.md); "
                   "the chart goes beside it with the suffix .png")
    r.add_argument("--x", choices=("seconds", "nfe"), default="seconds",
                   help="the chart's speed axis: seconds per sample (default) or network evaluations per sample "
                        "(one line per sampler)")
    r.add_argument("--n", type=int, default=None, help="keep only evaluations of this many samples (compare at equal n)")
    r.add_argument("--best", action="store_true",
                   help="keep one row per run: its lowest FID (e.g. one row per family; the protocol says so)")
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)



def run(args) -> int:
    from genlab.viz.report import best_per_run, collect_rows, write_report

    rows = collect_rows(args.runs)
    if args.n is not None:
        rows = [r for r in rows if r.get("n") == args.n or r.get("fid") is None]
    if args.best:
        rows = best_per_run(rows)
    md, png = write_report(rows, args.out, args.x, best=args.best)
    print(f"genlab: report of {len(rows)} rows from {len(args.runs)} run(s) -> {md} and {png}")
    return 0
