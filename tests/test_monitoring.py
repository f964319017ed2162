"""Monitors: statistics against independent implementations; thresholds keep the false-alarm rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from tkmia import monitoring


def test_average_precision_matches_sklearn_on_tie_free_scores():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(60, 12, generator=gen, dtype=torch.float64)
    labels = (torch.rand(60, 12, generator=gen) < 0.4).double()
    labels[:, 0] = 1  # every sample has a true label
    ours = monitoring.ranking_average_precision(scores, labels)
    theirs = [average_precision_score(y.numpy(), s.numpy()) for s, y in zip(scores, labels)]
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-9)


def test_topk_margin():
    scores = torch.tensor([[5.0, 1.0, 3.0, 2.5]])
    assert monitoring.topk_margin(scores, 2).item() == pytest.approx(0.5)
    assert monitoring.topk_margin(scores, 1).item() == pytest.approx(2.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5).map(float), min_size=1, max_size=60), st.floats(0, 0.5))
def test_threshold_keeps_false_alarms_at_most_alpha(values, alpha):
    tau = monitoring.threshold(np.array(values), alpha)
    assert np.mean(np.array(values) < tau) <= alpha
    larger = [v for v in np.unique(values) if v > tau]
    if larger:  # and it is the largest such threshold
        assert np.mean(np.array(values) < larger[0]) > alpha


def test_detection_table_on_a_hand_made_case():
    # two samples, C = 4, k = 1; true labels {0, 1}
    clean = [[3.0, 2.0, 1.0, 0.0], [3.0, 2.5, 1.0, 0.0]]
    rows = []
    for method, adv in [("tkmia", [[1.0, 3.0, 0.5, 0.0]] * 2), ("tkml_ap_u", [[0.0, 0.5, 3.0, 1.0]] * 2)]:
        for i in range(2):
            rows.append({"sample": i, "method": method, "k": 1, "eligible": True, "success": True,
                         "labels": [0, 1], "clean_scores": clean[i], "adv_scores": adv[i]})
    table = monitoring.detection_table(pd.DataFrame(rows), alpha=0.0)
    p_at_k = table[table.statistic == "precision_at_k"].set_index("method")
    assert (p_at_k["false_alarm"] == 0).all()
    assert p_at_k.loc["tkmia", "detection"] == 0.0  # label 1 replaced label 0: P@1 still 1
    assert p_at_k.loc["tkml_ap_u", "detection"] == 1.0  # a false label on top
    ap = table[table.statistic == "average_precision"].set_index("method")
    assert ap.loc["tkml_ap_u", "detection"] == 1.0


def test_bad_alpha():
    with pytest.raises(ValueError, match="alpha must be in"):
        monitoring.threshold(np.ones(3), 1.5)


def test_the_detection_rule_is_one_function_of_the_two_rates():
    from tkmia.monitoring import DETECTION_FACTOR, detection_excess, detects

    assert DETECTION_FACTOR == 2
    assert bool(detects(0.21, 0.1)) and not bool(detects(0.2, 0.1)) and not bool(detects(0.0, 0.0))
    assert bool(detects(0.01, 0.0)) and not bool(detects(float("nan"), 0.1))
    rates = np.array([0.0, 0.3, 0.5, np.nan])
    alarms = np.array([0.0, 0.15, 0.1, 0.1])
    assert detects(rates, alarms).tolist() == [False, False, True, False]
    excess = detection_excess(rates, alarms)
    assert np.allclose(excess[:3], [0.0, 0.0, 0.3]) and np.isnan(excess[3])
    assert ((excess > 0) == detects(rates, alarms)).all()
