"""Benchmark: image-iterations per second of each attack against plain forward+backward.

Two victims, side by side in one run (``--victims``): a compact CNN built here (3 conv layers on
3×64×64 inputs, random weights), and the photos profile's EfficientNet-Lite0 at the profile's
image size and attack batch (random weights: the cost does not depend on them), so no trained
model is needed. Every attack runs exactly ``--iters`` steps on every image: the
specification asks for more removed labels than exist (``required = C + 1``), so nothing
succeeds and nothing freezes. The baseline is the cost of one forward + one backward to the
input of the same model at the same batch size; a second reference row, the minimal tanh-box SGD
loop (what any attack of this family does a step, without success checks or bookkeeping), separates
the engine's own overhead from the parametrisation's. kFool's cost is also given in backward passes
a step (k + 1). Prints a markdown table.

An attack's call costs its steps plus a fixed cost: checking the inputs, decoding the box, the
measures, and one forward pass more than its steps (iterates 0 … max_iter − 1 are all scored, the
last one without a graph; the start point's pass is also iteration 0's when every sample is
eligible). The fixed cost is measured as the same attack's call with 0 steps (``max_iter=1``),
timed in the same rounds; the "per step" column is the ratio with it removed, the steady state a
long attack (the profiles' 300 iterations) approaches. With few steps the whole-call ratio is
lower: at s steps, at most s·(F + B) / (s·(F + B) + F) for a forward pass F and a backward B.
The runs are interleaved, one of each per round; a ratio is the median over the rounds of each
round's ratio to that round's baseline.

Run: ``.venv/bin/python benchmarks/bench_attack.py`` (options: --victims, --batch, --iters, --k,
--repeats, --threads, --clock; --batch and --iters apply to the CNN, the photos victim uses its
profile's attack batch and --photos-iters). On a machine shared with other work, ``--clock cpu``
(this process's CPU time) is far steadier than elapsed time; with several threads it adds theirs up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from tkmia.attacks import METHODS, get
from tkmia.metrics import ranking
from tkmia.selection import Specification

NUM_CLASSES = 20


def victim() -> nn.Module:
    """The compact CNN (3×64×64 inputs, 20 classes)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, NUM_CLASSES),
    ).eval()


def photos_victim() -> tuple[nn.Module, int, int, int]:
    """The photos profile's EfficientNet-Lite0: ``(model, image size, classes, attack batch)``."""
    from tkmia.data import NUM_CLASSES as DATASET_CLASSES
    from tkmia.models import build_model
    from tkmia.profiles import load_profile

    torch.manual_seed(0)
    profile = load_profile("photos").replace(model={"weights": None})
    n = DATASET_CLASSES[profile.dataset.name]
    return build_model(profile, n).eval(), profile.dataset.image_size, n, profile.attack.batch_size


