"""Selection schemes against the paper's rules (book/reference.md), written per sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tkmia.metrics import topk_indices
from tkmia.selection import GlobalSelection, RandomSelection, Specification, make_selection


def case(seed=0, n=200, c=12, p=0.45):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=gen), (torch.rand(n, c, generator=gen) < p).float()


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_global_rule_per_sample(k):
    scores, labels = case()
    classes = [0, 2, 3, 7]
    spec = GlobalSelection(classes).select(scores, labels, k)
    for n in range(len(scores)):
        truth = {j for j in range(12) if labels[n, j]}
        s = truth & set(classes)
        top = set(topk_indices(scores[n : n + 1], k)[0].tolist())
        assert set(spec.specified[n].nonzero().flatten().tolist()) == s
        assert spec.eligible[n].item() == (bool(s & top) and len(truth) >= k + len(s))
        assert spec.required[n].item() == len(s & top)
    assert 0 < spec.eligible.sum() < len(scores)


@pytest.mark.parametrize("k,n_pert,del_n", [(2, 2, 2), (3, 2, 1), (5, 3, 2)])
def test_random_rule_per_sample(k, n_pert, del_n):
    scores, labels = case(seed=k)
    spec = RandomSelection(n_pert, del_n, seed=3).select(scores, labels, k, ids=torch.arange(200))
    for n in range(len(scores)):
        truth = {j for j in range(12) if labels[n, j]}
        top = set(topk_indices(scores[n : n + 1], k)[0].tolist())
        eligible = len(truth & top) >= n_pert and len(truth) >= k + n_pert
        assert spec.eligible[n].item() == eligible
        chosen = set(spec.specified[n].nonzero().flatten().tolist())
        if eligible:
            assert len(chosen) == n_pert and chosen <= truth & top
        else:
            assert not chosen
    assert (spec.required == del_n).all()
    assert spec.eligible.sum() > 0


def test_random_draw_depends_on_sample_id_not_batch_position():
    scores, labels = case()
    sel = RandomSelection(2, 2, seed=11)
    ids = torch.arange(100, 300)
    whole = sel.select(scores, labels, 3, ids=ids)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    shuffled = sel.select(scores[perm], labels[perm], 3, ids=ids[perm])
    assert torch.equal(shuffled.specified, whole.specified[perm])
    part = sel.select(scores[50:60], labels[50:60], 3, ids=ids[50:60])
    assert torch.equal(part.specified, whole.specified[50:60])
    other_seed = RandomSelection(2, 2, seed=12).select(scores, labels, 3, ids=ids)
    assert not torch.equal(other_seed.specified, whole.specified)


def test_numpy_arrays_and_integers_are_accepted():
    scores, labels = case()
    by_list = GlobalSelection([0, 2, 3]).select(scores, labels, 3)
    for classes in (np.array([0, 2, 3]), [np.int64(0), np.int32(2), 3], torch.tensor([0, 2, 3])):
        sel = GlobalSelection(classes)
        assert sel.classes == [0, 2, 3] and all(type(c) is int for c in sel.classes)
        assert torch.equal(sel.select(scores, labels, np.int64(3)).eligible, by_list.eligible)
    sel = RandomSelection(np.int64(2), np.int32(1), seed=np.int64(3))
    ids = np.arange(200)
    spec = sel.select(scores, labels, 3, ids=ids)
    for other in (ids.tolist(), torch.arange(200), ids.astype(np.int32)):
        assert torch.equal(sel.select(scores, labels, 3, ids=other).specified, spec.specified)


def test_random_draw_is_uniform_over_candidates():
    """One sample with 4 true labels in its top-4, drawn 4000 times: each pick rate near 1/2."""
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0]]).repeat(4000, 1)
    labels = torch.tensor([[1.0, 1, 1, 1, 1, 1, 0, 0]]).repeat(4000, 1)
    spec = RandomSelection(2, 1, seed=0).select(scores, labels, 4, ids=torch.arange(4000))
    rate = spec.specified.float().mean(0)
    assert torch.allclose(rate[:4], torch.full((4,), 0.5), atol=0.03)
    assert (rate[4:] == 0).all()


def test_success_rule():
    clean = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    spec = Specification(torch.tensor([[True, True, False, False, False]]), torch.tensor([True]),
                         torch.tensor([2]))
    one_out = torch.tensor([[1.0, 4.0, 3.0, 2.0, 5.0]])
    both_out = torch.tensor([[1.0, 0.5, 3.0, 2.0, 5.0]])
    assert not spec.success(clean, one_out, 2).item()
    assert spec.success(clean, both_out, 2).item()


def test_from_mask_uses_the_global_rule():
    """A mask row is eligible iff S ∩ T_k ≠ ∅ and |Y| ≥ k + |S|; required = |S ∩ T_k|."""
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(5, 1)
    labels = torch.tensor([[1.0, 1, 1, 1, 1, 0]]).repeat(5, 1)
    labels[3, 3:5] = 0  # |Y| = 3 < k + |S| = 2 + 2
    mask = torch.tensor([
        [1.0, 0, 1, 0, 0, 0],  # one in the top-2, one outside: eligible, required 1
        [0, 0, 0, 0, 0, 0],  # empty S
        [0, 0, 1, 1, 0, 0],  # nothing of S in the top-2: not eligible (it used to be)
        [1, 1, 0, 0, 0, 0],  # |Y| too small
        [1, 1, 0, 0, 0, 0],  # both in the top-2, |Y| = 5 ≥ 4: required 2
    ])
    spec = Specification.from_mask(mask, scores, labels, 2)
    assert spec.eligible.tolist() == [True, False, False, False, True]
    assert spec.required.tolist() == [1, 0, 0, 2, 2]
    assert torch.equal(spec.specified, mask.bool())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: RandomSelection(0, 1), "n_pert must be >= 1"),
        (lambda: RandomSelection(2, 3), "del_n must be in"),
        (lambda: RandomSelection(2.0, 1), "n_pert must be an int"),
        (lambda: RandomSelection(4, 1).select(*case(), 3), "n_pert must be <= k"),
        (lambda: GlobalSelection([]), "at least one class"),
        (lambda: GlobalSelection("012"), "sequence of class indices"),
        (lambda: GlobalSelection([0, 40]).select(*case(), 3), r"classes must be in \[0, 11\]"),
        (lambda: GlobalSelection([0]).select(*case(), 12), "k must be in"),
        (lambda: make_selection("top", classes=[0]), "scheme must be one of"),
        (lambda: GlobalSelection([0.7, 1.2]), r"classes must hold integer class indices, got 0\.7"),
        (lambda: GlobalSelection(np.array([0.0, 1.0])), "classes must hold integer class indices"),
        (lambda: GlobalSelection([True, 2]), "classes must hold integer class indices"),
        (lambda: GlobalSelection(np.array([[0, 1]])), "classes must be one-dimensional"),
        (lambda: RandomSelection(2, 1, seed=-1), "seed must be an int >= 0"),
        (lambda: RandomSelection(2, 1).select(*case(), 3), "ids is required"),
        (lambda: RandomSelection(2, 1).select(*case(), 3, ids=np.arange(5)), r"ids must have shape \(200,\)"),
        (lambda: Specification.from_mask(torch.full((200, 12), 0.5), *case(), 3),
         "specified must hold only 0 and 1"),
    ],
)
def test_bad_input_raises_named_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
