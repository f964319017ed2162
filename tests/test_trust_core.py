"""Tests that can fail: λ moves in gradient mode, the paper's claim on the tiny profile, and
bitwise determinism across two processes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from tkmia.attacks import METHODS, TkMIA, get
from tkmia.relaxation import tkmia_terms
from tkmia.selection import GlobalSelection

C = 8


def small_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, C)).eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(24, 3, 8, 8, generator=gen)
    labels = (torch.rand(24, C, generator=gen) < 0.6).float()
    return model, images, labels


# ----------------------------------------------------------------------------- λ in gradient mode


def _subgradient_bounds(v, lam, m):
    """The subdifferential of λ ↦ λ + (1/m) Σ_j [v_j − λ]_+ at λ: the interval
    [1 − #{v_j ≥ λ}/m, 1 − #{v_j > λ}/m]. Shapes: v (n, C), lam (n,) -> two (n,)."""
    lam = lam.unsqueeze(1)
    return 1 - (v >= lam).sum(1).float() / m, 1 - (v > lam).sum(1).float() / m


def test_lambdas_take_subgradient_steps():
    """λ starts at its closed form a_[C−k], b_[k], and every step is λ ← λ − lambda_lr·g with g
    in the subdifferential of the variational ATk at the scores of that step.

    The closed-form start sits on the kink of λ + (1/m) Σ_j [v_j − λ]_+, where any g in
    [0, 1/m] is right: whether autograd returns 0 (λ stays) or 1/m at step 0 depends on how
    v_[m] of the step's forward pass rounds against λ0 (it differed between machines), so this
    test asserts the subgradient property, which holds on every machine, and not a move at step 0.
    """
    model, images, labels = small_problem()
    k, lam_lr = 3, 0.5
    attack = TkMIA(model, k, lr=0.05, max_iter=20, record_history=True, lambda_mode="gradient",
                   lambda_lr=lam_lr)
    r = attack(images, labels, GlobalSelection([0, 1, 2, 3]))
    hist = r.history
    rows = (r.eligible & (r.iterations >= 2)).nonzero().flatten()
    assert len(rows) >= 3
    steps = int(r.iterations[rows].min())
    checked = 0
    for t in range(steps):
        a, b = tkmia_terms(hist["scores"][t, rows], labels[rows], r.specified[rows].float(), k)
        for key, v, m in (("lam_a", a, C - k), ("lam_b", b, k)):
            lam, lam_next = hist[key][t, rows], hist[key][t + 1, rows]
            if t == 0:  # the closed form
                torch.testing.assert_close(lam, torch.topk(v, m, dim=1).values[:, -1])
            stepped = torch.isfinite(lam_next)  # a row that stopped at t records no λ after it
            g = ((lam - lam_next) / lam_lr)[stepped]
            low, high = _subgradient_bounds(v[stepped], lam[stepped], m)
            assert (g >= low - 1e-4).all() and (g <= high + 1e-4).all(), (key, t, g, low, high)
            checked += int(stepped.sum())
    assert checked >= 2 * 3 * 2
    closed = TkMIA(model, k, lr=0.05, max_iter=20, record_history=True)(images, labels, GlobalSelection([0]))
    assert "lam_a" not in closed.history  # nothing to record in closed form


class _LambdasAboveEverything(TkMIA):
    """TkMIA whose λ's start 1 above every entry of a and b: off the kink, where the
    variational ATk's derivative in λ is exactly 1 − 0/m = 1."""

    def init_aux(self, scores, labels, specified):
        a, b = tkmia_terms(scores, labels, specified, self.k)
        return {"lam_a": a.amax(1) + 1.0, "lam_b": b.amax(1) + 1.0}


def test_lambdas_move_by_their_gradient_step_off_the_kink():
    """From a λ above every v_j the gradient is 1, so the first step moves λ by exactly −lambda_lr."""
    model, images, labels = small_problem()
    lam_lr = 0.25
    r = _LambdasAboveEverything(model, 3, lr=0.05, max_iter=20, record_history=True,
                                lambda_mode="gradient", lambda_lr=lam_lr)(
        images, labels, GlobalSelection([0, 1, 2, 3]))
    rows = (r.eligible & (r.iterations >= 1)).nonzero().flatten()
    assert len(rows) >= 3
    for key in ("lam_a", "lam_b"):
        lam0, lam1 = r.history[key][0, rows], r.history[key][1, rows]
        torch.testing.assert_close(lam1, lam0 - lam_lr)
        assert (lam1 < lam0).all(), f"{key} did not move"


def test_lambda_learning_rate_changes_the_run():
    """The λ step is used: two lambda_lr values give two different trajectories."""
    model, images, labels = small_problem()
    sel = GlobalSelection([0, 1, 2, 3])
    runs = [TkMIA(model, 3, lr=0.05, max_iter=20, lambda_mode="gradient", lambda_lr=lr,
                  record_history=True)(images, labels, sel) for lr in (1e-3, 1.0)]
    assert not torch.equal(runs[0].history["lam_a"].nan_to_num(), runs[1].history["lam_a"].nan_to_num())
    assert not torch.equal(runs[0].history["loss"].nan_to_num(), runs[1].history["loss"].nan_to_num())


# ----------------------------------------------------------------------------- the paper's claim


@pytest.mark.slow
def test_tkmia_moves_precision_at_k_less_than_every_baseline_on_the_tiny_victim(tiny_home):
    """The paper's main claim on the tiny profile's trained victim: over the eligible samples of
    its evaluation split (global scheme, the profile's classes, k = 3), TkMIA's mean |ΔP@k| is
    below every baseline's.

    Settings: lr 0.02 and max_iter 50, a budget at which every gradient method succeeds on all
    eligible samples (asserted), so that the comparison is between attacks that did their job.
    At the profile's own lr 5e-4 with max_iter 20 few attacks succeed, and with max_iter 300
    TkMIA ties TkML-AP-U on this weak two-epoch victim (mAP ≈ 0.2): the claim needs success.
    """
    from tkmia.data import load_dataset
    from tkmia.profiles import load_profile
    from tkmia.victims import load_victim

    profile = load_profile("tiny")
    model, _ = load_victim(profile, progress=False)
    data = load_dataset(profile, profile.dataset.eval_split)
    images, labels = data.images.float(), data.labels.float()
    sel = GlobalSelection(profile.selection.global_classes)
    delta_p, success = {}, {}
    for name in METHODS:
        options = {} if name == "kfool" else {"lr": 0.02}
        r = get(name)(model, 3, max_iter=50, **options)(images, labels, sel)
        eligible = r.eligible
        assert eligible.sum() >= 20
        change = r.adv_measures()["precision_at_k"] - r.clean_measures()["precision_at_k"]
        delta_p[name] = change[eligible].abs().mean().item()
        success[name] = r.success[eligible].float().mean().item()
    for name in ("tkmia", "tkml_ap_u", "ml_cw_u"):
        assert success[name] == 1.0, success
    assert success["kfool"] >= 0.8, success
    for name in METHODS[1:]:
        assert delta_p["tkmia"] < delta_p[name], delta_p


# ----------------------------------------------------------------------------- two processes

SCRIPT = """
import sys, torch
from torch import nn
from tkmia.attacks import TkMIA, KFool
from tkmia.selection import RandomSelection
torch.manual_seed(3)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 8)).eval()
images = torch.rand(16, 3, 8, 8)
labels = (torch.rand(16, 8) < 0.6).float()
sel = RandomSelection(2, 1, seed=9)  # no ids: drawn by each image's pixel hash
out = {}
for attack in (TkMIA(model, 3, lr=0.05, max_iter=30, lambda_mode="gradient"), KFool(model, 3, max_iter=10)):
    r = attack(images, labels, sel)
    out[attack.name] = {key: getattr(r, key) for key in
                        ("adv_images", "adv_scores", "specified", "success", "iterations", "perturbation_l2")}
torch.save(out, sys.argv[1])
"""


def test_two_processes_give_bitwise_identical_results(tmp_path):
    paths = [tmp_path / f"run{i}.pt" for i in range(2)]
    for path in paths:
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
    first, second = (torch.load(p) for p in paths)
    assert first["tkmia"]["success"].any() and first["tkmia"]["specified"].any()
    for method in first:
        for key, value in first[method].items():
            assert torch.equal(value, second[method][key]), f"{method}.{key} differs between processes"
