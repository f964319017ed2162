"""``tkmia attack``: run one configuration and print its summary."""

from __future__ import annotations

import argparse
import json

from tkmia import attacks
from tkmia.selection import SCHEMES


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``attack`` and ``experiment`` (``None`` means: the profile's value)."""
    parser.add_argument("--profile", default="default", help="profile name or YAML path (default: default)")
    parser.add_argument("--data-root", default=None, help="folder of the real dataset (paper profiles)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")
    parser.add_argument("--n-samples", type=int, default=None, help="eligible samples to attack")
    parser.add_argument("--batch-size", type=int, default=None, help="images per attack batch")
    parser.add_argument("--lr", type=float, default=None, help="attack learning rate")
    parser.add_argument("--max-iter", type=int, default=None, help="iteration budget")
    parser.add_argument("--weight-decay", type=float, default=None, help="L2 penalty weight")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random scheme (default: 0)")
    parser.add_argument("--shard", default=None,
                        help="'i/n': run the i-th of n deterministic slices (default under torchrun: "
                             "RANK/WORLD_SIZE); the last shard to finish writes the table")
    parser.add_argument("--results", default=None, help="results folder (default: data/results)")
    parser.add_argument("--force", action="store_true", help="recompute even if results are stored")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def config_fields(args: argparse.Namespace) -> dict:
    return {
        "profile": args.profile,
        "data_root": args.data_root,
        "device": args.device,
        "n_samples": args.n_samples,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_iter": args.max_iter,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
    }


def register(sub) -> None:
    p = sub.add_parser("attack", help="attack the first eligible samples with one method and print a summary")
    p.add_argument("--method", default="tkmia", choices=list(attacks.REGISTRY), help="attack method")
    p.add_argument("--scheme", default="global", choices=SCHEMES, help="selection scheme")
    p.add_argument("--k", type=int, default=None, help="top-k size (default: the profile's)")
    p.add_argument("--classes", default=None, help="global scheme: comma-separated class indices")
    p.add_argument("--n-pert", type=int, default=None, help="random scheme: labels to specify")
    p.add_argument("--del-n", type=int, default=None, help="random scheme: labels that must leave")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="extra attack option, e.g. lambda_mode=gradient (JSON values)")
    add_config_arguments(p)
    p.set_defaults(func=main)


def _options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--option must look like NAME=VALUE, got {pair!r}")
        name, value = pair.split("=", 1)
        if not name.isidentifier():
            raise ValueError(f"--option {pair!r}: {name!r} is not an option name")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def print_runs(runs: list) -> None:
    """The summary of finished runs and where their tables are; for runs a shard left
    unfinished, "partial: m of n batches; waiting for shards …" (their table does not exist yet)."""
    import pandas as pd

    from tkmia import report

    shards = sorted({r.shard for r in runs if r.shard is not None})
    if shards:
        print(f"shard {shards[0][0]}/{shards[0][1]} done")
    done = [r for r in runs if r.complete]
    partial = [r for r in runs if not r.complete]
    if done:
        records = pd.concat([r.records for r in done], ignore_index=True)
        print(report.format_table(report.summarize(records)))
        for r in done:
            print(f"records: {r.path / 'records.parquet'}")
    if partial:
        m = sum(r.batches[0] for r in partial)
        n = sum(r.batches[1] for r in partial)
        print(f"partial: {m} of {n} batches; waiting for shards … "
              "(the last shard to finish writes the table)")


def main(args: argparse.Namespace) -> int:
    from tkmia import experiments

    classes = None
    if args.classes:
        try:
            classes = tuple(int(c) for c in args.classes.split(","))
        except ValueError:
            raise ValueError(f"--classes must be comma-separated integers, got {args.classes!r}") from None
    config = experiments.ExperimentConfig(
        method=args.method, scheme=args.scheme, k=args.k, classes=classes, n_pert=args.n_pert,
        del_n=args.del_n, options=_options(args.option), **config_fields(args),
    )
    out = experiments.run(config, root=args.results, force=args.force, shard=args.shard,
                          progress=not args.no_progress)
    print_runs([out])
    return 0
