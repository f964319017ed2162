"""The logic of the chapter "Real photographs" (tkmia.book.chapters.photos) and its figures
(tkmia.book.chapters.photos_plots), on hand-made records: slow definitions from the formulas as oracles,
hypothesis properties, and the error messages."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import tkmia.plots.theme as theme  # noqa: E402
from tkmia.book.chapters import photos as pv
from tkmia.book.chapters import photos_plots as photo_plots
from tkmia.book.chapters.victim_questions import ready_mask  # noqa: E402
from tkmia.metrics import WATCHED_MEASURES  # noqa: E402
from tkmia.selection import spare_rank  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------------------- spare rank
def slow_spare_rank(scores, labels, specified, k):
    """From the definition: sort the labels by score, descending, ties by the lower index first
    (the project's rule); the rank (from 1) of the first label of Y \\ S after position k."""
    out = []
    for s, y, chosen in zip(scores.tolist(), labels.tolist(), specified.tolist()):
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))
        found = math.nan
        for position, label in enumerate(order, start=1):
            if position > k and y[label] and not chosen[label]:
                found = float(position)
                break
        out.append(found)
    return out


@st.composite
def ranked_samples(draw):
    n = draw(st.integers(1, 6))
    c = draw(st.integers(3, 8))
    k = draw(st.integers(1, c - 1))
    # few distinct values, so that ties happen and the tie rule is exercised
    scores = torch.tensor(draw(st.lists(st.lists(st.integers(-3, 3), min_size=c, max_size=c),
                                        min_size=n, max_size=n)), dtype=torch.float32)
    labels = torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=c, max_size=c),
                                        min_size=n, max_size=n))).float()
    pick = torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=c, max_size=c),
                                      min_size=n, max_size=n))).float()
    return scores, labels, labels * pick, k


@settings(max_examples=200, deadline=None)
@given(ranked_samples())
def test_spare_rank_matches_the_definition(sample):
    scores, labels, specified, k = sample
    got = spare_rank(scores, labels, specified, k)
    expected = slow_spare_rank(scores, labels, specified, k)
    assert got.dtype == torch.float64 and got.shape == (len(scores),)
    for g, e in zip(got.tolist(), expected):
        assert (math.isnan(g) and math.isnan(e)) or g == e
    defined = ~torch.isnan(got)
    assert bool((got[defined] > k).all()) and bool((got[defined] <= scores.shape[1]).all())


@settings(max_examples=200, deadline=None)
@given(ranked_samples())
def test_ready_is_the_spare_rank_within_k_plus_the_specified_count(sample):
    scores, labels, specified, k = sample
    rank = spare_rank(scores, labels, specified, k)
    within = rank <= k + specified.sum(1).double()  # False where there is no spare label (NaN)
    ready = ready_mask(scores, labels, specified, k)
    assert torch.equal(within, ready)
    assert not bool(ready[torch.isnan(rank)].any())


def test_spare_rank_example_and_missing_label():
    scores = torch.tensor([[5.0, 4, 3, 2, 1], [5.0, 4, 3, 2, 1]])
    labels = torch.tensor([[1.0, 1, 0, 0, 1], [1.0, 1, 0, 0, 0]])
    specified = torch.tensor([[1.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0]])
    assert spare_rank(scores, labels, specified, 2)[0].item() == 5.0
    assert math.isnan(spare_rank(scores, labels, specified, 2)[1].item())


@pytest.mark.parametrize("change, match", [
    ({"k": 0}, "k=0"), ({"k": 4}, r"k=4; expected an int in \[1, 3\]"), ({"k": True}, "k=True"),
    ({"labels": torch.ones(2, 3)}, "labels has shape"),
    ({"specified": torch.ones(1, 4)}, "specified has shape"),
    ({"specified": torch.tensor([[0.0, 0, 0, 1], [0, 0, 0, 0]])}, "subset of Y"),
    ({"clean_scores": torch.zeros(4)}, "must be"),
])
def test_spare_rank_names_bad_arguments(change, match):
    args = {"clean_scores": torch.zeros(2, 4), "labels": torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0]]),
            "specified": torch.zeros(2, 4), "k": 2}
    args.update(change)
    with pytest.raises(ValueError, match=match):
        spare_rank(**args)


