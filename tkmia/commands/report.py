"""``tkmia report RESULTS_DIR``: print the paper-style tables of every run under a folder."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("report", help="print the summary tables of the runs stored under a folder")
    p.add_argument("results_dir", help="a results folder (e.g. data/results/default)")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from tkmia import report

    records = report.load_records(args.results_dir)
    # one row per (scheme, k, method) and per setting that differs between the stored runs
    table = report.summarize(records, by=("scheme", "k", "method", *report.varying_settings(records)))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0
