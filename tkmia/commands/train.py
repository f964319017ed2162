"""``tkmia train``: train (or load from the cache) the victim of a profile and summarise it."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train the victim model of a profile (cached)",
        description="Train the victim of a profile, or load it from the cache, and summarise it.",
    )
    parser.add_argument("--profile", default="default", help="profile name or YAML path")
    parser.add_argument("--data-root", default=None, help="dataset folder (real datasets)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--force", action="store_true", help="retrain even if cached")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``tkmia train``."""
    from tkmia.profiles import load_profile
    from tkmia.victims import load_victim, victim_dir

    profile = load_profile(args.profile)
    model, meta = load_victim(
        profile, data_root=args.data_root, device=args.device, force=args.force,
        progress=not args.quiet,
    )  # fmt: skip
    ev = meta["eval"]
    print(f"victim of profile {profile.name!r}: {profile.model.arch} on {profile.dataset.name}")
    print(f"  cache: {victim_dir(profile)}")
    print(f"  {meta['eval_split']} split ({ev['n_images']} images): mAP {ev['map']:.4f}, "
          f"P@{ev['k']} {ev['precision_at_k']:.4f}")  # fmt: skip
    print(f"  training time: {meta['training_seconds']:.1f} s on {meta['device']}")
    return 0
