"""Figures and tables of the theory chapters (tkmia.plots.theory) on small synthetic inputs."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tkmia import plots  # noqa: E402
from tkmia.book.chapters import examples  # noqa: E402
from tkmia.relaxation import average_top_k, kth_largest  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_atk_line_frame_bounds_the_kth_largest_and_matches_a_hand_value():
    frame = plots.atk_line_frame([3.0, 1.0, 0.0, -1.0], [-2.0, 1.0, 0.5, 0.0], 2, [0.0, 0.5, 1.0, 1.5])
    exact = frame[frame.quantity == "2nd largest"].value.to_numpy()
    bound = frame[frame.quantity.str.startswith("ATk")].value.to_numpy()
    assert len(exact) == len(bound) == 4
    assert (bound >= exact - 1e-12).all()
    assert exact[0] == 1.0 and bound[0] == 2.0  # v = (3, 1, 0, -1): 2nd largest 1, mean of top two 2
    assert isinstance(plots.plot_atk_vs_kth(frame), Figure)


def test_atk_line_frame_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        plots.atk_line_frame([1.0, 2.0], [1.0, 2.0, 3.0], 1, [0.0])


def test_variational_frame_minimum_is_atk_at_the_mth_largest():
    v = torch.tensor([2.0, -1.0, 0.5, 4.0, 1.0])
    lam = torch.linspace(-3, 6, 901).tolist()
    frame = plots.variational_frame(v, 2, lam)
    assert frame.attrs["atk"] == pytest.approx(3.0)
    assert frame.attrs["minimiser"] == pytest.approx(2.0)
    assert frame.value.min() == pytest.approx(3.0, abs=1e-9)
    assert (frame.value >= 3.0 - 1e-9).all()
    at_star = frame.loc[(frame["lambda"] - 2.0).abs().idxmin(), "value"]
    assert at_star == pytest.approx(3.0, abs=1e-9)
    assert isinstance(plots.plot_variational(frame, v), Figure)


def test_midpoint_convexity_gap_separates_atk_from_the_kth_largest():
    assert plots.midpoint_convexity_gap(lambda x: average_top_k(x, 3), 8) <= 1e-12
    assert plots.midpoint_convexity_gap(lambda x: kth_largest(x, 3), 8) > 0.1
    with pytest.raises(ValueError, match="dim"):
        plots.midpoint_convexity_gap(lambda x: x.sum(-1), 0)


def _history():
    # 3 recorded steps, 2 samples, 4 labels; sample 1 freezes after step 1 (NaN afterwards)
    scores = torch.tensor([
        [[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]],
        [[3.0, 4.0, 2.0, 1.0], [1.0, 2.0, 4.0, 3.0]],
        [[1.0, 4.0, 3.0, 2.0], [math.nan] * 4],
    ])
    loss = torch.tensor([[2.0, 1.0], [1.0, 0.5], [0.2, math.nan]])
    return {"loss": loss, "scores": scores}


def test_rank_history_frame_ranks_and_drops_frozen_steps():
    h = _history()
    frame = plots.rank_history_frame(h, sample=0, final_scores=torch.tensor([0.0, 4.0, 3.0, 2.0]))
    assert list(frame.columns) == ["iteration", "label", "score", "rank"]
    assert sorted(frame.iteration.unique()) == [0, 1, 2, 3]
    label0 = frame[frame.label == 0].set_index("iteration")["rank"].to_dict()
    assert label0 == {0: 1, 1: 2, 2: 4, 3: 4}
    frozen = plots.rank_history_frame(h, sample=1)
    assert sorted(frozen.iteration.unique()) == [0, 1]
    assert set(frozen.groupby("iteration")["rank"].apply(lambda r: tuple(sorted(r)))) == {(1, 2, 3, 4)}
    fig = plots.plot_rank_history(frame, specified=[0], k=2, labels=[0, 1, 2], classes=list("abcd"))
    assert isinstance(fig, Figure)
    assert any("a (specified)" == t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_history_plots_need_a_recorded_history():
    with pytest.raises(ValueError, match="record_history"):
        plots.plot_loss_history({})
    with pytest.raises(ValueError, match="record_history"):
        plots.rank_history_frame({})
    assert isinstance(plots.plot_loss_history(_history(), names=["x", "y"]), Figure)
    fig = plots.plot_lambda_modes({"closed_form": _history(), "gradient": _history()})
    assert isinstance(fig, Figure) and len(fig.axes) == 2


def test_topk_before_after_marks_specified_true_and_false_labels():
    table = plots.topk_before_after(torch.tensor([3.0, 2.0, 1.0, 0.0]), torch.tensor([0.0, 2.0, 1.0, 3.0]),
                                    labels=[0, 1, 2], specified=[0], k=2, classes=list("abcd"))
    assert table.index.tolist() == [1, 2]
    assert table["clean"].tolist() == ["a (S)", "b (true)"]
    assert table["adversarial"].tolist() == ["d (false)", "b (true)"]


def test_measure_pairs_frame_keeps_eligible_samples_only():
    records = pd.DataFrame({
        "sample": [0, 1], "eligible": [True, False],
        **{f"clean_{m}": [1.0, 1.0] for m in ("topk_accuracy", "precision_at_k", "map_at_k", "ndcg_at_k")},
        **{f"adv_{m}": [0.5, 0.0] for m in ("topk_accuracy", "precision_at_k", "map_at_k", "ndcg_at_k")},
    })
    frame = plots.measure_pairs_frame(records)
    assert len(frame) == 4 * 2
    assert set(frame["sample"]) == {0}
    assert frame.groupby("image")["value"].mean().to_dict() == {"adversarial": 0.5, "clean": 1.0}
    assert isinstance(plots.plot_measure_collapse(frame), Figure)


def test_plot_perturbation_checks_shapes():
    clean = torch.zeros(3, 4, 4)
    adv = clean.clone()
    adv[0, 0, 0] = 0.1
    fig = plots.plot_perturbation(clean, adv)
    assert isinstance(fig, Figure) and "×5" in fig.axes[2].get_title()
    with pytest.raises(ValueError, match="images"):
        plots.plot_perturbation(clean, torch.zeros(3, 5, 5))


@pytest.mark.slow
def test_attack_examples_records_a_history_on_the_tiny_victim(tiny_home):
    ex = examples.attack_examples("tiny", n=2, lambda_mode="gradient")
    assert len(ex.samples) == 2 and ex.images.shape[0] == 2
    assert ex.result.history["loss"].shape[1] == 2
    assert ex.result.eligible.all()
    assert len(ex.classes) == ex.result.labels.shape[1]