def _summary(methods, values):
    """A report.summarize-like table of one scheme and k: one row per method."""
    rows = []
    for method in methods:
        v = values[method]
        rows.append({"scheme": "global", "k": 3, "method": method, "n": v.get("n", 10),
                     "success_rate": v["success"], "imperceptible_rate": v["imp"],
                     "pert_l2_255": v.get("pert", 30.0),
                     "iterations": 5.0, "delta_topk_accuracy": 0.0,
                     **{f"delta_{m}": d for m, d in zip(WATCHED_MEASURES, v["deltas"])}})
    return pd.DataFrame(rows)


TABLES = {
    "MultiShapes": _summary(("tkmia", "tkml_ap_u", "kfool"), {
        "tkmia": {"success": 1.0, "imp": 0.9, "deltas": (0.0, -0.01, -0.02)},
        "tkml_ap_u": {"success": 1.0, "imp": 0.1, "deltas": (-0.3, -0.4, -0.25)},
        "kfool": {"success": 0.5, "imp": 0.0, "deltas": (-0.6, -0.6, -0.6)}}),
    "novel objects": _summary(("tkmia", "tkml_ap_u"), {
        "tkmia": {"success": 1.0, "imp": 0.2, "n": 7, "deltas": (-0.1, -0.12, -0.05)},
        "tkml_ap_u": {"success": 1.0, "imp": 0.05, "deltas": (-0.3, -0.2, -0.25)}}),
    "novel scenes": _summary(("tkmia", "tkml_ap_u"), {
        "tkmia": {"success": 0.9, "imp": 0.6, "deltas": (-0.3, 0.0, 0.0)},
        "tkml_ap_u": {"success": 1.0, "imp": 0.05, "deltas": (-0.3, -0.2, -0.25)}}),
}


def test_claim_table_and_verdicts_follow_the_rule():
    claim = pv.claim_table(TABLES)
    assert list(claim.columns) == ["setting", "method", *pv.CLAIM_COLUMNS]
    assert list(zip(claim["setting"], claim["method"])) == [
        (s, m) for s in TABLES for m in ("tkmia", "tkml_ap_u")]
    verdicts = pv.claim_verdicts(claim).set_index("setting")
    assert verdicts["verdict"].to_dict() == {"MultiShapes": "holds", "novel objects": "holds on average only",
                                             "novel scenes": "does not hold"}
    # slow oracle: the largest |Δ| of TkMIA, the smallest of TkML-AP-U
    assert verdicts.loc["novel objects", "tkmia_worst"] == pytest.approx(0.12)
    assert verdicts.loc["novel objects", "baseline_least"] == pytest.approx(0.2)
    assert verdicts.loc["novel objects", "n"] == 7
    assert verdicts.loc["novel scenes", "baseline_imperceptible"] == pytest.approx(0.05)
    prose = pv.claim_prose(verdicts.reset_index())
    assert prose["objects_verdict"] == "holds on average only" and prose["objects_n"] == "7"
    assert prose["objects_worst"] == "0.12" and prose["objects_least"] == "0.2"
    assert prose["shapes_imp"] == "90.0%" and prose["holds_where"] == "MultiShapes"


def test_claim_table_errors_name_the_setting():
    with pytest.raises(ValueError, match="'novel scenes' has no row for 'tkml_ap_u'"):
        pv.claim_table({"novel scenes": TABLES["novel scenes"].iloc[:1]})
    two_k = pd.concat([TABLES["novel scenes"], TABLES["novel scenes"].assign(k=2)])
    with pytest.raises(ValueError, match="several k values"):
        pv.claim_table({"novel scenes": two_k})
    with pytest.raises(ValueError, match="needs the columns"):
        pv.claim_table({"x": TABLES["novel scenes"].drop(columns="pert_l2_255")})
    with pytest.raises(ValueError, match="tables is empty"):
        pv.claim_table({})