def bench(model: nn.Module, size: int, num_classes: int, batch: int, iters: int, args) -> list:
    """Rows ``(method, image-iterations / s, ratio to forward+backward, the same per step (the
    call's fixed cost removed), fixed cost of a call in s, passes a step)``: rates and fixed costs
    are medians over the rounds, ratios medians of each round's ratio to that round's baseline."""
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 3, size, size, generator=gen)
    with torch.no_grad():
        order = ranking(model(images))
    labels = torch.zeros(batch, num_classes).scatter_(1, order[:, : args.k + 3], 1.0)
    specified = torch.zeros_like(labels, dtype=torch.bool).scatter_(1, order[:, :1], True)
    never = Specification(specified, torch.ones(batch, dtype=torch.bool),
                          torch.full((batch,), num_classes + 1))

    def plain():
        for _ in range(iters):
            x = images.clone().requires_grad_(True)
            torch.autograd.grad(model(x).sum(), x)

    w0 = torch.atanh((2 * images - 1).clamp(-1 + 1e-6, 1 - 1e-6))

    def minimal():
        """The least any tanh-box SGD attack does a step: no success check, no bookkeeping."""
        delta = torch.zeros_like(w0, requires_grad=True)
        opt = torch.optim.SGD([delta], lr=1e-3, momentum=0.9, weight_decay=1e-4)
        for _ in range(iters):
            loss = model((0.5 + 0.5 * torch.tanh(w0 + delta)).clamp(0, 1)).sum()
            (delta.grad,) = torch.autograd.grad(loss, delta)  # no weight gradients, as the attacks
            opt.step()

    runs = {"forward+backward (baseline)": plain, "minimal tanh-box SGD loop": minimal}
    for name in METHODS:
        options = {} if name == "kfool" else {"lr": 1e-3}
        attack = get(name)(model, args.k, max_iter=iters + 1, **options)  # iters steps
        start_only = get(name)(model, args.k, max_iter=1, **options)  # 0 steps: the fixed cost

        def run(attack=attack):
            result = attack(images, labels, never)
            assert int(result.iterations.min()) == iters and not result.success.any()

        def run_fixed(attack=start_only):
            assert int(attack(images, labels, never).iterations.max()) == 0

        runs[name] = run
        runs[f"{name} (0 steps)"] = run_fixed
    # interleaved repeats (one of each method per round) so a busy machine biases none of them
    times = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    # ratios paired within a round (a busy machine slows a whole round more than one run in it)
    base = times["forward+backward (baseline)"]
    rows = []
    for name in runs:
        if name.endswith(" (0 steps)"):
            continue
        rate = batch * iters / statistics.median(times[name])
        # per step: the call less its fixed cost, the same round's call with 0 steps (checks, box
        # decoding, measures, one forward pass without a graph: a call with steps scores its last
        # iterate so); the references have no fixed cost
        fixed = times.get(f"{name} (0 steps)", [0.0] * args.repeats)
        ratio = statistics.median(b / t for b, t in zip(base, times[name]))
        step_ratio = statistics.median(b / max(t - f, 1e-12) for b, t, f in zip(base, times[name], fixed))
        cost = f"1 fwd + {args.k + 1} bwd" if name == "kfool" else "1 fwd + 1 bwd"
        if name == "minimal tanh-box SGD loop":
            cost += " + tanh box + SGD"
        rows.append((name, rate, ratio, step_ratio, statistics.median(fixed), cost))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victims", default="cnn,photos",
                        help="comma-separated: cnn (compact CNN), photos (EfficientNet-Lite0)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--photos-iters", type=int, default=3)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable on a shared machine)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (all its threads), "
                             "steadier on a busy machine")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    victims = [v.strip() for v in args.victims.split(",") if v.strip()]
    unknown = sorted(set(victims) - {"cnn", "photos"})
    if unknown:
        parser.error(f"--victims {args.victims!r}: unknown {unknown}; allowed: cnn, photos")
    print(f"Command: {' '.join([sys.executable, *sys.argv])}")
    print(f"k = {args.k}, torch threads = {torch.get_num_threads()}, {args.clock} clock, "
          f"median of {args.repeats}\n")
    print("| victim | method | image-iterations / s | × forward+backward | × forward+backward, "
          "per step | fixed cost of a call (s) | passes a step |")
    print("|---|---|---|---|---|---|---|")
    for name in victims:
        if name == "cnn":
            model, size, n, batch, iters = victim(), 64, NUM_CLASSES, args.batch, args.iters
            label = f"CNN 3 conv, 3×64×64, C = {n}, batch {batch}, {iters} steps"
        else:
            model, size, n, batch = photos_victim()
            iters = args.photos_iters
            label = f"EfficientNet-Lite0, 3×{size}×{size}, C = {n}, batch {batch}, {iters} steps"
        for method, rate, ratio, step_ratio, fixed, cost in bench(model, size, n, batch, iters, args):
            print(f"| {label} | {method} | {rate:.1f} | {ratio:.2f} | {step_ratio:.2f} | {fixed:.3f} "
                  f"| {cost} |", flush=True)


if __name__ == "__main__":
    main()
