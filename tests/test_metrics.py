"""The measures against slow per-sample definitions written from the paper's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from tkmia import metrics

# ----------------------------------------------------------------------------- slow oracles


def slow_ranking(row: list[float]) -> list[int]:
    """Descending score, lower index first among ties (the documented rule)."""
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


def slow_precision(row, truth, k):
    top = slow_ranking(row)[:k]
    return sum(truth[j] for j in top) / k


def slow_map(row, truth, k):
    order = slow_ranking(row)
    n_true = sum(truth)
    if n_true == 0:
        return 0.0
    total = 0.0
    for j in range(1, k + 1):
        if truth[order[j - 1]]:
            total += slow_precision(row, truth, j)
    return total / min(n_true, k)


def slow_ndcg(row, truth, k):
    order = slow_ranking(row)
    n_true = sum(truth)
    if n_true == 0:
        return 0.0
    dcg = sum(truth[order[j - 1]] / math.log2(j + 1) for j in range(1, k + 1))
    idcg = sum(1 / math.log2(j + 1) for j in range(1, min(n_true, k) + 1))
    return dcg / idcg


def slow_accuracy(row, truth, k):
    top = set(slow_ranking(row)[:k])
    true_set = {j for j, t in enumerate(truth) if t}
    return float(true_set <= top) if k > len(true_set) else float(top <= true_set)


SLOW = {
    "precision_at_k": slow_precision,
    "map_at_k": slow_map,
    "ndcg_at_k": slow_ndcg,
    "topk_accuracy": slow_accuracy,
}


def random_case(seed: int, n: int, c: int, ties: bool):
    gen = torch.Generator().manual_seed(seed)
    if ties:  # few distinct values: many ties
        scores = torch.randint(0, 4, (n, c), generator=gen).float()
    else:
        scores = torch.randn(n, c, generator=gen)
    labels = (torch.rand(n, c, generator=gen) < 0.35).float()
    labels[0] = 0  # a sample with no true label
    labels[1] = 0
    labels[1, 0] = 1  # fewer true labels than k
    return scores, labels


# ----------------------------------------------------------------------------- oracle tests


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("c,k", [(6, 1), (6, 3), (6, 5), (20, 1), (20, 19), (80, 3)])
@pytest.mark.parametrize("name", list(SLOW))
def test_measure_matches_slow_definition(name, c, k, ties):
    scores, labels = random_case(seed=c * 100 + k, n=40, c=c, ties=ties)
    fast = getattr(metrics, name)(scores, labels, k)
    slow = [SLOW[name](s.tolist(), [int(v) for v in t.tolist()], k) for s, t in zip(scores, labels)]
    assert fast.shape == (40,)
    torch.testing.assert_close(fast, torch.tensor(slow, dtype=fast.dtype), atol=1e-6, rtol=0)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_measures_dict_equals_individual_functions(k):
    scores, labels = random_case(seed=3, n=30, c=10, ties=True)
    together = metrics.measures(scores, labels, k)
    assert set(together) == set(metrics.MEASURES)
    for name, value in together.items():
        torch.testing.assert_close(value, getattr(metrics, name)(scores, labels, k))


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_ndcg_matches_sklearn_on_tie_free_scores(k):
    scores, labels = random_case(seed=k, n=50, c=10, ties=False)
    keep = labels.sum(1) > 0  # sklearn scores an all-zero row differently; ours is 0 by definition
    ours = metrics.ndcg_at_k(scores, labels, k)[keep]
    # sklearn's ideal DCG uses all |Y| relevant labels up to rank k: min(|Y|, k), as ours.
    theirs = [ndcg_score(t[None].numpy(), s[None].numpy(), k=k) for s, t in zip(scores[keep], labels[keep])]
    np.testing.assert_allclose(ours.numpy(), np.array(theirs), atol=1e-6)


def test_topk_indices_tie_rule_lower_index_first():
    scores = torch.tensor([[0.5, 0.9, 0.9, 0.1, 0.9]])
    assert metrics.topk_indices(scores, 3).tolist() == [[1, 2, 4]]
    assert metrics.ranks(scores).tolist() == [[4, 1, 2, 5, 3]]
    assert metrics.topk_mask(scores, 2).tolist() == [[False, True, True, False, False]]


def test_delta_n_counts_specified_labels_pushed_out():
    clean = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    adv = torch.tensor([[1.0, 4.0, 3.0, 2.0, 5.0]])  # label 0 leaves the top-2, label 4 enters
    spec = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    assert metrics.delta_n(clean, adv, spec, 2).tolist() == [1]
    assert metrics.delta_n(adv, clean, spec, 2).tolist() == [-1]
    assert metrics.delta_n(clean, adv, spec, 2).dtype == torch.long


def test_worked_example_values():
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    assert metrics.precision_at_k(scores, labels, 2).item() == pytest.approx(0.5)
    # ranks 1..3 relevant? 1, 0, 1 -> (1/1 + 2/3) / min(3, 3)
    assert metrics.map_at_k(scores, labels, 3).item() == pytest.approx((1 + 2 / 3) / 3)
    expected = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert metrics.ndcg_at_k(scores, labels, 3).item() == pytest.approx(expected)
    assert metrics.topk_accuracy(scores, labels, 2).item() == 0.0  # T_2 = {0, 1} ⊄ Y


# ----------------------------------------------------------------------------- properties


@st.composite
def score_label_cases(draw):
    c = draw(st.integers(2, 12))
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, c))
    values = st.integers(-3, 3).map(float)  # integer scores: ties are common
    scores = torch.tensor(draw(st.lists(st.lists(values, min_size=c, max_size=c), min_size=n, max_size=n)))
    labels = torch.tensor(
        draw(st.lists(st.lists(st.integers(0, 1), min_size=c, max_size=c), min_size=n, max_size=n))
    ).float()
    return scores, labels, k


@settings(max_examples=150, deadline=None)
@given(score_label_cases())
def test_measures_match_slow_definitions_property(case):
    scores, labels, k = case
    for name, slow in SLOW.items():
        fast = getattr(metrics, name)(scores, labels, k)
        expected = [slow(s.tolist(), [int(v) for v in t.tolist()], k) for s, t in zip(scores, labels)]
        torch.testing.assert_close(fast, torch.tensor(expected), atol=1e-6, rtol=0)


@settings(max_examples=100, deadline=None)
@given(score_label_cases(), st.integers(0, 2**16))
def test_measures_invariant_to_rank_preserving_transforms(case, seed):
    """A strictly increasing map of the scores keeps the ranking, hence every measure."""
    scores, labels, k = case
    gen = torch.Generator().manual_seed(seed)
    scale = float(torch.rand(1, generator=gen)) * 3 + 0.1
    shift = float(torch.randn(1, generator=gen))
    transformed = torch.exp(scores * scale) + shift
    for name in SLOW:
        f = getattr(metrics, name)
        torch.testing.assert_close(f(scores, labels, k), f(transformed, labels, k))


@settings(max_examples=100, deadline=None)
@given(score_label_cases(), st.integers(0, 2**16))
def test_measures_equivariant_to_label_permutations(case, seed):
    """Permuting the label columns (scores and labels alike) keeps every measure on tie-free scores."""
    scores, labels, k = case
    scores = scores + torch.arange(scores.shape[1]) * 1e-3  # break ties (the tie rule is index-based)
    perm = torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(seed))
    for name in SLOW:
        f = getattr(metrics, name)
        torch.testing.assert_close(f(scores, labels, k), f(scores[:, perm], labels[:, perm], k))


@settings(max_examples=100, deadline=None)
@given(score_label_cases())
def test_measure_ranges(case):
    scores, labels, k = case
    for name in SLOW:
        value = getattr(metrics, name)(scores, labels, k)
        assert ((value >= 0) & (value <= 1 + 1e-6)).all()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.precision_at_k(torch.zeros(2, 4), torch.zeros(2, 4), 0), "k must be in"),
        (lambda: metrics.precision_at_k(torch.zeros(2, 4), torch.zeros(2, 4), 5), "k must be in"),
        (lambda: metrics.precision_at_k(torch.zeros(2, 4), torch.zeros(2, 4), 1.5), "k must be an int"),
        (lambda: metrics.map_at_k(torch.zeros(2, 4), torch.zeros(2, 3), 1), "labels must have the shape"),
        (lambda: metrics.ndcg_at_k(torch.zeros(2, 4), torch.full((2, 4), 0.5), 1), "only 0 and 1"),
        (lambda: metrics.topk_accuracy(torch.zeros(4), torch.zeros(4), 1), r"shape \(N, C\)"),
        (lambda: metrics.topk_indices([[1.0, 2.0]], 1), "must be a torch.Tensor"),
        (lambda: metrics.delta_n(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, 4), 1), "adv_scores"),
    ],
)
def test_bad_input_raises_named_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_measures_on_cuda_match_cpu():
    scores, labels = random_case(seed=0, n=64, c=20, ties=True)
    for name in SLOW:
        f = getattr(metrics, name)
        torch.testing.assert_close(f(scores.cuda(), labels.cuda(), 3).cpu(), f(scores, labels, 3))


@pytest.mark.parametrize("name", ["ranking", "topk_indices", "measures", "precision_at_k", "delta_n"])
def test_nan_scores_are_an_error_not_ranked_first(name):
    """A NaN score used to rank first (descending sort puts NaN on top); now it is refused."""
    scores = torch.tensor([[0.5, float("nan"), 0.1], [0.3, 0.2, 0.1]])
    labels = torch.tensor([[1.0, 0, 1], [1, 0, 0]])
    calls = {
        "ranking": lambda: metrics.ranking(scores),
        "topk_indices": lambda: metrics.topk_indices(scores, 1),
        "measures": lambda: metrics.measures(scores, labels, 2),
        "precision_at_k": lambda: metrics.precision_at_k(scores, labels, 2),
        "delta_n": lambda: metrics.delta_n(scores.nan_to_num(), scores, labels, 1),
    }
    with pytest.raises(ValueError, match=r"must not contain NaN.*samples \[0\] of 2"):
        calls[name]()


def test_numpy_integer_k_is_accepted_and_float_k_is_not():
    scores = torch.tensor([[0.5, 0.4, 0.1]])
    labels = torch.tensor([[1.0, 0, 1]])
    for k in (np.int64(2), np.int32(2), torch.tensor(2), np.array(2)):
        expected = metrics.precision_at_k(scores, labels, 2)
        assert torch.equal(metrics.precision_at_k(scores, labels, k), expected)
    for k in (2.0, np.float64(2.0), True):
        with pytest.raises(TypeError, match="k must be an int"):
            metrics.precision_at_k(scores, labels, k)


def test_measures_unchanged_watches_the_three_top_k_measures():
    from tkmia.metrics import WATCHED_MEASURES, measures_unchanged

    labels = torch.tensor([[1.0, 1, 0, 1, 0]] * 3)
    clean = torch.tensor([[4.0, 3, 2, 1, 0]] * 3)
    # row 0: a true label swaps in for a true label; row 1: a false label enters; row 2: reordered top
    adv = torch.tensor([[0.0, 3, 2, 5, 1], [0.0, 3, 2, 1, 5], [3.0, 4, 2, 1, 0]])
    before, after = metrics.measures(clean, labels, 2), metrics.measures(adv, labels, 2)
    assert WATCHED_MEASURES == ("precision_at_k", "map_at_k", "ndcg_at_k")
    assert measures_unchanged(before, after).tolist() == [True, False, True]