# ---------------------------------------------------------------------------------- the mechanism
def _records(rows, method="tkmia", k=2):
    """Run-like records: (clean scores, labels, specified, success, imperceptible) per image."""
    out = []
    for i, (scores, labels, specified, success, imperceptible) in enumerate(rows):
        out.append({"sample": i, "method": method, "k": k, "eligible": True, "success": success,
                    "imperceptible": imperceptible, "clean_scores": list(map(float, scores)),
                    "adv_scores": list(map(float, scores)),
                    "labels": labels, "specified": specified})
    return pd.DataFrame(out)


MECH = {
    "a": _records([
        ([5, 4, 3, 2, 1, 0], [0, 2, 3], [0], True, True),       # spare 2 (rank 3): just below, ready
        ([5, 4, 3, 2, 1, 0], [0, 1, 5], [0], True, False),      # spare 5 (rank 6): 4 below, not ready
        ([5, 4, 3, 2, 1, 0], [0, 1, 3, 4], [0, 1], False, False),  # spare 3 (rank 4): 2 below, ready (|S| 2)
    ]),
    "b": pd.concat([_records([([0, 1, 2, 3, 4, 5], [5, 4, 0], [5], True, True)]),
                    _records([([0, 1, 2, 3, 4, 5], [5, 4, 0], [5], True, True)], method="tkml_ap_u")]),
}


def test_mechanism_frame_reads_each_image():
    frame = pv.mechanism_frame(MECH)
    assert frame["setting"].tolist() == ["a", "a", "a", "b"]  # only TkMIA's rows
    assert frame["spare_rank"].tolist() == [3.0, 6.0, 4.0, 6.0]
    assert frame["below"].tolist() == [1.0, 4.0, 2.0, 4.0]
    assert frame["ready"].tolist() == [True, False, True, False]
    assert frame["specified"].tolist() == [1, 1, 2, 1]
    assert frame["outcome"].tolist() == ["imperceptible success", "success, measures moved", "failed",
                                         "imperceptible success"]


def test_mechanism_summary_table_and_prose():
    frame = pv.mechanism_frame(MECH)
    summary = pv.mechanism_summary(frame).set_index("setting")
    assert summary.loc["a", "n"] == 3 and summary.loc["a", "ready"] == pytest.approx(2 / 3)
    assert summary.loc["a", "just_below"] == pytest.approx(1 / 3)
    assert summary.loc["a", "imperceptible_if_ready"] == pytest.approx(0.5)
    assert summary.loc["a", "imperceptible_if_not"] == pytest.approx(0.0)
    assert math.isnan(summary.loc["b", "imperceptible_if_ready"])  # no ready image in b
    table = pv.mechanism_table(frame)
    assert table.groupby("setting")["share"].sum().tolist() == pytest.approx([1.0, 1.0])
    shares = table[["imperceptible", "moved", "failed"]].sum(axis=1)
    assert shares.tolist() == pytest.approx([1.0] * len(table))
    assert table[table["setting"] == "a"]["places below top-k"].tolist() == ["1", "2", "≥ 4"]
    prose = pv.mechanism_prose(summary.reset_index())
    assert prose["a_ready"] == "66.7%" and prose["b_imp_ready"] == "–"
    assert (prose["a_imp_ready"], prose["a_imp_not"]) == ("50.0%", "0%")
    assert prose["word"] == "in every setting that can be judged (a); b cannot be judged"


def _mech_summary(pairs):
    return pd.DataFrame([{"setting": s, "ready": 0.5, "just_below": 0.25, "imperceptible_if_ready": a,
                          "imperceptible_if_not": b} for s, (a, b) in pairs.items()])


def test_mechanism_prose_judges_each_setting():
    word = lambda pairs: pv.mechanism_prose(_mech_summary(pairs))["word"]  # noqa: E731
    assert word({"x": (0.9, 0.2), "y": (0.5, 0.3)}) == "in every setting"
    assert word({"x": (0.9, 0.2), "y": (0.35, 0.3)}) == "in x only"
    assert word({"x": (0.2, 0.2), "y": (0.1, 0.3)}) == "in no setting"
    assert word({"x": (float("nan"), 0.2)}).startswith("in no setting that can be judged")
    with pytest.raises(ValueError, match="summary is empty"):
        pv.mechanism_prose(_mech_summary({}).reindex(columns=["setting", "ready", "just_below",
                                                              "imperceptible_if_ready",
                                                              "imperceptible_if_not"]))


