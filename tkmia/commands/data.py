"""``tkmia data``: look at a profile's dataset (``tkmia data show`` saves a sample grid)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``data`` sub-command and its ``show`` and ``info`` actions."""
    parser = subparsers.add_parser(
        "data", help="datasets: show samples, print statistics",
        description="Look at the dataset of a profile.",
    )  # fmt: skip
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="save a grid of samples with their labels (PNG)")
    info = actions.add_parser("info", help="print size, classes and label statistics")
    for p in (show, info):
        p.add_argument("--profile", default="default", help="profile name or YAML path")
        p.add_argument("--data-root", default=None, help="dataset folder (real datasets)")
        p.add_argument("--split", default=None, help="split (default: the profile's eval_split)")
    show.add_argument("--n", type=int, default=16, help="number of samples")
    show.add_argument("--out", default=None, help="PNG path (default: samples-<profile>.png)")
    show.set_defaults(func=run_show)
    info.set_defaults(func=run_info)


def _dataset(args: argparse.Namespace):
    from tkmia.data import load_dataset
    from tkmia.profiles import load_profile

    profile = load_profile(args.profile)
    split = args.split or profile.dataset.eval_split
    return profile, split, load_dataset(profile, split, args.data_root)


def run_show(args: argparse.Namespace) -> int:
    """Handler of ``tkmia data show``."""
    from tkmia._io import atomic_write
    from tkmia.data import show_samples

    profile, split, dataset = _dataset(args)
    fig = show_samples(dataset, n=args.n)
    out = Path(args.out or f"samples-{profile.name}.png")
    atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=120))
    print(f"saved {min(args.n, len(dataset))} samples of {profile.dataset.name}/{split} to {out}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Handler of ``tkmia data info``."""
    from tkmia.data import label_statistics

    profile, split, dataset = _dataset(args)
    stats = label_statistics(dataset.labels)
    print(f"{profile.dataset.name}/{split}: {len(dataset)} images, {len(dataset.classes)} classes")
    print("  classes: " + ", ".join(dataset.classes))
    print("  labels per image: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))
    print(f"  checksum: {dataset.checksum}")
    return 0
