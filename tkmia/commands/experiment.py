"""``tkmia experiment``: run the grid of (method, scheme, k) a profile names."""

from __future__ import annotations

import argparse

from tkmia.commands.attack import add_config_arguments, config_fields


def register(sub) -> None:
    p = sub.add_parser("experiment", help="run every (method, scheme, k) of a profile's grid")
    p.add_argument("--methods", default=None, help="comma-separated subset of the grid's methods")
    p.add_argument("--schemes", default=None, help="comma-separated subset of the grid's schemes")
    p.add_argument("--ks", default=None, help="comma-separated k values (default: the grid's)")
    add_config_arguments(p)
    p.set_defaults(func=main)


def _split(text: str | None, cast=str):
    return None if text is None else [cast(t) for t in text.split(",") if t]


def main(args: argparse.Namespace) -> int:
    from tkmia import experiments, report

    fields = config_fields(args)
    profile = fields.pop("profile")
    if args.shard or args.force or args.results:
        raise ValueError("--shard, --force and --results apply to `tkmia attack`; "
                         "`tkmia experiment` reuses stored runs under the default results folder")
    records = experiments.run_grid(
        profile, methods=_split(args.methods), schemes=_split(args.schemes), ks=_split(args.ks, int),
        progress=not args.no_progress, **{k: v for k, v in fields.items() if v is not None},
    )
    print(report.summarize(records).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0
