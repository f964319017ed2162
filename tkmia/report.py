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
from tkmia.metrics import MEASURES

__all__ = ["summarize", "with_deltas", "SUMMARY_COLUMNS", "SETTING_COLUMNS", "load_records",
           "varying_settings", "compare_with_paper"]

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


def summarize(records: pd.DataFrame, by: tuple[str, ...] = ("scheme", "k", "method")) -> pd.DataFrame:
    """The paper's table: one row per (scheme, k, method), columns :data:`SUMMARY_COLUMNS`.

    ``pert_l2_255`` is the mean over successful samples (NaN where none succeeded); the other
    means are over eligible samples; ``n`` counts eligible samples.
    """
    missing = {"eligible", "success", "imperceptible", "pert_l2_255", *by} - set(records.columns)
    if missing:
        raise ValueError(f"records lack the columns {sorted(missing)}")
    data = with_deltas(records[records["eligible"]])
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


#: Configuration fields that :func:`load_records` attaches to every record of a run.
SETTING_COLUMNS = ("n_samples", "lr", "max_iter", "weight_decay", "seed", "options")


def load_records(results_dir: str | Path) -> pd.DataFrame:
    """All finished runs under ``results_dir`` (each a folder holding records.parquet), concatenated.

    Every record also gets its run's folder name (``run``) and the run's :data:`SETTING_COLUMNS`
    (``options`` as JSON text), so that runs of different settings are never pooled by mistake.
    """
    root = Path(results_dir)
    files = sorted(root.rglob("records.parquet"))
    if not files:
        raise FileNotFoundError(f"no records.parquet under {root}")
    frames = []
    for file in files:
        frame = pd.read_parquet(file)
        config = json.loads((file.parent / "config.json").read_text())["config"]
        frame["run"] = file.parent.name
        for name in SETTING_COLUMNS:
            value = config.get(name)
            frame[name] = json.dumps(value, sort_keys=True) if name == "options" else value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def varying_settings(records: pd.DataFrame) -> list[str]:
    """The :data:`SETTING_COLUMNS` of ``records`` that take more than one value."""
    return [c for c in SETTING_COLUMNS if c in records and records[c].astype(str).nunique() > 1]


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
