"""The one summary of attacked samples (tkmia.report.group_summary) and its users: the paper's table,
the open questions' comparison, the classroom's selection comparison and the victims' verdicts."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tkmia.book import classroom
from tkmia.book.chapters import victim_questions as qv
from tkmia.metrics import MEASURES
from tkmia.report import OVER_SUCCESSFUL, group_summary, result_samples
from tkmia.selection import GlobalSelection, RandomSelection


def _slow_summary(samples: pd.DataFrame, by: list[str], columns: list[str]) -> dict[tuple, dict[str, float]]:
    """The definition, a loop over rows: per group, n eligible, rates over eligible, Pert over successful."""
    groups: dict[tuple, list[dict]] = {}
    for row in samples.to_dict("records"):
        if row["eligible"]:
            groups.setdefault(tuple(row[c] for c in by), []).append(row)

    def mean(values):
        values = list(values)
        return math.fsum(values) / len(values) if values else math.nan

    out = {}
    for key, rows in groups.items():
        won = [r for r in rows if r["success"]]
        out[key] = {"n": len(rows), "success_rate": mean(float(r["success"]) for r in rows),
                    "imperceptible_rate": mean(float(r["imperceptible"]) for r in rows),
                    **{c: mean(r[c] for r in (won if c in OVER_SUCCESSFUL else rows)) for c in columns}}
    return out


_rows = st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 2), st.booleans(), st.booleans(),
                           st.booleans(), st.floats(0, 300), st.floats(-1, 1)), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(_rows, st.booleans())
def test_group_summary_is_its_definition(rows, sort):
    samples = pd.DataFrame(rows, columns=["method", "k", "eligible", "success", "imperceptible",
                                          "pert_l2_255", "delta_map_at_k"])
    samples["success"] &= samples["eligible"]
    samples["imperceptible"] &= samples["success"]
    columns = ["pert_l2_255", "delta_map_at_k"]
    for by in (["method", "k"], ["method"], []):
        table = group_summary(samples, by, columns, sort=sort)
        expected = _slow_summary(samples, by, columns)
        assert len(table) == len(expected)
        keys = [tuple(r[c] for c in by) for r in table.to_dict("records")]
        assert keys == (sorted(expected) if sort or not by else list(expected))
        for key, row in zip(keys, table.to_dict("records")):
            for name, value in expected[key].items():
                assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), (by, key, name)


def test_group_summary_names_missing_columns():
    with pytest.raises(ValueError, match=r"lack the columns \['pert_l2_255'\]"):
        group_summary(pd.DataFrame({"eligible": [True], "success": [True], "imperceptible": [False]}),
                      (), ["pert_l2_255"])


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 8)).eval()
    with torch.no_grad():
        model[1].weight.mul_(20)
    images = torch.rand(10, 3, 6, 6)
    with torch.no_grad():
        order = model(images).argsort(1, descending=True)
    labels = torch.zeros(10, 8).scatter_(1, order[:, :4], 1.0)
    labels[7:] = torch.zeros(3, 8).scatter_(1, order[7:, :2], 1.0)  # too few labels: never eligible
    return classroom.ClassSetting(model, images, labels, torch.arange(10), 2,
                                  {"lr": 0.01, "weight_decay": 1e-4, "box": (0.0, 1.0)}, list("abcdefgh"))


def test_compare_selections_summarises_each_result_by_the_one_summary(setting):
    from tkmia.attacks import TkMIA

    selections = {"random": RandomSelection(1, 1, seed=1), "nothing": GlobalSelection([7]),
                  "global": GlobalSelection([0, 1, 2, 3, 4, 5, 6])}
    table = classroom.compare_selections(setting, selections, max_iter=30)
    assert list(table.index) == list(selections)  # the caller's order, not sorted
    attack = TkMIA(setting.model, setting.k, max_iter=30, **setting.attack_options)
    for name, selection in selections.items():
        result = attack(setting.images, setting.labels, selection, ids=setting.ids)
        row = table.loc[name]
        assert row["eligible"] == int(result.eligible.sum())
        expected = _slow_summary(result_samples(result), [], ["pert_l2_255", "iterations",
                                                              *(f"delta_{m}" for m in MEASURES)])
        if not result.eligible.any():  # a selection no image is eligible for: a row of NaN, 0 eligible
            assert row.drop("eligible").isna().all()
            continue
        for column, value in expected[()].items():
            if column != "n":
                assert row[column] == pytest.approx(value, rel=1e-9, nan_ok=True), (name, column)
    assert (table["eligible"] == 0).any() and (table["eligible"] > 0).any()  # both cases were exercised


def test_verdict_summary_averages_over_the_applicable_samples():
    verdict = {"applicable": torch.tensor([True, True, False, True]),
               "success": torch.tensor([True, False, False, True]),
               "imperceptible": torch.tensor([True, False, False, False]),
               "delta_precision_at_k": torch.tensor([0.0, -0.5, -1.0, -0.25])}
    out = qv.verdict_summary(verdict, ["delta_precision_at_k"])
    assert out == pytest.approx({"applicable": 0.75, "success_rate": 2 / 3, "imperceptible_rate": 1 / 3,
                                 "delta_precision_at_k": -0.25, "imperceptible_yield": 0.25})
    none = qv.verdict_summary({key: v[2:3] for key, v in verdict.items()}, ["delta_precision_at_k"])
    assert none["applicable"] == 0.0 and math.isnan(none["success_rate"]) and none["imperceptible_yield"] == 0
