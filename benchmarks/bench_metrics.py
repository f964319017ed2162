"""Benchmark: tkmia's batched measures against a per-sample loop in the reference's style.

The loop computes, for every sample, P@k and top-k accuracy in Python, mAP@k with a Python P@j
per rank, and NDCG@k with one ``sklearn.metrics.ndcg_score`` call (as the reference does). Both
are timed in the same run (median of several repeats). Prints a markdown table.

Run: ``.venv/bin/python benchmarks/bench_metrics.py`` (options: --num, --classes, --k, --repeats, --threads).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from sklearn.metrics import ndcg_score

from tkmia.metrics import map_at_k, measures, ndcg_at_k, precision_at_k, topk_accuracy


def loop_measures(scores: np.ndarray, labels: np.ndarray, k: int) -> dict[str, list[float]]:
    """The reference's style: one sample at a time, sklearn for NDCG, a Python loop per rank."""
    out = {"topk_accuracy": [], "precision_at_k": [], "map_at_k": [], "ndcg_at_k": []}
    for s, y in zip(scores, labels):
        order = np.argsort(-s, kind="stable")
        top = order[:k]
        true = set(np.flatnonzero(y).tolist())
        hits = [int(j in true) for j in top]
        out["precision_at_k"].append(sum(hits) / k)
        precisions = [sum(hits[: j + 1]) / (j + 1) for j in range(k)]
        denom = min(len(true), k)
        out["map_at_k"].append(sum(p * h for p, h in zip(precisions, hits)) / denom if denom else 0.0)
        out["ndcg_at_k"].append(float(ndcg_score(y[None], s[None], k=k)) if true else 0.0)
        top_set = set(top.tolist())
        out["topk_accuracy"].append(float(true <= top_set if k > len(true) else top_set <= true))
    return out


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(args.num, args.classes, generator=gen)
    labels = (torch.rand(args.num, args.classes, generator=gen) < 0.05).float()
    labels[torch.arange(args.num), torch.randint(args.classes, (args.num,), generator=gen)] = 1.0
    s_np, y_np = scores.numpy(), labels.numpy()
    k = args.k

    ours = {
        "precision_at_k": lambda: precision_at_k(scores, labels, k),
        "map_at_k": lambda: map_at_k(scores, labels, k),
        "ndcg_at_k": lambda: ndcg_at_k(scores, labels, k),
        "topk_accuracy": lambda: topk_accuracy(scores, labels, k),
        "all four (measures)": lambda: measures(scores, labels, k),
    }
    reference = loop_measures(s_np, y_np, k)
    batched = measures(scores, labels, k)
    for key, values in reference.items():  # same numbers before timing them
        assert np.allclose(values, batched[key].numpy(), atol=1e-6), key

    loop_time = median_time(lambda: loop_measures(s_np, y_np, k), max(1, args.repeats // 2))
    print(f"Command: {' '.join([sys.executable, *sys.argv])}")
    print(f"N = {args.num}, C = {args.classes}, k = {k}, torch threads = {torch.get_num_threads()}; "
          "median of repeats, both measured in this run\n")
    print("| measure | per-sample loop (reference style), ms | tkmia batched, ms | speed-up |")
    print("|---|---|---|---|")
    for name, fn in ours.items():
        t = median_time(fn, args.repeats * 4)
        print(f"| {name} | {loop_time * 1e3:.1f} (all four) | {t * 1e3:.3f} | {loop_time / t:.0f}× |")


if __name__ == "__main__":
    main()
