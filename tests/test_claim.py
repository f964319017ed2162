"""The paper's main claim: one rule (tkmia.report.claim_verdict), and claim_frame that applies it per
(scheme, k) of a summary table; every chapter that gives a verdict uses them."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tkmia.report import CLAIM_MAJORITY, CLAIM_VERDICTS, claim_frame, claim_verdict


def test_claim_verdict_examples():
    assert claim_verdict(0.0, 0.2, 1.0, 0.9) == "holds"
    assert claim_verdict(0.05, 0.2, 1.0, 0.3) == "holds on average only"
    assert claim_verdict(0.3, 0.2, 1.0, 0.9) == "does not hold"
    assert claim_verdict(0.2, 0.2, 1.0, 0.9) == "does not hold"  # not smaller: does not hold
    assert claim_verdict(0.0, 0.2, 0.0, 0.0) == "cannot be judged"
    assert claim_verdict(0.0, 0.2, float("nan"), float("nan")) == "cannot be judged"
    assert claim_verdict(0.0, 0.2, 1.0, 0.5, majority=0.5) == "holds"  # the majority is inclusive


fraction = st.floats(0, 1)
size = st.floats(0, 2)


@given(size, size, st.floats(0.001, 1), fraction, st.floats(0.01, 1))
def test_claim_verdict_properties(worst, least, success, imperceptible, majority):
    word = claim_verdict(worst, least, success, imperceptible, majority)
    assert word in ("holds", "holds on average only", "does not hold")
    assert (word == "does not hold") == (worst >= least)
    if word != "does not hold":
        assert (word == "holds") == (imperceptible >= majority)
    # a larger baseline change can only help the claim; a larger TkMIA change only hurt it
    order = ["does not hold", "holds on average only", "holds"].index
    assert order(claim_verdict(worst, least + 1, success, imperceptible, majority)) >= order(word)
    assert order(claim_verdict(worst + 1, least, success, imperceptible, majority)) <= order(word)


@pytest.mark.parametrize("args, match", [
    ((-0.1, 0.2, 1.0, 0.5), "tkmia_worst=-0.1"), ((0.1, float("nan"), 1.0, 0.5), "baselines_least=nan"),
    ((0.1, 0.2, 1.5, 0.5), "success_rate=1.5"), ((0.1, 0.2, 1.0, -0.5), "imperceptible_rate=-0.5"),
    ((0.1, 0.2, 1.0, 0.5, 0.0), "majority=0.0"), (("a", 0.2, 1.0, 0.5), "tkmia_worst='a'"),
])
def test_claim_verdict_names_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        claim_verdict(*args)


def _table(rows):
    """A summarize-like table from (scheme, k, method, success, imperceptible, |Δ| of the 3 measures)."""
    return pd.DataFrame([{"scheme": s, "k": k, "method": m, "success_rate": su, "imperceptible_rate": im,
                          "delta_precision_at_k": -d, "delta_map_at_k": -d / 2, "delta_ndcg_at_k": -d / 3}
                         for s, k, m, su, im, d in rows])


def test_claim_frame_applies_the_rule_per_k_against_every_baseline():
    table = _table([
        ("global", 2, "tkmia", 1.0, 0.8, 0.01), ("global", 2, "kfool", 1.0, 0.0, 0.3),
        ("global", 2, "ml_cw_u", 1.0, 0.0, 0.2),
        ("global", 3, "tkmia", 1.0, 0.3, 0.01), ("global", 3, "kfool", 1.0, 0.0, 0.3),  # moves on most
        ("global", 4, "tkmia", 1.0, 0.9, 0.2), ("global", 4, "kfool", 1.0, 0.0, 0.3),  # kfool's NDCG: 0.1
        ("global", 5, "tkmia", 0.0, 0.0, 0.0), ("global", 5, "kfool", 1.0, 0.0, 0.3),
    ])
    frame = claim_frame(table).set_index("k")
    assert frame.loc[2, "tkmia"] == pytest.approx(0.01)
    assert frame.loc[2, "baselines"] == pytest.approx(0.2 / 3)  # ML-CW-U's ΔNDCG@k
    assert list(frame["verdict"]) == ["holds", "holds on average only", "does not hold", "cannot be judged"]
    assert list(frame["holds"]) == [True, False, False, False]
    assert set(frame["verdict"]) <= set(CLAIM_VERDICTS)
    stricter = claim_frame(table, majority=0.85).set_index("k")
    assert stricter.loc[2, "verdict"] == "holds on average only"
    with pytest.raises(ValueError, match="TkMIA and at least one baseline at k = 3"):
        claim_frame(table[~((table["k"] == 3) & (table["method"] == "kfool"))])
    with pytest.raises(ValueError, match="imperceptible_rate"):
        claim_frame(table.drop(columns="imperceptible_rate"))


def test_the_book_states_the_rule_it_applies():
    assert CLAIM_MAJORITY == 0.5
    assert claim_verdict(0.0, 0.1, 1.0, CLAIM_MAJORITY) == "holds"
    assert claim_verdict(0.0, 0.1, 1.0, CLAIM_MAJORITY - 1e-9) == "holds on average only"
