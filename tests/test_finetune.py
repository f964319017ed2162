"""The photos victim card (tkmia.book.chapters.photos.victim_card) on scores given as images."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from tkmia.book.chapters.photos import victim_card


class _Scores(torch.utils.data.Dataset):
    """Images (N, C, 1, 1) that are the scores themselves; a Flatten model returns them."""

    classes = ("a", "b", "c", "d")

    def __init__(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.scores, self.labels = scores, labels

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, i: int):
        return self.scores[i][:, None, None], self.labels[i]


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(30, 4, generator=g) < 0.4).float()
    labels[:, 3] = 0  # class d has no positive image
    scores = labels * 0.8 + torch.rand(30, 4, generator=g)
    return scores, labels


def test_card_matches_sklearn_and_counts_topk_hits() -> None:
    scores, labels = _data()
    card = victim_card(nn.Flatten(), _Scores(scores, labels), k=2, batch_size=7)
    table = card["per_class"]
    assert list(table["class"]) == ["a", "b", "c", "d"]
    for c in range(3):
        expected = average_precision_score(labels[:, c].numpy(), scores[:, c].numpy())
        assert table["AP"][c] == pytest.approx(expected)
    assert table["AP"].isna().tolist() == [False, False, False, True]
    assert card["map"] == pytest.approx(table["AP"][:3].mean())
    assert table["positives"].tolist() == labels.sum(0).long().tolist()
    top = torch.topk(scores, 2, dim=1).indices
    for c in range(3):
        holding = labels[:, c] == 1
        share = (top[holding] == c).any(1).float().mean()
        assert table["P@2 share"][c] == pytest.approx(float(share))
    expected_p = (torch.gather(labels, 1, top).sum(1) / 2).mean()
    assert card["precision_at_k"] == pytest.approx(float(expected_p))
    assert (card["k"], card["n_images"]) == (2, 30)


def test_a_perfect_ranking_has_map_one() -> None:
    _, labels = _data(1)
    card = victim_card(nn.Flatten(), _Scores(labels.clone(), labels), k=1)
    assert card["map"] == pytest.approx(1.0)


@pytest.mark.parametrize("k, match", [(0, "k=0"), (5, "k=5"), (True, "k=True")])
def test_bad_k_is_named(k, match: str) -> None:
    scores, labels = _data()
    with pytest.raises(ValueError, match=match):
        victim_card(nn.Flatten(), _Scores(scores, labels), k=k)


def test_a_card_from_given_scores_is_the_card_from_the_model() -> None:
    scores, labels = _data()

    class Never(nn.Module):
        def forward(self, x):
            raise AssertionError("the card scored the images although it was given their scores")

    from_model = victim_card(nn.Flatten(), _Scores(scores, labels), k=2)
    given = victim_card(Never(), _Scores(scores, labels), k=2, scored=(scores, labels))
    assert {key: v for key, v in given.items() if key != "per_class"} == {
        key: v for key, v in from_model.items() if key != "per_class"}
    assert given["per_class"].equals(from_model["per_class"])
    with pytest.raises(ValueError, match=r"scored holds scores \(29, 4\)"):
        victim_card(Never(), _Scores(scores, labels), k=2, scored=(scores[:29], labels[:29]))
