"""Open questions, part A: the unrelaxed loss, the pixel parametrisation, the margin-adaptive attack,
and the comparisons of tkmia.book.chapters.questions (book chapters 15–17)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tkmia.attacks import REGISTRY, TkMIA, TkMIAExact, TkMIAMargin, get
from tkmia.attacks.tkmia_exact import ranked_range_mean, tkmia_exact_loss
from tkmia.attacks.tkmia_margin import topk_gap
from tkmia.book.chapters import questions
from tkmia.monitoring import topk_margin
from tkmia.relaxation import average_top_k, kth_largest, tkmia_loss, tkmia_terms
from tkmia.selection import GlobalSelection

C, K = 10, 2


@pytest.fixture(scope="module")
def problem():
    """A small conv net and labels = its top-2 + 3 random labels; some pixels saturated."""
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(256, C))
    with torch.no_grad():
        model[3].weight.mul_(6.0)
    images = torch.rand(10, 3, 8, 8, generator=gen)
    images[:, :, :3] = 1.0  # a saturated band in every image
    with torch.no_grad():
        order = model(images).argsort(1, descending=True)
    picks = torch.stack([torch.randperm(C - 2, generator=gen)[:3] for _ in range(10)])
    labels = torch.zeros(10, C).scatter_(1, order[:, :2], 1.0)
    labels.scatter_(1, order[:, 2:].gather(1, picks), 1.0)
    return model, images, labels


# ----------------------------------------------------------------------------- 1. the exact loss
def _slow_range(v: torch.Tensor, m: int, width: int) -> torch.Tensor:
    ordered = sorted(v.tolist(), reverse=True)
    return torch.tensor(sum(ordered[m - width : m]) / width, dtype=v.dtype)


def test_ranked_range_mean_matches_its_definition_and_its_ends():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(6, C, generator=gen, dtype=torch.float64)
    for m in (1, 4, C):
        for width in range(1, m + 1):
            got = ranked_range_mean(v, m, width)
            want = torch.stack([_slow_range(row, m, width) for row in v])
            torch.testing.assert_close(got, want)
            assert (got >= kth_largest(v, m) - 1e-12).all()  # an upper bound of v_[m]
        torch.testing.assert_close(ranked_range_mean(v, m, 1), kth_largest(v, m))
        torch.testing.assert_close(ranked_range_mean(v, m, m), average_top_k(v, m))
    with pytest.raises(ValueError, match="width must be in"):
        ranked_range_mean(v, 3, 4)


def test_exact_loss_is_the_hinge_on_the_conditions():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(20, C, generator=gen, dtype=torch.float64)
    labels = (torch.rand(20, C, generator=gen) < 0.5).double()
    labels[:, 0] = labels[:, 1] = 1.0
    specified = torch.zeros_like(labels)
    specified[:, 0] = 1.0
    a, b = tkmia_terms(scores, labels, specified, K)
    want = torch.relu(kth_largest(a, C - K)) + torch.relu(kth_largest(b, K))
    torch.testing.assert_close(tkmia_exact_loss(scores, labels, specified, K), want)
    # a_[C−k] ≤ 0 exactly when no specified label is in the top-k (no ties in random scores)
    top = scores.topk(K, dim=1).indices
    out = ~(specified.bool().gather(1, top)).any(1)
    assert torch.equal(kth_largest(a, C - K) <= 0, out)
    # the widest member is TkMIA's loss wherever that is positive
    wide = tkmia_exact_loss(scores, labels, specified, K, width=C)
    relaxed = tkmia_loss(scores, labels, specified, K)
    torch.testing.assert_close(wide, torch.relu(average_top_k(a, C - K)) + torch.relu(average_top_k(b, K)))
    assert (wide >= relaxed - 1e-12).all()
    # the relaxation bounds the exact loss from above (hinges of upper bounds)
    assert (wide >= tkmia_exact_loss(scores, labels, specified, K) - 1e-12).all()


def test_widest_exact_attack_is_tkmia(problem):
    model, images, labels = problem
    sel = GlobalSelection([0, 1, 2, 3, 4])
    relaxed = TkMIA(model, K, lr=0.01, max_iter=30)(images, labels, sel)
    wide = TkMIAExact(model, K, lr=0.01, max_iter=30, width=C)(images, labels, sel)
    assert relaxed.eligible.any()
    assert torch.equal(relaxed.success, wide.success)
    assert torch.equal(relaxed.iterations, wide.iterations)
    torch.testing.assert_close(relaxed.adv_images, wide.adv_images, atol=1e-6, rtol=0)


def test_exact_attack_bad_width(problem):
    with pytest.raises(ValueError, match="width"):
        TkMIAExact(problem[0], K, width=0)
    assert "width=3" in repr(TkMIAExact(problem[0], K, width=3))


# ----------------------------------------------------------------------------- 5. pixel space
def test_pixel_parametrisation_is_projected_sgd_on_delta(problem):
    """One step of the pixel parametrisation by hand: x1 = clamp(x0 − lr·(∇L + wd·0), box)."""
    model, images, labels = problem
    sel = GlobalSelection([0, 1, 2, 3, 4])
    lr = 0.05
    attack = TkMIA(model, K, lr=lr, max_iter=2, parametrisation="pixel", weight_decay=0.0)
    r = attack(images, labels, sel)
    x = images.clone().requires_grad_(True)
    spec = r.specified.to(images.dtype)
    loss = tkmia_loss(model(x), labels, spec, K)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    step = (images - lr * grad).clamp(0, 1)
    moved = r.eligible & (r.iterations == 1)
    assert moved.any()
    torch.testing.assert_close(r.adv_images[moved], step[moved], atol=1e-6, rtol=0)
    torch.testing.assert_close(r.tanh_space_l2[moved], r.perturbation_l2[moved])


def test_pixel_parametrisation_moves_saturated_pixels_and_exact_does_not(problem):
    model, images, labels = problem
    sel = GlobalSelection([0, 1, 2, 3, 4])
    saturated = images >= 1.0
    out = {}
    for name in ("exact", "pixel"):
        r = TkMIA(model, K, lr=0.01, max_iter=30, parametrisation=name)(images, labels, sel)
        assert (r.adv_images >= 0).all() and (r.adv_images <= 1).all()
        rows = r.eligible & (r.iterations > 0)
        assert rows.any()
        moved = (r.adv_images - images).abs() > 1e-4
        out[name] = moved[rows][saturated[rows]].float().mean().item()
    assert out["exact"] == 0.0  # ∂x/∂w ≈ 0 on the box's edges: frozen
    assert out["pixel"] > 0.0


def test_reference_parametrisation_untouched(problem):
    """The reference start is still mid + half·tanh((x − mid)/half)."""
    model, images, _ = problem
    start = TkMIA(model, K, parametrisation="reference").starting_point(images)
    torch.testing.assert_close(start, 0.5 + 0.5 * torch.tanh((images - 0.5) / 0.5))
    assert torch.equal(TkMIA(model, K, parametrisation="pixel").starting_point(images), images)


@pytest.mark.parametrize("name", [n for n in REGISTRY if n != "kfool"])
def test_every_loss_method_runs_in_pixel_space(problem, name):
    model, images, labels = problem
    r = get(name)(model, K, lr=0.01, max_iter=20, parametrisation="pixel")(
        images, labels, GlobalSelection([0, 1, 2, 3, 4]))
    assert (r.adv_images >= 0).all() and (r.adv_images <= 1).all()
    assert (r.perturbation_l2[r.eligible] > 0).all()
    with torch.no_grad():
        torch.testing.assert_close(model(r.adv_images), r.adv_scores)


def test_kfool_runs_in_pixel_space(problem):
    model, images, labels = problem
    r = get("kfool")(model, K, max_iter=20, parametrisation="pixel")(
        images, labels, GlobalSelection([0, 1, 2, 3, 4]))
    with torch.no_grad():
        torch.testing.assert_close(model(r.adv_images), r.adv_scores)
    assert r.success.any()


# ----------------------------------------------------------------------------- 6. the margin attack
def test_topk_gap_is_the_monitors_margin():
    scores = torch.randn(7, C, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(topk_gap(scores, 3), topk_margin(scores, 3))


def test_margin_attack_returns_its_margin_back(problem):
    model, images, labels = problem
    sel = GlobalSelection([0, 1, 2, 3, 4])
    plain = TkMIA(model, K, lr=0.01, max_iter=200)(images, labels, sel)
    adaptive = TkMIAMargin(model, K, lr=0.01, max_iter=200, keep=0.5,
                           record_history=True)(images, labels, sel)
    target = 0.5 * topk_gap(adaptive.clean_scores, K)
    early = adaptive.success & (adaptive.iterations < 199)
    assert early.any()
    # every iterate it stopped at early is successful and has at least half its clean margin back
    assert (topk_gap(adaptive.adv_scores, K)[early] >= target[early]).all()
    torch.testing.assert_close(adaptive.history["target"][0][adaptive.eligible], target[adaptive.eligible])
    # it never stops earlier than TkMIA, which stops at the first successful iterate
    both = early & plain.success
    assert (adaptive.iterations[both] >= plain.iterations[both]).all()
    assert (topk_gap(adaptive.adv_scores, K)[both] >= topk_gap(plain.adv_scores, K)[both] - 1e-6).all()


def test_margin_attack_checks_its_options(problem):
    with pytest.raises(ValueError, match="keep must be in"):
        TkMIAMargin(problem[0], K, keep=1.5)
    with pytest.raises(ValueError, match="weight"):
        TkMIAMargin(problem[0], K, weight=-1.0)
    text = repr(TkMIAMargin(problem[0], K, weight=2.0, keep=0.25))
    assert "weight=2.0" in text and "keep=0.25" in text


def test_keep_zero_and_weight_zero_is_tkmia(problem):
    model, images, labels = problem
    sel = GlobalSelection([0, 1, 2, 3, 4])
    plain = TkMIA(model, K, lr=0.01, max_iter=30)(images, labels, sel)
    same = TkMIAMargin(model, K, lr=0.01, max_iter=30, weight=0.0, keep=0.0)(images, labels, sel)
    assert torch.equal(plain.success, same.success) and torch.equal(plain.iterations, same.iterations)
    torch.testing.assert_close(plain.adv_images, same.adv_images, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- the comparisons
def _records(variant, samples, success, pert, eligible=None, imperceptible=None):
    n = len(samples)
    frame = pd.DataFrame({
        "sample": samples, "variant": variant, "method": "tkmia", "k": 3,
        "eligible": [True] * n if eligible is None else eligible, "success": success,
        "imperceptible": success if imperceptible is None else imperceptible,
        "iterations": [10] * n, "pert_l2": pert, "pert_l2_255": [p * 255 for p in pert],
    })
    for m in ("topk_accuracy", "precision_at_k", "map_at_k", "ndcg_at_k"):
        frame[f"clean_{m}"], frame[f"adv_{m}"] = 1.0, 1.0
    return frame


def test_comparison_uses_the_samples_eligible_in_every_variant():
    a = _records("a", [0, 1, 2, 3], [True, True, False, True], [1.0, 2.0, 3.0, 4.0])
    b = _records("b", [0, 1, 2, 3], [True, False, False, True], [0.5, 1.0, 1.0, 2.0],
                 eligible=[True, True, True, False])
    table = questions.comparison_table(pd.concat([a, b])).set_index("variant")
    assert table.loc["a", "n"] == table.loc["b", "n"] == 3
    assert table.loc["a", "success_rate"] == pytest.approx(2 / 3)
    assert table.loc["a", "pert_l2"] == pytest.approx(1.5) and table.loc["b", "pert_l2"] == pytest.approx(0.5)
    assert table.loc["b", "pert_l2_255"] == pytest.approx(0.5 * 255)


def test_paired_test_and_the_relaxation_verdict():
    n = 30
    samples = list(range(n))
    relaxed = _records("TkMIA (ATk)", samples, [True] * n, [1.0] * n)
    # the exact loss: the same successes, Pert halved on every sample -> it costs perturbation
    exact = _records("width 1", samples, [True] * n, [0.5 + 0.001 * i for i in range(n)])
    test = questions.paired_test(pd.concat([relaxed, exact]), "TkMIA (ATk)", "width 1")
    assert test["n"] == n and test["n_both"] == n and test["success_p"] == 1.0
    assert test["pert_second_smaller"] == 1.0 and test["pert_p"] < 1e-5
    verdict = questions.relaxation_verdict(pd.concat([relaxed, exact]))
    assert verdict["verdict"] == "costs perturbation size"
    # more successes for the exact loss, no Pert difference -> it costs success
    exact2 = _records("width 1", samples, [True] * n, [1.0] * n)
    relaxed2 = _records("TkMIA (ATk)", samples, [i < 20 for i in range(n)], [1.0] * n)
    assert questions.relaxation_verdict(pd.concat([relaxed2, exact2]))["verdict"].startswith("costs success")
    same = questions.relaxation_verdict(pd.concat([relaxed2, relaxed2.assign(variant="width 1")]))
    assert same["verdict"] == "costs nothing measurable"


def test_parametrisation_verdict_keeps_the_default_without_evidence():
    n = 30
    base = _records("exact", list(range(n)), [True] * n, [1.0] * n)
    pixel_same = base.assign(variant="pixel")
    v = questions.parametrisation_verdict(pd.concat([base, pixel_same]))
    assert v["choice"] == "exact" and v["change"] == "keep" and v["pixel"]["word"] == "no different"
    pixel_better = _records("pixel", list(range(n)), [True] * n, [0.5] * n)
    v = questions.parametrisation_verdict(pd.concat([base, pixel_better]))
    assert v["choice"] == "pixel" and v["change"] == "change"


def test_bound_gaps_against_a_direct_computation():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(3, 2, C, generator=gen, dtype=torch.float64)
    scores[2, 1] = float("nan")  # sample 1 stopped after step 1
    labels = torch.zeros(2, C, dtype=torch.float64)
    labels[:, :5] = 1
    specified = torch.zeros_like(labels)
    specified[:, 0] = 1
    gaps = questions.bound_gaps(scores, labels, specified, K)
    assert len(gaps) == 2 * 5
    row = gaps[(gaps["iteration"] == 1) & (gaps["sample"] == 0) & (gaps["term"] == "a")].iloc[0]
    a, _ = tkmia_terms(scores[1, :1], labels[:1], specified[:1], K)
    assert row["gap"] == pytest.approx(float(average_top_k(a, C - K) - kth_largest(a, C - K)))
    assert (gaps["gap"] >= -1e-12).all()
    table = questions.bound_gap_table(gaps)
    assert list(table["term"]) == ["a", "b"] and (table["samples"] == 2).all()


def test_monitor_table_flags_by_the_clean_threshold():
    rng = np.random.default_rng(0)
    rows = []
    for s in range(60):
        clean = rng.normal(0, 1, C)
        clean[:4] += 4.0  # four confident labels, k = 3: a clear clean margin
        adv = clean.copy()
        adv[0] = clean[3] - 0.01  # the attack pushes label 0 just below the top-3
        for method, scores in (("tkmia", adv), ("tkmia_margin", clean)):
            rows.append({"sample": s, "method": method, "k": 3, "eligible": True, "success": True,
                         "labels": [0, 1, 2, 3, 4], "clean_scores": list(clean), "adv_scores": list(scores)})
    table = questions.monitor_table(pd.DataFrame(rows), alpha=0.05).set_index(["method", "statistic"])
    assert set(table.index.get_level_values("statistic")) >= {"topk_margin", "next_margin", "positives"}
    assert table.loc[("tkmia", "topk_margin"), "detected"]
    assert not table.loc[("tkmia_margin", "topk_margin"), "detected"]  # clean scores: never flagged more
    assert table.loc[("tkmia_margin", "topk_margin"), "detection"] == table.loc[
        ("tkmia_margin", "topk_margin"), "false_alarm"]


# ----------------------------------------------------------------------------- the figures
def test_figures_are_legible_at_page_width():
    import matplotlib.pyplot as plt

    from tkmia.book.chapters import questions_plots
    from tkmia.plots.theme import MIN_FONT_PX, panels_per_row, smallest_font_px

    table = pd.DataFrame({"variant": ["TkMIA (ATk)", "width 1", "width 3"], "success_rate": [0.9, 0.8, 0.85],
                          "imperceptible_rate": [0.5, 0.4, 0.45], "pert_l2_255": [60.0, 70.0, 65.0]})
    bars = questions_plots.plot_variant_bars(
        table, {"success_rate": "success", "imperceptible_rate": "imperceptible", "pert_l2_255": "Pert ×255"})
    gaps = pd.DataFrame({"iteration": [0, 1, 0, 1] * 2, "sample": [0, 0, 1, 1] * 2,
                         "term": ["a"] * 4 + ["b"] * 4, "gap": np.arange(8.0), "exact": -np.arange(8.0)})
    curves = questions_plots.plot_bound_gaps(gaps)
    monitors = pd.DataFrame([{"method": m, "statistic": s, "detection": 0.5, "false_alarm": 0.05}
                             for m in ("tkmia", "tkmia_margin") for s in questions_plots.MONITOR_NAMES])
    heat = questions_plots.plot_monitors(monitors)
    for fig in (bars, curves, heat):
        assert smallest_font_px(fig) >= MIN_FONT_PX
        assert panels_per_row(fig) <= 3 or fig is heat
        plt.close(fig)
    with pytest.raises(ValueError, match="lacks the columns"):
        questions_plots.plot_variant_bars(table, {"iterations": "iterations"})


def test_arms_race_verdict_reads_the_monitor_table():
    rng = np.random.default_rng(1)
    rows = []
    for s in range(40):
        clean = rng.normal(0, 1, C)
        clean[:4] += 4.0
        pushed = clean.copy()
        pushed[0] = clean[3] - 0.01  # TkMIA: the specified label just below the top-3
        deep = clean.copy()
        deep[0] = clean[3] - 3.0  # the adaptive attack: pushed far below, the margin kept
        for method, scores, pert in (("tkmia", pushed, 1.0), ("tkmia_margin", deep, 2.0)):
            row = {"sample": s, "method": method, "k": 3, "eligible": True, "success": True,
                   "imperceptible": True, "iterations": 10, "pert_l2": pert, "pert_l2_255": 255 * pert,
                   "labels": [0, 1, 2, 3, 4], "clean_scores": list(clean), "adv_scores": list(scores)}
            for m in ("topk_accuracy", "precision_at_k", "map_at_k", "ndcg_at_k"):
                row[f"clean_{m}"] = row[f"adv_{m}"] = 1.0
            rows.append(row)
    records = pd.DataFrame(rows)
    table = questions.monitor_table(records, alpha=0.05)
    v = questions.arms_race_verdict(records, table)
    assert v["tkmia_caught"] == "caught" and v["margin_caught"] == "not caught"
    assert v["tkmia_margin_rate"] > v["margin_margin_rate"]
    assert v["cost_pert_ratio"] == pytest.approx(2.0) and v["success_cost"] == "not significant"
    assert v["next_statistic"] not in ("precision_at_k", "map_at_k", "ndcg_at_k", "topk_margin")
    assert v["paper_caught"] in ("caught", "not caught")
