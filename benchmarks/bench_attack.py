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

Run: ``.venv/bin/python benchmarks/bench_attack.py`` (options: --victims, --batch, --iters, --k,
--repeats, --threads; --batch and --iters apply to the CNN, the photos victim uses its profile's
attack batch and --photos-iters).
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
    """Rows ``(method, image-iterations / s, ratio to forward+backward, passes a step)``."""
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

        def run(attack=attack):
            result = attack(images, labels, never)
            assert int(result.iterations.min()) == iters and not result.success.any()

        runs[name] = run
    # interleaved repeats (one of each method per round) so a busy machine biases none of them
    times = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = batch * iters / statistics.median(times["forward+backward (baseline)"])
    rows = []
    for name in runs:
        rate = batch * iters / statistics.median(times[name])
        cost = f"1 fwd + {args.k + 1} bwd" if name == "kfool" else "1 fwd + 1 bwd"
        if name == "minimal tanh-box SGD loop":
            cost += " + tanh box + SGD"
        rows.append((name, rate, rate / base, cost))
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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    victims = [v.strip() for v in args.victims.split(",") if v.strip()]
    unknown = sorted(set(victims) - {"cnn", "photos"})
    if unknown:
        parser.error(f"--victims {args.victims!r}: unknown {unknown}; allowed: cnn, photos")
    print(f"Command: {' '.join([sys.executable, *sys.argv])}")
    print(f"k = {args.k}, torch threads = {torch.get_num_threads()}, median of {args.repeats}\n")
    print("| victim | method | image-iterations / s | × forward+backward | passes a step |")
    print("|---|---|---|---|---|")
    for name in victims:
        if name == "cnn":
            model, size, n, batch, iters = victim(), 64, NUM_CLASSES, args.batch, args.iters
            label = f"CNN 3 conv, 3×64×64, C = {n}, batch {batch}, {iters} steps"
        else:
            model, size, n, batch = photos_victim()
            iters = args.photos_iters
            label = f"EfficientNet-Lite0, 3×{size}×{size}, C = {n}, batch {batch}, {iters} steps"
        for method, rate, ratio, cost in bench(model, size, n, batch, iters, args):
            print(f"| {label} | {method} | {rate:.1f} | {ratio:.2f} | {cost} |", flush=True)


if __name__ == "__main__":
    main()
