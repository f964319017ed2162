"""Tables from per-sample records, in the layout of the paper's tables.

Per (scheme, k), one row per method: success rate and imperceptible-success rate over eligible
samples, mean Pert over successful samples (×255 of [0, 1] pixel units), and the mean change
(adversarial minus clean) of top-k accuracy, P@k, mAP@k and NDCG@k over eligible samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tkmia.attacks import METHODS
from tkmia.experiments import SETTING_COLUMNS
from tkmia.metrics import MEASURES

__all__ = ["summarize", "with_deltas", "format_table", "SUMMARY_COLUMNS", "SETTING_COLUMNS", "KEY_COLUMNS",
           "load_records", "varying_settings", "compare_with_paper"]

#: Columns of :func:`summarize`, in order.
SUMMARY_COLUMNS = (
    "n",
    "success_rate",
    "imperceptible_rate",
    "pert_l2_255",
    "iterations",
    *(f"delta_{m}" for m in MEASURES),
)


def with_deltas(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` with a ``delta_<measure>`` column (adversarial minus clean) per measure."""
    out = records.copy()
    for m in MEASURES:
        out[f"delta_{m}"] = out[f"adv_{m}"] - out[f"clean_{m}"]
    return out


#: Columns that identify a run's setting besides the statistics: a summary never pools records
#: that differ in any of them (see :func:`summarize`).
KEY_COLUMNS = ("scheme", "k", "method", *SETTING_COLUMNS)


def varying_settings(records: pd.DataFrame, by: tuple[str, ...] = ("scheme", "k", "method")) -> list[str]:
    """The :data:`KEY_COLUMNS` of ``records`` (not in ``by``) that take more than one value
    within some group of ``by`` (an empty value counts as a value)."""
    present = [c for c in KEY_COLUMNS if c in records and c not in by]
    if not present or records.empty:
        return []
    data = records[[*by, *present]].astype({c: str for c in present})
    if not by:
        counts = data[present].nunique(dropna=False)
    else:
        counts = data.groupby(list(by), dropna=False)[present].nunique(dropna=False).max()
    return [c for c in present if counts[c] > 1]


def summarize(records: pd.DataFrame, by: tuple[str, ...] = ("scheme", "k", "method")) -> pd.DataFrame:
    """The paper's table: one row per (scheme, k, method), columns :data:`SUMMARY_COLUMNS`.

    Runs of different settings are never pooled: every :data:`KEY_COLUMNS` column that varies
    within a group of ``by`` is added to ``by`` (so it shows only when it varies).
    ``pert_l2_255`` is the mean over successful samples (NaN where none succeeded); the other
    means are over eligible samples; ``n`` counts eligible samples.
    """
    by = tuple(by)
    missing = {"eligible", "success", "imperceptible", "pert_l2_255", *by} - set(records.columns)
    if missing:
        raise ValueError(f"records lack the columns {sorted(missing)}")
    if records.empty or not records["eligible"].any():
        raise ValueError("records hold no eligible sample: there is nothing to summarize")
    by = (*by, *varying_settings(records, by))
    data = with_deltas(records[records["eligible"].astype(bool)])
    groups = data.groupby(list(by), sort=True, dropna=False)
    table = pd.DataFrame({
        "n": groups.size(),
        "success_rate": groups["success"].mean(),
        "imperceptible_rate": groups["imperceptible"].mean(),
        "pert_l2_255": data[data["success"]].groupby(list(by), dropna=False)["pert_l2_255"].mean(),
        "iterations": groups["iterations"].mean(),
        **{f"delta_{m}": groups[f"delta_{m}"].mean() for m in MEASURES},
    })
    table = table.reset_index()
    if "method" in by:
        order = {name: i for i, name in enumerate(METHODS)}
        table["_order"] = table["method"].map(order)
        table = table.sort_values([*(c for c in by if c != "method"), "_order"]).drop(columns="_order")
    return table.reset_index(drop=True)[[*by, *SUMMARY_COLUMNS]]


#: Columns printed with 3 significant digits (1e-05 and 2e-05 read differently).
_SIGNIFICANT = ("lr", "weight_decay")


def format_table(table: pd.DataFrame) -> str:
    """A summary as text: rates and means with 4 decimals, ``lr`` and ``weight_decay`` as %.3g."""
    formatters = {c: (lambda v: "-" if pd.isna(v) else f"{v:.3g}") for c in _SIGNIFICANT if c in table}
    return table.to_string(index=False, formatters=formatters, float_format=lambda v: f"{v:.4f}")


def load_records(results_dir: str | Path) -> pd.DataFrame:
    """All finished runs under ``results_dir`` (each a folder holding records.parquet), concatenated.

    Every record carries its run's folder name (``run``) and the run's :data:`SETTING_COLUMNS`
    (runs stored before they were written into the records get them from config.json), so that
    runs of different settings are never pooled by mistake.

    Raises:
        FileNotFoundError: no run under ``results_dir``.
        ValueError: a damaged records.parquet or config.json (the message names the file).
    """
    from tkmia.experiments import load_results  # same floor

    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no records.parquet under {root}: the folder does not exist")
    files = sorted(root.rglob("records.parquet"))
    if not files:
        raise FileNotFoundError(f"no records.parquet under {root}")
    frames = []
    for file in files:
        found = load_results(file.parent)
        frame, config = found.records.copy(), found.config.to_dict()
        frame["run"] = file.parent.name
        stored = found.meta.get("settings", {})
        for name in SETTING_COLUMNS:
            if name in frame:
                continue
            value = stored.get(name, config.get(name))
            if name == "options":
                value = json.dumps(value or {}, sort_keys=True)
            elif name in ("classes", "box") and isinstance(value, list):
                value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
            frame[name] = value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def compare_with_paper(ours: pd.DataFrame, paper: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Our summary beside the paper's published values for ``dataset`` (rows of the paper file).

    ``paper`` has columns dataset, scheme, k, method, measure, value, source (see
    ``tkmia.paper.paper_table``); the result has one row per (scheme, k, method, measure) with
    ``ours`` and ``paper`` columns; a value the paper file leaves empty stays NaN.
    """
    long = ours.melt(id_vars=["scheme", "k", "method"], value_vars=list(SUMMARY_COLUMNS),
                     var_name="measure", value_name="ours")
    theirs = paper[paper["dataset"] == dataset][["scheme", "k", "method", "measure", "value", "source"]]
    theirs = theirs.rename(columns={"value": "paper"})
    return long.merge(theirs, on=["scheme", "k", "method", "measure"], how="outer")
