"""``tkmia report RESULTS_DIR``: print the paper-style tables of every run under a folder."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("report", help="print the summary tables of the runs stored under a folder")
    p.add_argument("results_dir", help="a results folder (e.g. data/results/default)")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tkmia import report
    from tkmia._io import atomic_write

    if args.csv:  # checked before the tables are read
        folder = Path(args.csv).expanduser().resolve().parent
        if not folder.is_dir():
            raise ValueError(f"--csv {args.csv}: the folder {folder} does not exist; create it or "
                             "choose a path in an existing folder")
    records = report.load_records(args.results_dir)
    # one row per (scheme, k, method) and per setting that differs between the stored runs
    table = report.summarize(records)
    print(report.format_table(table))
    if args.csv:
        atomic_write(args.csv, lambda p: table.to_csv(p, index=False))
        print(f"table: {args.csv}")
    return 0