def test_mechanism_frame_errors():
    with pytest.raises(ValueError, match="no eligible image attacked by 'kfool'"):
        pv.mechanism_frame(MECH, method="kfool")
    with pytest.raises(ValueError, match="needs the columns"):
        pv.mechanism_frame({"a": MECH["a"].drop(columns="clean_scores")})
    mixed = pd.concat([MECH["a"], MECH["a"].assign(k=3)])
    with pytest.raises(ValueError, match="mix k values"):
        pv.mechanism_frame({"a": mixed})


@pytest.mark.parametrize("below, label",
                         [(1, "1"), (3.0, "3"), (4, "≥ 4"), (9, "≥ 4"), (float("nan"), "none")])
def test_position_label(below, label):
    assert pv.position_label(below) == label


@pytest.mark.parametrize("below, cap, match", [(0, 4, "below=0"), (1.5, 4, "below=1.5"), (1, 1, "cap=1")])
def test_position_label_errors(below, cap, match):
    with pytest.raises(ValueError, match=match):
        pv.position_label(below, cap)


# ---------------------------------------------------------------------------------- data and victims
def test_data_prose_counts_the_source_table():
    sources = pd.DataFrame([
        {"class": "bird", "train cut-outs": 10, "train objects": 8, "test cut-outs": 5, "test objects": 4},
        {"class": "fish", "train cut-outs": 7, "train objects": 6, "test cut-outs": 3, "test objects": 2},
        {"class": "ant", "train cut-outs": 0, "train objects": 0, "test cut-outs": 2, "test objects": 2},
        {"class": "background: Indoors", "train cut-outs": 9, "train objects": 9, "test cut-outs": 6,
         "test objects": 6},
    ])
    assert pv.data_prose(sources) == {
        "classes": "3", "train_cutouts": "17", "test_cutouts": "10", "train_objects": "14",
        "test_objects": "8",
        "fewest_test_objects": "2 (ant, fish)", "train_backgrounds": "9", "test_backgrounds": "6"}
    with pytest.raises(ValueError, match="needs the columns"):
        pv.data_prose(sources.drop(columns="test objects"))


def _victim_frame(objects=0.55, scenes=0.8, scratch=0.25):
    return pd.DataFrame({"victim": list(pv.VICTIMS), "test mAP": [objects, scenes, scratch],
                         "P@3": [0.5, 0.7, 0.2], "training seconds": [50.0, 40.0, 200.0]})


def test_victims_prose_words_follow_the_numbers():
    prose = pv.victims_prose(_victim_frame(), shapes_map=0.98)
    assert (prose["objects_map"], prose["scratch_map"], prose["shapes_map"]) == ("0.55", "0.25", "0.98")
    assert (prose["pretraining_gain"], prose["pretraining_word"]) == ("+0.3", "raises")
    assert (prose["aim_word"], prose["aim"], prose["scenes_gain"]) == ("stays below", "0.65", "+0.25")
    assert pv.victims_prose(_victim_frame(objects=0.7))["aim_word"] == "reaches"
    assert pv.victims_prose(_victim_frame(objects=0.27))["pretraining_word"] == "barely changes"
    assert pv.victims_prose(_victim_frame(objects=0.1))["pretraining_word"] == "lowers"
    assert pv.victims_prose(_victim_frame())["shapes_map"] == "–"
    assert prose["closer"] == "the novel-objects victim" and prose["real_map"] == "0.6"
    assert pv.victims_prose(_victim_frame(objects=0.1), shapes_map=0.9)["closer"] == "the MultiShapes victim"
    with pytest.raises(ValueError, match="missing"):
        pv.victims_prose(_victim_frame().iloc[:2])


def _cards():
    def card(ap):
        return {"k": 3, "per_class": pd.DataFrame({"class": ["bird", "fish"], "AP": ap, "positives": [4, 5],
                                                   "P@3 share": [0.5, 0.6]})}
    return {"novel objects": card([0.4, 0.6]), "novel scenes": card([0.8, 0.9]),
            "from scratch": card([0.2, 0.1])}


