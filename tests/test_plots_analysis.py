"""Figures and tables of the analysis chapters (victims, sensitivity, monitoring, full scale)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tkmia import plots  # noqa: E402
from tkmia.book.chapters import analysis  # noqa: E402
from tkmia.metrics import MEASURES, measures  # noqa: E402
from tkmia.monitoring import detection_table  # noqa: E402

C, K = 8, 3


def _records(method: str, n: int = 12, shift: float = 0.0, seed: int = 0, width: int = 1) -> pd.DataFrame:
    """Fake per-sample records: clean scores that rank the true labels first; adversarial scores
    with ``shift`` subtracted from the first ``width`` true labels (enough to push them out when large)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, C)
    labels[:, :5] = 1
    clean = torch.rand(n, C, generator=g) + 2 * labels
    adv = clean.clone()
    adv[:, :width] -= shift
    cm, am = measures(clean, labels, K), measures(adv, labels, K)
    rows = []
    for i in range(n):
        row = {"sample": i, "method": method, "scheme": "global", "k": K, "labels": list(range(5)),
               "eligible": True, "success": bool(shift > 0 and i % 4 != 0), "imperceptible": False,
               "iterations": 10 * i, "pert_l2": 0.01 * (i + 1), "pert_l2_255": 2.55 * (i + 1),
               "tanh_space_l2": 0.02 * (i + 1), "clean_scores": clean[i].tolist(),
               "adv_scores": adv[i].tolist()}
        for m in MEASURES:
            row[f"clean_{m}"] = float(cm[m][i])
            row[f"adv_{m}"] = float(am[m][i])
        rows.append(row)
    return pd.DataFrame(rows)


def test_everything_is_exported():
    from tkmia.plots import experiments, measures, theme, theory

    for module in (experiments, measures, theme, theory):
        for name in module.__all__:
            assert hasattr(plots, name), f"{module.__name__}.{name} is not in tkmia.plots"
    for name in analysis.__all__:
        assert hasattr(analysis, name)


def test_dataset_labels_and_model_summary():
    class Items:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(3, 4, 4), torch.tensor([1.0, 0.0]) if i else torch.tensor([0.0, 1.0])

    assert analysis.dataset_labels(Items()).tolist() == [[0, 1], [1, 0], [1, 0]]
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    summary = analysis.model_summary(model)
    assert summary["parameters"].tolist() == [15, 0, 8, 23]
    assert summary["block"].iloc[-1] == "total"


def test_victim_scores_cover_the_dataset():
    class Data:
        images = torch.rand(5, 3, 4, 4)
        labels = torch.zeros(5, 2)

        def __len__(self):
            return 5

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
    scores = analysis.victim_scores(model, Data(), batch_size=2)
    assert scores.shape == (5, 2)
    assert torch.allclose(scores, model(Data.images), atol=1e-6)


def test_per_class_ap_perfect_and_reversed():
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    scores = torch.tensor([[2.0, 0.0], [1.0, 0.0], [1.5, 5.0]])
    frame = analysis.per_class_ap_frame(scores, labels, ["a", "b"]).set_index("class")
    assert frame.loc["a", "ap"] == pytest.approx(1.0)
    # class b: image 2 (negative) ranks first, the positive image 1 ties with image 0: one threshold
    assert frame.loc["b", "ap"] == pytest.approx(1 / 3)
    assert frame.loc["a", "frequency"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="must both be"):
        analysis.per_class_ap_frame(scores, labels, ["a"])


def test_per_class_ap_is_scikit_learns_with_ties_and_nan_without_positives():
    from sklearn.metrics import average_precision_score

    # class 0: the positive ties with a negative above another positive; class 2 has no positive
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    scores = torch.tensor([[1.0, 0.2, 0.1], [1.0, 0.9, 0.3], [0.5, 0.4, 0.2], [0.0, 0.1, 0.9]])
    frame = analysis.per_class_ap_frame(scores, labels, ["a", "b", "c"]).set_index("class")
    for c, name in enumerate("ab"):
        expected = average_precision_score(labels[:, c].numpy(), scores[:, c].numpy())
        assert frame.loc[name, "ap"] == pytest.approx(expected)
    assert frame.loc["a", "ap"] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)  # by hand: (R, P) steps
    assert np.isnan(frame.loc["c", "ap"])


