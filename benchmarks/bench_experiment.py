"""Benchmark: attacked images per second, tkmia's batched runner against a reference-style loop.

Both attack the same first eligible samples of the default profile (global scheme, k = 3) with
TkMIA, the same victim, learning rate, weight decay and iteration budget, and the same success
rule checked before every step:

- **tkmia**: ``tkmia.experiments.run`` (batches of the profile's ``batch_size``, per-sample
  freezing, measures batched), timed end to end, records written to a temporary folder;
- **reference style**: one image at a time (batch size 1), a torch.optim.SGD loop on the tanh
  variable, the success check through a CPU NumPy argsort every step, and the measures computed per
  image with scikit-learn's ``ndcg_score`` and Python loops for P@k and mAP@k, as the reference does.

Prints a markdown table with both rates measured side by side in this run, and their ratio.
Run: ``.venv/bin/python benchmarks/bench_experiment.py [--n 64] [--max-iter 300] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import torch
from sklearn.metrics import ndcg_score

from tkmia.data import load_dataset
from tkmia.experiments import ExperimentConfig, run, select_eligible
from tkmia.profiles import load_profile
from tkmia.relaxation import tkmia_loss
from tkmia.victims import load_victim


def reference_style(model, images, labels, specified, k, lr, weight_decay, max_iter):
    """TkMIA one image at a time, with the reference's CPU checks and per-image sklearn metrics."""
    successes, measures = 0, []
    for n in range(len(images)):
        x = images[n : n + 1]
        y = labels[n : n + 1]
        s = specified[n : n + 1]
        with torch.no_grad():
            clean = model(x)
        clean_top = set(np.argsort(-clean[0].numpy(), kind="stable")[:k].tolist())
        spec = set(torch.nonzero(s[0]).flatten().tolist())
        required = len(spec & clean_top)
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        delta = torch.zeros_like(w0, requires_grad=True)
        opt = torch.optim.SGD([delta], lr=lr, momentum=0.9, weight_decay=weight_decay)
        for _ in range(max_iter):  # iterates 0 … max_iter − 1, as the reference and tkmia
            adv = (0.5 + 0.5 * torch.tanh(w0 + delta)).clamp(0, 1)
            out = model(adv)
            top = set(np.argsort(-out[0].detach().cpu().numpy(), kind="stable")[:k].tolist())
            if required - len(spec & top) >= required:
                successes += 1
                break
            opt.zero_grad()
            tkmia_loss(out, y, s, k).sum().backward()
            opt.step()
        scores = out[0].detach().numpy()
        truth = y[0].numpy()
        order = np.argsort(-scores, kind="stable")
        precision = [truth[order[:j]].sum() / j for j in range(1, k + 1)]
        average = sum(p * truth[order[j]] for j, p in enumerate(precision)) / max(1, min(truth.sum(), k))
        measures.append((precision[-1], average, ndcg_score(truth[None], scores[None], k=k)))
    return successes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="eligible samples attacked")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = load_profile("default")
    model, _ = load_victim(profile, progress=False)
    dataset = load_dataset(profile, profile.dataset.eval_split)
    config = ExperimentConfig(profile="default", method="tkmia", scheme="global", k=3, n_samples=args.n,
                              max_iter=args.max_iter, save_images=0)
    resolved = config.resolve(profile)
    ids = select_eligible(model, dataset, resolved)
    images, labels = dataset.images[ids], dataset.labels[ids].float()
    spec = resolved.selection().select(model(images).detach(), labels, 3).specified.float()

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        batched = run(config, root=root, progress=False)
        t_batched = time.perf_counter() - start
    start = time.perf_counter()
    won = reference_style(model, images, labels, spec, 3, resolved.lr, resolved.weight_decay, args.max_iter)
    t_loop = time.perf_counter() - start

    print(f"Command: {' '.join([sys.executable, *sys.argv])}")
    print(f"default profile, TkMIA, global scheme, k = 3, {len(ids)} eligible samples, max_iter "
          f"{args.max_iter}, lr {resolved.lr}, torch threads {torch.get_num_threads()}\n")
    print("| runner | images / s | success rate | × reference style |")
    print("|---|---|---|---|")
    rate_b, rate_l = len(ids) / t_batched, len(ids) / t_loop
    print(f"| tkmia (batched, batch {resolved.batch_size}) | {rate_b:.1f} | "
          f"{batched.records['success'].mean():.3f} | {rate_b / rate_l:.1f} |")
    print(f"| reference style (batch 1, CPU checks, sklearn) | {rate_l:.1f} | {won / len(ids):.3f} | 1.0 |")


if __name__ == "__main__":
    main()