def test_per_class_frame_and_table():
    frame = pv.per_class_frame(_cards())
    assert list(frame.columns) == ["victim", "class", "AP", "positives", "P@k share"]
    assert len(frame) == 6
    wide = pv.per_class_table(frame)
    assert list(wide.columns) == ["class", "AP (novel objects)", "AP (novel scenes)", "AP (from scratch)"]
    assert wide.set_index("class").loc["fish", "AP (from scratch)"] == 0.1
    with pytest.raises(ValueError, match="cards is empty"):
        pv.per_class_frame({})


def test_photos_profiles_refuses_other_datasets():
    with pytest.raises(ValueError, match="photos_profiles needs a photos profile"):
        pv.photos_profiles("tiny")
    with pytest.raises(ValueError, match="scratch_epochs=0"):
        pv.photos_profiles("photos", scratch_epochs=0)
    tiny = pv.photos_profiles("photos_tiny", scratch_epochs=2)
    assert list(tiny) == list(pv.VICTIMS)
    assert tiny["novel scenes"].dataset.setting == "novel_scenes"
    assert (tiny["from scratch"].model.weights, tiny["from scratch"].train.epochs) == (None, 2)


def test_reference_records_needs_tkmia_global_records():
    with pytest.raises(ValueError, match="no TkMIA global record"):
        pv.reference_records(MECH["b"][MECH["b"]["method"] != "tkmia"].assign(scheme="global"), "photos_tiny")


def test_victim_runs_needs_a_method_and_a_positive_n():
    with pytest.raises(ValueError, match="n_samples=0"):
        pv.victim_runs(pv.photos_profiles("photos_tiny")["novel scenes"], torch.nn.Identity(), n_samples=0)
    with pytest.raises(ValueError, match="methods is empty"):
        pv.victim_runs(pv.photos_profiles("photos_tiny")["novel scenes"], torch.nn.Identity(), methods=())


# ---------------------------------------------------------------------------------- figures
def _legible(fig):
    assert theme.panels_per_row(fig) <= theme.MAX_COLUMNS
    assert theme.smallest_font_px(fig) >= theme.MIN_FONT_PX, sorted(set(theme.figure_fonts(fig)))[:3]
    assert fig.dpi == theme.DPI


def test_figures_are_legible_and_show_their_data():
    images = torch.rand(5, 3, 16, 16)
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0]])
    fig = photo_plots.plot_scenes(images, labels, ["bird", "fish", "tool"])
    _legible(fig)
    assert fig.axes[0].get_xlabel() == "bird, tool" and fig.axes[3].get_xlabel() == "(no label)"
    _legible(photo_plots.plot_victims_ap(pv.per_class_frame(_cards())))
    fig = photo_plots.plot_claim(pv.claim_table(TABLES))
    _legible(fig)
    assert [ax.get_title() for ax in fig.axes][:2] == ["success", "imperceptible success"]
    frame = pv.mechanism_frame(MECH)
    fig = photo_plots.plot_mechanism(frame, cap=3)
    _legible(fig)
    heights = [sum(p.get_height() for p in ax.patches) for ax in fig.axes if ax.patches]
    assert heights == [3, 1]  # every attacked image is one unit of a bar


def test_figures_name_bad_inputs():
    with pytest.raises(ValueError, match="labels must be"):
        photo_plots.plot_scenes(torch.rand(2, 3, 8, 8), torch.zeros(2, 4), ["a", "b", "c"])
    with pytest.raises(ValueError, match="images must be"):
        photo_plots.plot_scenes(torch.rand(2, 8, 8), torch.zeros(2, 3), ["a", "b", "c"])
    with pytest.raises(ValueError, match="titles has 1 entries"):
        photo_plots.plot_scenes(torch.rand(2, 3, 8, 8), torch.zeros(2, 3), ["a", "b", "c"], titles=["x"])
    with pytest.raises(ValueError, match="needs the columns"):
        photo_plots.plot_claim(pd.DataFrame({"setting": ["a"]}))
    with pytest.raises(ValueError, match="cap=1"):
        photo_plots.plot_mechanism(pv.mechanism_frame(MECH), cap=1)
    with pytest.raises(ValueError, match="empty"):
        photo_plots.plot_victims_ap(pd.DataFrame({"victim": [], "class": [], "AP": []}))
