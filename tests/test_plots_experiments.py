"""tkmia.plots.experiments: the experiment chapters' figures and display table, on hand-made records."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tkmia.metrics import MEASURES  # noqa: E402
from tkmia.plots import (  # noqa: E402
    claim_summary,
    delta_frame,
    fairness_frame,
    plot_delta_distributions,
    plot_pert_vs_k,
    plot_success_vs_k,
    plot_summary,
    plot_triplets,
    plot_vs_k,
    style_table,
    topk_changes,
    triplet_inputs,
)
from tkmia.plots.experiments import METHOD_NAMES  # noqa: E402
from tkmia.report import claim_frame, summarize  # noqa: E402

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")


def _records(methods=("tkmia", "kfool"), ks=(2, 3), n=4) -> pd.DataFrame:
    """n eligible samples + 1 ineligible per (method, k); TkMIA keeps the measures, kFool drops them."""
    rows = []
    for method in methods:
        for k in ks:
            for sample in range(n + 1):
                drop = 0.0 if method == "tkmia" else 0.25 * (sample % 3)
                row = {
                    "sample": sample, "method": method, "scheme": "global", "k": k,
                    "labels": [0, 1, 2, 3], "specified": [1], "required": 1,
                    "eligible": sample < n, "success": sample != 1 or method == "tkmia",
                    "imperceptible": method == "tkmia", "iterations": 10 + sample,
                    "pert_l2": 0.1 * (sample + 1), "pert_l2_255": 25.5 * (sample + 1),
                    "clean_topk": [0, 1, 2][:k], "adv_topk": [0, 2, 4][:k],
                }
                for m in MEASURES:
                    row[f"clean_{m}"] = 1.0
                    row[f"adv_{m}"] = 1.0 - drop
                rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_style_table_formats_and_renames():
    table = summarize(_records())
    styled = style_table(table)
    html = styled.to_html()
    for name in ("success", "imperceptible", "Pert (×255)", "ΔP@k", "ΔmAP@k", "ΔNDCG@k", "TkMIA", "kFool"):
        assert name in html
    assert "100.0%" in html and "75.0%" in html  # kFool's success at 3 of 4 eligible samples
    assert ">0</td>" in html  # an unchanged measure prints as 0, not +0.000
    assert "success_rate" not in html and "tkml_ap_u" not in html
    with pytest.raises(ValueError, match="method"):
        style_table(pd.DataFrame({"k": [1]}))


def test_plot_summary_has_one_panel_per_k_with_every_method():
    fig = plot_summary(summarize(_records(ks=(2, 3, 5))))
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert len(axes) == 3
    assert [ax.get_title() for ax in axes] == ["k = 2", "k = 3", "k = 5"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [METHOD_NAMES["tkmia"], METHOD_NAMES["kfool"]]
    ticks = [t.get_text() for t in axes[-1].get_xticklabels()]  # the bottom row carries the names
    assert ticks == ["success", "imperceptible", "ΔP@k", "ΔmAP@k", "ΔNDCG@k"]


def test_delta_frame_counts_eligible_samples_only():
    records = _records()
    frame = delta_frame(records)
    assert len(frame) == 4 * 2 * 2 * 3  # eligible samples × methods × ks × measures
    assert set(frame["measure"]) == {"P@k", "mAP@k", "NDCG@k"}
    assert (frame.loc[frame["method"] == "TkMIA", "change"] == 0).all()
    assert frame.loc[frame["method"] == "kFool", "change"].min() == pytest.approx(-0.5)


def test_plot_delta_distributions_panels_per_measure_and_k():
    fig = plot_delta_distributions(_records())
    assert len(fig.axes) == 6
    titles = {ax.get_title() for ax in fig.axes}
    assert "k = 2, ΔP@k" in titles and "k = 3, ΔNDCG@k" in titles
    fig = plot_delta_distributions(_records(ks=(3,)))
    assert [ax.get_title() for ax in fig.axes] == ["ΔP@k", "ΔmAP@k", "ΔNDCG@k"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["TkMIA", "kFool"]


def test_plots_against_k():
    table = summarize(_records(ks=(1, 2, 3)))
    fig = plot_success_vs_k(table)
    assert [ax.get_title() for ax in fig.axes] == ["success", "imperceptible"]
    assert all(len(ax.get_lines()) >= 2 for ax in fig.axes)
    fig = plot_pert_vs_k(table)
    assert [ax.get_title() for ax in fig.axes] == ["Pert (×255)"]
    assert fig.axes[0].get_yscale() == "log"
    assert len(plot_vs_k(table).axes) == 3
    with pytest.raises(ValueError, match="pert_l2_255"):
        plot_pert_vs_k(table.drop(columns="pert_l2_255"))


def test_triplets_show_three_panels_per_sample_and_the_topk_lists():
    records = _records(methods=("tkmia",), ks=(3,))
    images = {"sample": [0, 1, 2], "clean": torch.rand(3, 3, 8, 8)}
    images["adv"] = (images["clean"] + 0.01).clamp(0, 1)
    clean, adv, rows = triplet_inputs(images, records, samples=[2, 0])
    assert list(rows["sample"]) == [2, 0]
    assert torch.equal(clean[0], images["clean"][2]) and torch.equal(adv[1], images["adv"][0])
    fig = plot_triplets(clean, adv, rows, CLASSES)
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title() == "sample 2: clean"
    assert fig.axes[2].get_title().startswith("|adv − clean| ×")
    texts = [t.get_text().strip() for ax in fig.axes for t in ax.texts]
    assert "square*," in texts  # the specified label, marked, in the clean top-k
    assert "cross" in texts  # a false label that entered the adversarial top-k
    assert fig.texts and "specified" in fig.texts[-1].get_text()
    assert fig._suptitle.get_text() == "TkMIA"
    fig = plot_triplets(clean, adv, rows, amplify=10.0)
    assert fig.axes[2].get_title() == "|adv − clean| × 10"
    with pytest.raises(ValueError, match="no saved images"):
        triplet_inputs(images, records, samples=[3])
    with pytest.raises(ValueError, match="rows"):
        plot_triplets(clean, adv, rows.iloc[:1])
    with pytest.raises(ValueError, match="amplify"):
        plot_triplets(clean, adv, rows, amplify=0)


def test_fairness_frame_detects_a_different_sample_or_specified_set():
    records = _records()
    frame = fairness_frame(records)
    assert len(frame) == 4 and frame["same_samples"].all() and frame["same_specified"].all()
    assert list(frame["method"][:2]) == ["tkmia", "kfool"] and (frame["n"] == 5).all()
    changed = records.copy()
    changed.loc[(changed["method"] == "kfool") & (changed["k"] == 3) & (changed["sample"] == 0), "sample"] = 9
    frame = fairness_frame(changed).set_index(["k", "method"])
    assert not frame.loc[(3, "kfool"), "same_samples"] and frame.loc[(2, "kfool"), "same_samples"]
    changed = records.copy()
    changed.at[0, "specified"] = [2]
    frame = fairness_frame(changed).set_index(["k", "method"])
    assert frame.loc[(2, "kfool"), "same_samples"] and not frame.loc[(2, "kfool"), "same_specified"]


def test_claim_frame_and_summary_read_right_whatever_the_numbers():
    table = summarize(_records())
    frame = claim_frame(table)
    assert list(frame["holds"]) == [True, True]
    assert frame["tkmia"].max() == 0 and frame["baselines"].min() > 0
    assert claim_summary(table) == {"verdict": "holds", "where": "for every k of the grid (2, 3)"}
    worse = table.copy()
    worse.loc[(worse["method"] == "tkmia") & (worse["k"] == 3), "delta_map_at_k"] = -0.9
    assert claim_summary(worse) == {"verdict": "holds only in part", "where": "for k = 2 only, not for k = 3"}
    worse.loc[worse["method"] == "tkmia", "delta_ndcg_at_k"] = -0.9
    assert claim_summary(worse)["verdict"] == "does not hold"
    with pytest.raises(ValueError, match="TkMIA"):
        claim_frame(table[table["method"] != "tkmia"])


def test_topk_changes_counts_removed_and_entering_labels():
    rows = _records(methods=("tkmia",), ks=(3,)).head(2)
    got = topk_changes(rows)
    # clean top-3 [0, 1, 2] -> [0, 2, 4]: the specified label 1 left, the false label 4 entered
    assert got.to_dict("records")[0] == {"sample": 0, "removed": 1, "false_in": 1, "true_in": 0}
    assert len(got) == 2
