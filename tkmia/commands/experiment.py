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


def _split(text: str | None, cast=str, name: str = "--ks"):
    if text is None:
        return None
    try:
        return [cast(t) for t in text.split(",") if t]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None


def main(args: argparse.Namespace) -> int:
    from tkmia import experiments
    from tkmia.commands.attack import print_runs

    fields = config_fields(args)
    profile = fields.pop("profile")
    shard = experiments.parse_shard(args.shard)  # checked before anything runs
    configs = experiments.grid_configs(
        profile, methods=_split(args.methods), schemes=_split(args.schemes), ks=_split(args.ks, int),
        **{k: v for k, v in fields.items() if v is not None},
    )
    runs = [experiments.run(c, root=args.results, force=args.force, shard=shard,
                            progress=not args.no_progress) for c in configs]
    print_runs(runs)
    return 0