def test_eligibility_counts_follow_the_rules():
    labels = torch.tensor([[1.0, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    scores = torch.tensor([[6.0, 5, 4, 3, 2, 1], [6.0, 5, 4, 3, 2, 1]])
    frame = analysis.eligibility_frame(scores, labels, [1, 2], classes=[0], n_pert=2, del_n=2)
    got = {(r.scheme, r.k): r.eligible for r in frame.itertuples()}
    # global, k=1: S = {0} in the top-1, |Y| >= 2 for both images; k=2: |Y| >= 3 only the first
    assert got == {("global", 1): 2, ("global", 2): 1, ("random", 2): 1}
    assert frame["fraction"].max() == 1.0
    fig = analysis.plot_eligibility(frame)
    assert isinstance(fig, Figure)
    plt.close(fig)


def test_label_statistics_figure():
    labels = torch.tensor([[1.0, 0, 1], [0, 0, 1]])
    fig = analysis.plot_label_statistics(labels, ["a", "b", "c"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([0, 0.5, 0.5])
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()][0] == "c"
    plt.close(fig)
    with pytest.raises(ValueError, match="len\\(classes\\)"):
        analysis.plot_label_statistics(labels, ["a"])


def test_budget_frame_counts_success_within_each_budget():
    records = _records("tkmia", shift=5.0)  # success except samples 0, 4, 8; iterations 10 * i
    frame = analysis.budget_frame(records, budgets=[0, 15, 1000])
    assert frame["success_rate"].tolist() == pytest.approx([0, 1 / 12, 9 / 12])
    # max_iter = b examines iterates 0 … b − 1: a success at iterate 10 needs a budget of 11
    edge = analysis.budget_frame(records, budgets=[10, 11])
    assert edge["success_rate"].tolist() == pytest.approx([0, 1 / 12])
    auto = analysis.budget_frame(records)
    assert auto["max_iter"].is_monotonic_increasing and auto["success_rate"].is_monotonic_increasing
    fig = analysis.plot_budget(auto)
    assert isinstance(fig, Figure)
    plt.close(fig)


def test_sweep_summary_and_figure():
    parts = [_records(m, shift=5.0, seed=s).assign(lr=lr) for s, lr in enumerate([1e-3, 1e-2])
             for m in ("tkmia", "tkml_ap_u")]
    summary = analysis.sweep_summary(pd.concat(parts, ignore_index=True), "lr")
    assert set(summary.columns) >= {"lr", "method", "success_rate", "pert_l2_255"}
    assert len(summary) == 4
    fig = analysis.plot_sweep(summary, "lr", log=True)
    assert len(fig.axes) == 3
    plt.close(fig)
    with pytest.raises(ValueError, match="parameter must be one of"):
        analysis.sweep("tiny", "momentum", [0.9])


def test_detection_figures_and_verdicts():
    records = pd.concat([_records("tkmia", shift=0.0), _records("kfool", shift=5.0, width=3)],
                        ignore_index=True)
    records.loc[records["method"] == "tkmia", "success"] = True
    table = detection_table(records, 0.1)
    verdicts = analysis.detection_verdicts(table, 0.1)
    assert verdicts["tkmia_paper_max"] == 0.0 and verdicts["tkmia_paper_verdict"] == "not detected"
    assert verdicts["baselines_paper_min"] == 1.0 and verdicts["baselines_paper_verdict"] == "all"
    assert analysis.detection_verdicts(table, 0.1, attack="none")["tkmia_paper_verdict"] == "n/a"
    fig = analysis.plot_detection(table)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["TkMIA", "kFool"]
    plt.close(fig)
    curves = analysis.detection_curve_frame(records, alphas=[0.0, 0.25])
    assert set(curves["alpha"]) == {0.0, 0.25}
    fig = analysis.plot_detection_curves(curves)
    assert len(fig.axes) == 5
    plt.close(fig)


def test_parametrisation_summary_uses_common_samples():
    exact = _records("tkmia", shift=5.0)
    ref = _records("tkmia", shift=5.0).iloc[:6].copy()
    ref.loc[ref["sample"] == 1, "eligible"] = False
    out = analysis.parametrisation_summary({"exact": exact, "reference": ref}).set_index("parametrisation")
    assert out["n"].tolist() == [5, 5]
    assert out.loc["exact", "tanh_space_l2_255"] == pytest.approx(255 * out.loc["exact", "tanh_space_l2"])
    with pytest.raises(ValueError):
        analysis.parametrisation_summary({})


def test_return_rule_zeroes_failures_only():
    records = _records("tkmia", shift=5.0)
    rules = analysis.return_rule_frame(records).set_index("rule")
    last, clean = rules.loc["last iterate"], rules.loc["clean on failure"]
    assert last["failed"] == pytest.approx(0.25)
    delta = (records["adv_precision_at_k"] - records["clean_precision_at_k"]).to_numpy()
    assert last["delta_precision_at_k"] == pytest.approx(delta.mean())
    assert clean["delta_precision_at_k"] == pytest.approx((delta * records["success"].to_numpy()).mean())
    assert np.isfinite(rules[[f"delta_{m}" for m in MEASURES]].to_numpy()).all()


def test_as_image_renders_a_bare_figure():
    fig = Figure()
    fig.subplots().plot([0, 1])
    image = analysis.as_image(fig)
    assert image.data[:8] == b"\x89PNG\r\n\x1a\n"
