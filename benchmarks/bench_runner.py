"""Benchmark: the runner's efficiency on a grid, run as ``tkmia experiment`` runs it.

Runs the grid of one profile (default: 4 methods × 2 schemes at k = 3 of the ``default`` profile)
with :func:`tkmia.experiments.run_grid` into a temporary folder, then divides the image-iterations
the attacks executed by what plain forward+backward of the same victim does in the same wall time:

    efficiency = image-iterations / (wall seconds × plain rate at the runner's batch)

An image-iteration is one gradient step of one image (the ``iterations`` column of the records:
steps before the returned iterate). The plain rate is one forward and one backward pass to the
input on a full batch (kFool: one forward and k + 1 backward passes, its cost a step), measured
before and after the grid in this run, the median of the rounds. Where the rest of the wall time
goes is printed as shares: the eligibility scans, the attack calls (the engine, including its
start point's forward pass and the shrinking batch as samples freeze), loading the victim and
the dataset, fetching images, and writing records (parquet, images, the merge).

Run: ``.venv/bin/python benchmarks/bench_runner.py [--profile default] [--k 3] [--n 300] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections import defaultdict

import torch

from tkmia import experiments
from tkmia.data import load_dataset
from tkmia.profiles import load_profile
from tkmia.victims import load_victim

# what the runner calls, by share of wall time (module attribute names of tkmia.experiments)
PARTS = {
    "eligibility scan": ["select_eligible"],
    "victim and dataset loading": ["_load_setting", "model_fingerprint", "dataset_identity"],
    "fetching images": ["_fetch"],
    "records and I/O": ["_records", "_write_parquet", "atomic_write", "write_json", "merge"],
}


@contextlib.contextmanager
def timed(seconds: dict[str, float]):
    """Wrap the runner's functions of PARTS so that their time adds up in ``seconds`` (outermost
    call only: a fetch inside a scan counts as the scan's)."""
    depth = [0]
    saved = {}

    def wrap(part, fn):
        def inner(*args, **kwargs):
            depth[0] += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    seconds[part] += time.perf_counter() - start
        return inner

    for part, names in PARTS.items():
        for name in names:
            if hasattr(experiments, name):
                saved[name] = getattr(experiments, name)
                setattr(experiments, name, wrap(part, saved[name]))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(experiments, name, fn)


def plain_rate(model, images: torch.Tensor, backward: int, rounds: int) -> float:
    """Images per second of one forward and ``backward`` backward passes to the input."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        x = images.clone().requires_grad_(True)
        out = model(x)
        for j in range(backward):
            torch.autograd.grad(out[:, j].sum(), x, retain_graph=j < backward - 1)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--n", type=int, default=None, help="samples a run (default: the profile's)")
    parser.add_argument("--methods", default=None, help="comma-separated (default: the profile's grid)")
    parser.add_argument("--rounds", type=int, default=5, help="plain forward+backward rounds, each side")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the book's machine has 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    profile = load_profile(args.profile)
    model, _ = load_victim(profile, progress=False)
    model.eval()
    test = load_dataset(profile, profile.dataset.eval_split)
    batch = profile.attack.batch_size
    images = torch.stack([test[i][0] for i in range(min(batch, len(test)))])
    methods = args.methods.split(",") if args.methods else list(profile.grid.methods)
    backwards = {"kfool": args.k + 1}
    overrides = {"n_samples": args.n} if args.n else {}

    rates = defaultdict(list)
    for b in sorted({backwards.get(m, 1) for m in methods}):
        rates[b].append(plain_rate(model, images, b, args.rounds))
    seconds: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as root, timed(seconds):
        start = time.perf_counter()
        records = experiments.run_grid(args.profile, methods=methods, ks=[args.k], root=root,
                                       progress=False, **overrides)
        wall = time.perf_counter() - start
    for b in list(rates):
        rates[b].append(plain_rate(model, images, b, args.rounds))
    rate = {b: statistics.median(r) for b, r in rates.items()}

    print(f"Command: {' '.join([sys.executable, *sys.argv])}")
    print(f"profile {args.profile}, k = {args.k}, methods {methods}, schemes {list(profile.grid.schemes)}, "
          f"batch {batch}, torch threads {torch.get_num_threads()}, {len(records)} attacked samples\n")
    print("| method | scheme | samples | image-iterations | attack s | image-iterations / s (attack) | "
          "× plain at batch |")
    print("|---|---|---|---|---|---|---|")
    done = 0.0  # the wall seconds plain forward+backward would need for the same work
    for (method, scheme), rows in records.groupby(["method", "scheme"], sort=False):
        steps = int(rows["iterations"].sum())
        attack_s = float(rows["seconds"].sum())
        plain = rate[backwards.get(method, 1)]
        done += steps / plain
        print(f"| {method} | {scheme} | {len(rows)} | {steps} | {attack_s:.1f} | {steps / attack_s:.0f} | "
              f"{steps / attack_s / plain:.2f} |")
    attack_total = float(records["seconds"].sum())
    print(f"\nPlain forward+backward at batch {batch}: "
          + ", ".join(f"{rate[b]:.0f} img/s ({'1 fwd + ' + str(b) + ' bwd'})" for b in sorted(rate)))
    print(f"\n**Runner efficiency: {done / wall:.2f}** (image-iterations / (wall {wall:.1f} s × plain rate); "
          f"inside the attack calls alone: {done / attack_total:.2f})\n")
    print("| where the wall time goes | seconds | share |")
    print("|---|---|---|")
    parts = {"attack calls": attack_total, **{p: seconds[p] for p in PARTS}}
    parts["other (configs, progress, Python)"] = wall - sum(parts.values())
    for part, s in parts.items():
        print(f"| {part} | {s:.1f} | {s / wall:.1%} |")


if __name__ == "__main__":
    main()
