"""tkmia.plots.theme: every figure of the book is legible at page width (at most three panels a row,
no text under MIN_FONT_PX once displayed in the content column), methods keep one colour, and the
table formatter keeps distinct values distinct."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from test_plots_analysis import _records as analysis_records  # noqa: E402
from test_plots_experiments import CLASSES  # noqa: E402
from test_plots_experiments import _records as experiment_records

import tkmia.plots.theme as st  # noqa: E402
from tkmia import plots  # noqa: E402
from tkmia.book.chapters import analysis, questions_plots  # noqa: E402
from tkmia.monitoring import detection_table  # noqa: E402
from tkmia.relaxation import average_top_k  # noqa: E402
from tkmia.report import claim_frame as report_claim_frame  # noqa: E402
from tkmia.report import summarize  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _history(t=6, n=4, c=6):
    g = torch.Generator().manual_seed(0)
    return {"loss": torch.rand(t, n, generator=g), "scores": torch.rand(t, n, c, generator=g)}


def _figures():
    """One figure of every plot_* function of tkmia.plots, on hand-made inputs (name -> thunk)."""
    records = experiment_records(("tkmia", "tkml_ap_u", "ml_cw_u", "kfool"), ks=(2, 3, 5))
    table = summarize(records)
    two = pd.concat([analysis_records("tkmia", shift=0.0), analysis_records("kfool", shift=5.0, width=3),
                     analysis_records("tkml_ap_u", shift=5.0, width=2)], ignore_index=True)
    two.loc[two["method"] == "tkmia", "success"] = True
    sweep = analysis.sweep_summary(pd.concat([analysis_records(m, shift=5.0, seed=s).assign(lr=lr)
                                           for s, lr in enumerate([2e-4, 5e-4, 1e-2])
                                           for m in ("tkmia", "tkml_ap_u")], ignore_index=True), "lr")
    labels = (torch.rand(40, 20, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    classes20 = [f"class {i}" for i in range(20)]
    scores = torch.randn(40, 20, generator=torch.Generator().manual_seed(2))
    clean = torch.rand(2, 3, 16, 16)
    adv = (clean + 0.01).clamp(0, 1)
    rows = records[(records["method"] == "tkmia") & (records["k"] == 3)].iloc[:2]
    frame_rank = plots.rank_history_frame(_history())
    return {
        "swap_frame": lambda: plots.plot_swap_frame(plots.swap_frame(
            torch.tensor([[3.0, 2.5, 2.0, 1.0, 0.5, 0.1]]), torch.tensor([[1.0, 1, 0, 1, 0, 1]]), 3)),
        "summary": lambda: plots.plot_summary(table),
        "delta_distributions": lambda: plots.plot_delta_distributions(records),
        "vs_k": lambda: plots.plot_vs_k(table),
        "triplets": lambda: plots.plot_triplets(clean, adv, rows.reset_index(drop=True), CLASSES),
        "label_statistics": lambda: analysis.plot_label_statistics(labels, classes20),
        "per_class_ap": lambda: analysis.plot_per_class_ap(
            analysis.per_class_ap_frame(scores, labels, classes20)),
        "eligibility": lambda: analysis.plot_eligibility(analysis.eligibility_frame(
            scores, labels, [2, 3], classes=[0, 1, 3], n_pert=2, del_n=2)),
        "sweep": lambda: analysis.plot_sweep(sweep, "lr", log=True, label="learning rate lr"),
        "budget": lambda: analysis.plot_budget(analysis.budget_frame(records)),
        "detection": lambda: analysis.plot_detection(detection_table(two, 0.1)),
        "detection_curves": lambda: analysis.plot_detection_curves(
            analysis.detection_curve_frame(two, alphas=[0.0, 0.1, 0.3])),
        "atk_vs_kth": lambda: plots.plot_atk_vs_kth(plots.atk_line_frame([1.0, 0.0, 2.0], [0.0, 1.0, -1.0], 2,
                                                                         np.linspace(-2, 2, 9))),
        "variational": lambda: plots.plot_variational(plots.variational_frame([1.0, 0.0, 2.0], 2,
                                                                              np.linspace(-1, 3, 9)),
                                                      v=[1.0, 0.0, 2.0]),
        "loss_history": lambda: plots.plot_loss_history(_history()),
        "lambda_modes": lambda: plots.plot_lambda_modes({"closed_form": _history(), "gradient": _history()}),
        "rank_history": lambda: plots.plot_rank_history(frame_rank, [0], 3, labels=[0, 1, 2]),
        "measure_collapse": lambda: plots.plot_measure_collapse(plots.measure_pairs_frame(records)),
        "perturbation": lambda: plots.plot_perturbation(clean[0], adv[0]),
        # part "Open questions" (tkmia.book.chapters.questions_plots)
        "variant_bars": lambda: questions_plots.plot_variant_bars(
            pd.DataFrame({"variant": ["exact", "reference", "pixel"], "success_rate": [0.9, 0.8, 1.0],
                          "pert_l2_255": [60.0, 80.0, 50.0], "moved": [0.3, 0.9, 0.4]}),
            {"success_rate": "success rate", "pert_l2_255": "Pert ×255", "moved": "moved"}),
        "bound_gaps": lambda: questions_plots.plot_bound_gaps(pd.DataFrame({
            "iteration": [0, 1, 0, 1] * 2, "sample": [0, 0, 1, 1] * 2, "term": ["a"] * 4 + ["b"] * 4,
            "gap": np.arange(8.0), "exact": -np.arange(8.0)})),
        "monitors": lambda: questions_plots.plot_monitors(pd.DataFrame(
            [{"method": m, "statistic": s, "detection": 0.5, "false_alarm": 0.05}
             for m in ("tkmia", "tkmia_margin") for s in questions_plots.MONITOR_NAMES])),
    }


FIGURES = _figures()


def test_every_plot_function_is_covered():
    drawn = {name for name in dir(plots) if name.startswith("plot_")}
    covered = {f"plot_{name}" for name in FIGURES}
    # the two wrappers of plot_vs_k draw the same layout
    assert drawn - covered <= {"plot_success_vs_k", "plot_pert_vs_k"}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_is_legible_at_page_width(name):
    fig = FIGURES[name]()
    assert st.panels_per_row(fig) <= st.MAX_COLUMNS, name
    assert st.smallest_font_px(fig) >= st.MIN_FONT_PX, (name, sorted(set(st.figure_fonts(fig)))[:3],
                                                        st.natural_width_px(fig))
    assert fig.dpi == st.DPI


@pytest.mark.parametrize("name", ["summary", "delta_distributions", "vs_k", "sweep", "budget",
                                  "detection_curves"])
def test_every_axis_names_its_quantity(name):
    fig = FIGURES[name]()
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>" or not ax.has_data():
            continue
        assert ax.get_ylabel() or ax.get_title(), name


def test_methods_keep_one_colour_across_figures():
    fig = FIGURES["vs_k"]()
    lines = {line.get_label(): to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()
             if not line.get_label().startswith("_")}
    for legend in fig.legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            lines.setdefault(text.get_text(), to_hex(handle.get_color()))
    for book_name in ("TkMIA", "TkML-AP-U", "ML-CW-U", "kFool"):
        assert lines[book_name] == st.METHOD_COLORS[book_name]
    assert st.METHOD_COLORS["tkmia"] == st.METHOD_COLORS["TkMIA"]
    palette = st.method_palette(["kFool", "clean", "TkMIA"])
    assert palette["kFool"] == st.METHOD_COLORS["kfool"] and palette["clean"] not in st.METHOD_COLORS.values()


def test_smallest_font_px_scales_with_displayed_width():
    st.style()
    fig, ax = plt.subplots(figsize=(14.0, 3.0))
    ax.set_xlabel("x", fontsize=10)
    wide = st.smallest_font_px(fig)
    natural = st.natural_width_px(fig)
    assert natural > st.COLUMN_PX
    assert wide == pytest.approx(min(st.figure_fonts(fig)) * fig.dpi / 72 * st.COLUMN_PX / natural)
    assert wide < st.MIN_FONT_PX  # a 14-inch figure squeezed into the column is illegible


@pytest.mark.parametrize("n, rows, cols", [(1, 1, 1), (2, 1, 2), (3, 1, 3), (4, 2, 2), (5, 2, 3), (7, 3, 3)])
def test_panel_grid_never_puts_more_than_three_panels_in_a_row(n, rows, cols):
    r, c, (width, height) = st.panel_grid(n)
    assert (r, c) == (rows, cols)
    assert width <= st.PAGE_WIDTH_IN + 1e-9 and height > 0
    with pytest.raises(ValueError, match="n must be"):
        st.panel_grid(0)


def test_format_number_keeps_distinct_values_distinct():
    assert st.format_number(2e-4) != st.format_number(5e-4)
    assert st.format_number(0.0) != st.format_number(1e-4)
    assert st.format_number(465.0) == "465"
    assert st.format_number(np.int64(3)) == "3"
    assert st.format_number(1 / 3) == "0.333"
    assert st.format_number(float("nan")) == "–"
    assert st.format_number(None) == "–"
    assert st.format_number(np.bool_(False)) == "no"
    assert st.format_number({"lr": 5e-4, "weight_decay": 0.0}) == "lr = 0.0005, weight_decay = 0"
    assert st.format_number([0, 1, 3]) == "0, 1, 3"


def test_tidy_table_has_a_caption_scrolls_and_prints_no_raw_values():
    frame = pd.DataFrame({"lr": [2e-4, 5e-4], "n": [465.0, 12.0], "rate": [0.5, float("nan")],
                          "delta": [-0.0123456789, 0.0], "options": [{"a": 1}, {}]})
    html = plots.tidy_table(frame, "what the columns are", percent=["rate"], signed=["delta"]).to_html()
    assert "what the columns are" in html and "overflow-x: auto" in html
    html = html.split("</style>")[1]  # the cells, not the box's CSS
    for raw in ("nan", "NaN", "465.0", "0.000200", "{", "0.0123456789"):
        assert raw not in html, raw
    for shown in ("0.0002", "0.0005", ">465<", "50.0%", "−0.0123", ">0<", "a = 1", "–"):
        assert shown in html, shown
    with pytest.raises(ValueError, match="caption"):
        plots.tidy_table(frame, " ")


def test_average_top_k_is_unchanged_by_styling():
    # style() touches only matplotlib's settings, never the numbers a figure is drawn from
    v = torch.tensor([[3.0, 1.0, 2.0]])
    before = float(average_top_k(v, 2))
    st.style()
    assert float(average_top_k(v, 2)) == before == 2.5


def test_measure_outcomes_and_typical_samples_describe_the_distribution():
    records = experiment_records(("kfool",), ks=(3,), n=6)  # drops 0, .25, .5, 0, .25, .5 (sample 1 fails)
    out = plots.measure_outcomes(records)
    assert out["n"] == 5
    assert out["unchanged"] == pytest.approx(2 / 5) and out["p_dropped"] == pytest.approx(3 / 5)
    assert out["other_change"] == 0.0
    reordered = records.copy()  # sample 0: P@k kept, NDCG@k lower (a true label moved down the top-k)
    reordered.loc[reordered["sample"] == 0, "adv_ndcg_at_k"] = 0.9
    moved = plots.measure_outcomes(reordered)
    assert moved["other_change"] == pytest.approx(1 / 5) and moved["unchanged"] == pytest.approx(1 / 5)
    assert out["mean_p_drop"] == pytest.approx((0.5 + 0.25 + 0.5) / 3)
    assert out["median_delta_p"] == pytest.approx(-0.25)
    # the most typical first: sample 4 sits at the median (-0.25); then the others by distance
    assert plots.typical_samples(records, [0, 1, 2, 3, 4, 5])[0] == 4
    assert 1 not in plots.typical_samples(records, [0, 1, 2, 3, 4, 5])  # failed attack never shown
    assert plots.typical_samples(records, [1]) == [1]  # no success among them: eligible ones shown
    with pytest.raises(ValueError, match="none of the samples"):
        plots.typical_samples(records, [6])  # sample 6 is not eligible
    assert plots.measure_outcomes(records.assign(success=False))["n"] == 0


def test_detection_verdict_compares_with_the_realised_false_alarm_rate():
    rows = []
    for method, rate in (("tkmia", 0.08), ("kfool", 0.9)):
        for stat in ("precision_at_k", "map_at_k", "ndcg_at_k", "average_precision", "topk_margin"):
            rows.append({"method": method, "statistic": stat, "threshold": 0.5, "false_alarm": 0.005,
                         "detection": rate if stat == "precision_at_k" else 0.0, "n_attacks": 100})
    verdicts = analysis.detection_verdicts(pd.DataFrame(rows), alpha=0.05)
    # 0.08 is below twice the budget (0.1) but 16 times the realised rate: detected
    assert verdicts["tkmia_paper_verdict"] == "detected"
    assert verdicts["tkmia_paper_ratio"] == pytest.approx(16.0)
    assert verdicts["tkmia_paper_alarm"] == pytest.approx(0.005)
    assert verdicts["tkmia_ap_verdict"] == "not detected"
    no_success = pd.DataFrame(rows).assign(detection=float("nan"))
    assert np.isnan(analysis.detection_verdicts(no_success, alpha=0.05)["tkmia_paper_ratio"])


def test_prose_formats_keep_distinct_values_distinct():
    assert st.format_signed(0.0) == "0" and st.format_signed(-0.00042) == "−0.00042"
    assert st.format_signed(0.125) == "+0.125" and st.format_signed(float("nan")) == "–"
    assert st.format_percent(0.99996) == "99.996%" and st.format_percent(1.0) == "100%"
    assert st.format_percent(0.00001) != "0.0%" and st.format_percent(0.4567) == "45.7%"
    # two values equal to 3 significant digits get the digits that tell them apart; equal ones stay equal
    assert st.distinct_numbers([0.01231, 0.01234, 0.01231]) == ["0.01231", "0.01234", "0.01231"]
    assert st.distinct_numbers([-0.0004, 0.0, 1 / 3], "signed") == ["−0.0004", "0", "+0.333"]
    assert st.distinct_numbers([0.5, 0.50004], "percent") == ["50.000%", "50.004%"]
    assert st.distinct_numbers([0.5, float("nan")]) == ["0.5", "–"]
    with pytest.raises(ValueError, match="kind must be one of"):
        st.distinct_numbers([1.0], "fixed")


def test_summary_prose_agrees_with_the_table():
    records = experiment_records(("tkmia", "tkml_ap_u", "ml_cw_u", "kfool"), ks=(2, 3), n=6)
    table = summarize(records)
    text = plots.summary_prose(table, 3)
    row = table[(table["k"] == 3) & (table["method"] == "kfool")].iloc[0]
    assert text["kfool_success_rate"] == st.format_percent(row["success_rate"])
    assert text["kfool_delta_precision_at_k"] == st.format_signed(row["delta_precision_at_k"])
    assert text["tkmia_delta_precision_at_k"] == "0"  # TkMIA keeps every measure: no "+0.000"
    assert text["k"] == "3" and text["n"] == str(int(row["n"]))
    claim = report_claim_frame(table).set_index("k").loc[3]
    assert text["tkmia_worst"] == "0" and float(text["baselines_least"]) == pytest.approx(claim["baselines"])
    assert text["focus_verdict"] == "holds" and text["verdict"] == "holds"
    tkmia_pert = table[(table["k"] == 3) & (table["method"] == "tkmia")]["pert_l2_255"].iloc[0]
    assert float(text["pert_ratio"]) == pytest.approx(row["pert_l2_255"] / tkmia_pert, rel=1e-2)
    with pytest.raises(ValueError, match="k = 4 must be one k of the table"):
        plots.summary_prose(table, 4)


def test_verdict_prose_reads_right_for_every_ratio():
    rows = []
    for method, rate in (("tkmia", 0.08), ("kfool", 0.9)):
        for stat in ("precision_at_k", "map_at_k", "ndcg_at_k", "average_precision", "topk_margin"):
            rows.append({"method": method, "statistic": stat, "threshold": 0.5, "false_alarm": 0.005,
                         "detection": rate if stat == "precision_at_k" else 0.0, "n_attacks": 100})
    table = pd.DataFrame(rows)
    text = analysis.verdict_prose(analysis.detection_verdicts(table, alpha=0.05))
    assert text["tkmia_paper_max"] == "0.08" and text["tkmia_paper_alarm"] == "0.005"
    assert text["tkmia_paper_ratio"] == "so TkMIA's images are flagged 16 times as often as clean ones"
    assert text["tkmia_paper_verdict"] == "detected" and text["paper_claim"] == "does not hold"
    never = analysis.verdict_prose(analysis.detection_verdicts(table.assign(false_alarm=0.0), alpha=0.05))
    assert never["tkmia_paper_ratio"] == ("so TkMIA's images are flagged at a rate of 0.08 while no clean "
                                          "image is")
    quiet = analysis.verdict_prose(
        analysis.detection_verdicts(table.assign(false_alarm=0.0, detection=0.0), 0.05))
    assert quiet["tkmia_paper_ratio"] == "so neither TkMIA's images nor clean ones are flagged"
    assert quiet["paper_claim"] == "holds"
    with pytest.raises(ValueError, match="detection_verdicts"):
        analysis.verdict_prose({"tkmia_paper_max": 0.1})
