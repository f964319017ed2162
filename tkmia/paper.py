"""The paper's published setting and values (book chapter "Reproducing the paper at full scale").

The values of the paper's tables live in ONE data file, ``tkmia/paper_tables.csv``, one row per
(dataset, scheme, k, method, measure) the paper reports, with the ``page`` and ``table`` of the paper
they come from. They are filled only from the paper itself (arXiv:2309.00007); a row whose value has
not been copied yet keeps ``value`` empty (NaN here) and says so in ``source``. Nothing in tkmia
types a paper number anywhere else.

Example:
    >>> table = paper_table()
    >>> int(table["value"].notna().sum())  # how many values have been filled in
    0
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tkmia.attacks import METHODS
from tkmia.metrics import MEASURES
from tkmia.selection import SCHEMES

__all__ = ["PAPER_FILE", "PAPER_COLUMNS", "PAPER_MEASURES", "DATASETS", "FILL_INSTRUCTIONS", "paper_table",
           "filled", "profiles_table", "settings_side_by_side"]

#: How to fill :data:`PAPER_FILE` (shown by the full-scale chapter while the file holds no value).
FILL_INSTRUCTIONS = (
    "Open the paper (arXiv:2309.00007). For each row of tkmia/paper_tables.csv, find the table of its "
    "dataset and scheme, and write the number the paper prints for its k, method and measure in "
    "`value` (success rates as fractions, Δ measures as adversarial minus clean, Pert as printed), "
    "its page in `page` and the table's number in `table`, and replace `source` by where it was read "
    "(e.g. 'arXiv:2309.00007v1, Table 2'). Leave a value empty rather than guess; "
    "tkmia.paper.paper_table() refuses a value without its page and table. Then rebuild the chapter: "
    "the comparison appears once the file holds values."
)

#: The data file holding the paper's table values.
PAPER_FILE = Path(__file__).resolve().parent / "paper_tables.csv"
#: Its columns, in order.
PAPER_COLUMNS = ("dataset", "scheme", "k", "method", "measure", "value", "page", "table", "source")
#: The measures the paper's tables report, named as the columns of :func:`tkmia.report.summarize`.
PAPER_MEASURES = ("success_rate", "pert_l2_255", *(f"delta_{m}" for m in MEASURES))
#: The paper's datasets, named as the profiles' ``dataset.name``.
DATASETS = ("voc2012", "coco2014", "nuswide")


def _bad(column: str, values: pd.Series, allowed: Sequence) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"paper table: column {column!r} holds {unknown}; allowed: {list(allowed)}")


def paper_table(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's table values as a DataFrame with columns :data:`PAPER_COLUMNS`.

    Validates the file: exactly the columns :data:`PAPER_COLUMNS`; known datasets, schemes, methods
    and measures; ``k`` a positive int; ``value`` numeric or empty (NaN); a filled ``value`` names
    its ``page`` and ``table``; no (dataset, scheme, k, method, measure) twice. Raises ValueError
    naming the offending column or rows.

    Args:
        path: the CSV file (default :data:`PAPER_FILE`).
    """
    path = Path(path) if path is not None else PAPER_FILE
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(table.columns) != PAPER_COLUMNS:
        raise ValueError(f"paper table {path}: columns must be {list(PAPER_COLUMNS)}, "
                         f"got {list(table.columns)}")
    _bad("dataset", table["dataset"], DATASETS)
    _bad("scheme", table["scheme"], SCHEMES)
    _bad("method", table["method"], METHODS)
    _bad("measure", table["measure"], PAPER_MEASURES)
    if not table["k"].str.fullmatch(r"[1-9][0-9]*").all():
        raise ValueError(f"paper table {path}: k must be a positive int, got {sorted(set(table['k']))}")
    table["k"] = table["k"].astype(int)
    raw = table["value"].str.strip()
    value = pd.to_numeric(raw.where(raw != ""), errors="coerce")
    broken = table.index[(raw != "") & value.isna()].tolist()
    if broken:
        raise ValueError(f"paper table {path}: non-numeric value in rows {broken}")
    table["value"] = value.astype(float)
    missing = (table["page"].str.strip() == "") | (table["table"].str.strip() == "")
    unsourced = table.index[table["value"].notna() & missing].tolist()
    if unsourced:
        raise ValueError(f"paper table {path}: rows {unsourced} have a value without its page and table")
    keys = ["dataset", "scheme", "k", "method", "measure"]
    twice = table[table.duplicated(keys, keep=False)]
    if len(twice):
        settings = twice[keys].drop_duplicates().values.tolist()
        raise ValueError(f"paper table {path}: duplicated settings {settings}")
    return table


def filled(table: pd.DataFrame | None = None) -> pd.DataFrame:
    """How many values the paper file holds per (dataset, scheme): columns rows, filled."""
    table = paper_table() if table is None else table
    groups = table.groupby(["dataset", "scheme"], sort=False)["value"]
    return pd.DataFrame({"rows": groups.size(), "filled": groups.count()}).reset_index()


def profiles_table(names: Sequence[str] = ("default", "voc2012", "coco2014", "nuswide")) -> pd.DataFrame:
    """The settings of the profiles ``names``, one row each, read from ``tkmia/profiles``.

    Columns: profile, dataset, classes (C), image_size, arch, eval_split, k, lr, max_iter,
    weight_decay, n_samples, global_classes, random (k, n_pert, del_n), grid_k.
    """
    from tkmia.data import NUM_CLASSES  # floor 3, imported lazily
    from tkmia.profiles import load_profile

    rows = []
    for name in names:
        p = load_profile(name)
        r = p.selection.random
        rows.append({
            "profile": p.name,
            "dataset": p.dataset.name,
            "classes": NUM_CLASSES[p.dataset.name],
            "image_size": p.dataset.image_size,
            "arch": p.model.arch,
            "eval_split": p.dataset.eval_split,
            "k": p.attack.k,
            "lr": p.attack.lr,
            "max_iter": p.attack.max_iter,
            "weight_decay": p.attack.weight_decay,
            "n_samples": p.attack.n_samples,
            "global_classes": ", ".join(map(str, p.selection.global_classes)),
            "random": f"k={r.k}, n_pert={r.n_pert}, del_n={r.del_n}",
            "grid_k": ", ".join(map(str, p.grid.k)),
        })
    return pd.DataFrame(rows)


def settings_side_by_side(profile: str, paper_profile: str) -> pd.DataFrame:
    """The settings of ``profile`` (this build) beside those of ``paper_profile`` (the profile that
    copies the paper's setting, e.g. ``"voc2012"``): one row per setting, columns setting, this
    build, the paper; values as text."""
    table = profiles_table([profile, paper_profile]).set_index("profile").T
    first, second = table.columns[0], table.columns[-1]
    return pd.DataFrame({"setting": table.index,
                         f"this build ({first})": table[first].map(str).to_numpy(),
                         f"the paper ({second} profile)": table[second].map(str).to_numpy()})
