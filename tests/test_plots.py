"""tkmia.plots: the swap table behind the measures chapter's figure."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from tkmia.metrics import MEASURES, measures, ranking
from tkmia.plots import MEASURE_NAMES, plot_swap_frame, swap_at_each_rank, swap_frame

matplotlib.use("Agg")


def _example(num_classes=8, k=3, seed=0):
    scores = torch.randn(1, num_classes, generator=torch.Generator().manual_seed(seed))
    order = ranking(scores)[0]
    labels = torch.zeros(1, num_classes)
    labels[0, order[:k]] = 1
    labels[0, order[k + 1]] = 1
    return scores, labels


def test_docstring_example():
    got = swap_at_each_rank(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]]), 2)
    assert torch.equal(got, torch.tensor([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]]))


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_false_swap_removes_the_rank_j_label_and_true_swap_keeps_every_measure(k):
    scores, labels = _example(num_classes=k + 3, k=k, seed=k)
    order = ranking(scores)[0]
    swapped = swap_at_each_rank(scores, labels, k, "false")
    for j in range(k):
        top = set(ranking(swapped[j : j + 1])[0, :k].tolist())
        assert top == set(order[:k].tolist()) - {int(order[j])} | {int(order[k])}
    got = measures(swapped, labels.expand(k, -1), k)
    assert torch.allclose(got["precision_at_k"], torch.full((k,), (k - 1) / k))
    assert (got["topk_accuracy"] == 0).all()
    # the earlier the removed label, the larger the loss of mAP@k and NDCG@k
    assert (got["map_at_k"].diff() > 0).all() and (got["ndcg_at_k"].diff() > 0).all()
    kept = measures(swap_at_each_rank(scores, labels, k, "true"), labels.expand(k, -1), k)
    clean = measures(scores, labels, k)
    for name in MEASURES:
        assert torch.equal(kept[name], clean[name].expand(k))


def test_swap_frame_is_tidy_and_plots():
    scores, labels = _example()
    frame = swap_frame(scores, labels, 3)
    assert len(frame) == 2 * len(MEASURES) * 3
    assert set(frame["measure"]) == set(MEASURE_NAMES.values())
    assert set(frame["replaced by"]) == {"a false label", "a true label"}
    figure = plot_swap_frame(frame)
    assert len(figure.axes) == 2
    matplotlib.pyplot.close(figure)


def test_errors_name_the_argument():
    scores, labels = _example()
    with pytest.raises(ValueError, match="replacement"):
        swap_at_each_rank(scores, labels, 3, "maybe")
    with pytest.raises(ValueError, match="one sample"):
        swap_at_each_rank(scores.repeat(2, 1), labels.repeat(2, 1), 3)
    with pytest.raises(ValueError, match="k must be in"):
        swap_at_each_rank(scores, labels, 8)
    with pytest.raises(ValueError, match="no true label outside"):
        only_top_true = torch.ones_like(labels).index_fill_(1, ranking(scores)[0, 3:], 0)
        swap_at_each_rank(scores, only_top_true, 3, "true")
