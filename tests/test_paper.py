"""The paper's table file: its schema, and no value without the page and table it comes from."""

from __future__ import annotations

import pandas as pd
import pytest

from tkmia import paper
from tkmia.attacks import METHODS
from tkmia.report import SUMMARY_COLUMNS, compare_with_paper


def test_file_has_the_schema_and_known_names():
    table = paper.paper_table()
    assert tuple(table.columns) == paper.PAPER_COLUMNS
    assert set(table["method"]) == set(METHODS)
    assert set(table["measure"]) == set(paper.PAPER_MEASURES)
    assert set(paper.PAPER_MEASURES) <= set(SUMMARY_COLUMNS)
    assert set(table["dataset"]) == set(paper.DATASETS)
    assert table["k"].dtype.kind == "i" and (table["k"] >= 1).all()
    assert table["value"].dtype == float
    assert not table.duplicated(["dataset", "scheme", "k", "method", "measure"]).any()


def test_no_invented_values():
    table = paper.paper_table()
    filled = table[table["value"].notna()]
    assert (filled["page"].str.strip() != "").all() and (filled["table"].str.strip() != "").all()
    empty = table[table["value"].isna()]
    assert empty["source"].str.contains("to be filled from the paper").all()
    assert table["source"].str.contains("arXiv:2309.00007").all()


def test_settings_follow_paper_md():
    table = paper.paper_table()
    settings = set(map(tuple, table[["dataset", "scheme", "k"]].drop_duplicates().values.tolist()))
    assert settings == {("voc2012", "global", 3), ("voc2012", "random", 2), ("voc2012", "random", 3),
                        ("coco2014", "global", 5), ("coco2014", "random", 5),
                        ("nuswide", "global", 3), ("nuswide", "random", 5)}
    counts = paper.filled(table)
    assert counts["rows"].sum() == len(table)


def _write(tmp_path, rows, columns=paper.PAPER_COLUMNS):
    path = tmp_path / "t.csv"
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


ROW = ["voc2012", "global", 3, "tkmia", "success_rate", "", "", "", "to be filled"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({5: "0.9"}, "without its page and table"),
        ({5: "0.9", 6: "7"}, "without its page and table"),
        ({5: "high", 6: "7", 7: "2"}, "non-numeric"),
        ({3: "pgd"}, "column 'method'"),
        ({4: "accuracy"}, "column 'measure'"),
        ({0: "imagenet"}, "column 'dataset'"),
        ({1: "targeted"}, "column 'scheme'"),
        ({2: "0"}, "k must be a positive int"),
    ],
)
def test_invalid_rows_are_rejected(tmp_path, change, message):
    row = list(ROW)
    for i, v in change.items():
        row[i] = v
    with pytest.raises(ValueError, match=message):
        paper.paper_table(_write(tmp_path, [row]))


def test_columns_and_duplicates_are_checked(tmp_path):
    with pytest.raises(ValueError, match="columns must be"):
        paper.paper_table(_write(tmp_path, [ROW[:-1]], paper.PAPER_COLUMNS[:-1]))
    with pytest.raises(ValueError, match="duplicated"):
        paper.paper_table(_write(tmp_path, [ROW, ROW]))


def test_a_sourced_value_is_read_as_float(tmp_path):
    row = list(ROW)
    row[5:8] = ["0.5", "7", "2"]
    table = paper.paper_table(_write(tmp_path, [row, ROW[:4] + ["pert_l2_255"] + ROW[5:]]))
    assert table["value"].iloc[0] == 0.5 and pd.isna(table["value"].iloc[1])
    assert paper.filled(table)["filled"].tolist() == [1]


def test_compare_with_paper_keeps_empty_values_nan():
    ours = pd.DataFrame([{"scheme": "global", "k": 3, "method": "tkmia",
                          **{c: 0.1 for c in SUMMARY_COLUMNS}}])
    both = compare_with_paper(ours, paper.paper_table(), "voc2012")
    row = both[(both["measure"] == "success_rate") & (both["method"] == "tkmia") & (both["k"] == 3)
               & (both["scheme"] == "global")]
    assert len(row) == 1 and row["ours"].iloc[0] == 0.1 and pd.isna(row["paper"].iloc[0])


def test_profiles_table_reads_the_profiles():
    table = paper.profiles_table()
    assert list(table["profile"]) == ["default", "voc2012", "coco2014", "nuswide"]
    rows = table.set_index("profile")
    assert rows.loc["coco2014", "arch"] == "resnet101" and rows.loc["coco2014", "image_size"] == 448
    assert rows.loc["voc2012", "classes"] == 20 and rows.loc["nuswide", "classes"] == 81
    assert rows.loc["coco2014", "k"] == 5 and rows.loc["voc2012", "lr"] == 5e-4


def test_settings_side_by_side_and_instructions():
    both = paper.settings_side_by_side("default", "voc2012")
    assert list(both.columns) == ["setting", "this build (default)", "the paper (voc2012 profile)"]
    row = both.set_index("setting")
    assert row.loc["dataset", "the paper (voc2012 profile)"] == "voc2012"
    assert row.loc["k", "the paper (voc2012 profile)"] == "3"
    assert "page" in paper.FILL_INSTRUCTIONS and "paper_tables.csv" in paper.FILL_INSTRUCTIONS
