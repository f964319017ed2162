"""Tables from per-sample records, in the layout of the paper's tables.

Per (scheme, k), one row per method: success rate and imperceptible-success rate over eligible
samples, mean Pert over successful samples (×255 of [0, 1] pixel units), and the mean change
(adversarial minus clean) of top-k accuracy, P@k, mAP@k and NDCG@k over eligible samples.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from torch import Tensor, nn

from tkmia.attacks import METHODS, Attack, AttackResult
from tkmia.experiments import SETTING_COLUMNS
from tkmia.metrics import MEASURES, WATCHED_MEASURES
from tkmia.selection import GlobalSelection, RandomSelection

__all__ = ["summarize", "group_summary", "OVER_SUCCESSFUL", "result_samples", "with_deltas",
           "format_table", "SUMMARY_COLUMNS", "SETTING_COLUMNS", "KEY_COLUMNS", "load_records",
           "varying_settings", "compare_with_paper", "CLAIM_MAJORITY", "CLAIM_VERDICTS", "claim_verdict",
           "claim_frame", "robustness"]

#: The imperceptible rate from which TkMIA's measures stay unchanged on "most" images (the claim).
CLAIM_MAJORITY = 0.5
#: What :func:`claim_verdict` can say, from the strongest to the weakest.
CLAIM_VERDICTS = ("holds", "holds on average only", "does not hold", "cannot be judged")

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


#: Per-sample columns :func:`group_summary` averages over the successful samples (a perturbation is
#: measured where the attack succeeded); every other column is averaged over the eligible ones.
OVER_SUCCESSFUL = ("pert_l2", "pert_l2_255")


def group_summary(samples: pd.DataFrame, by: Sequence[str] = (), columns: Sequence[str] = (), *,
                  sort: bool = True) -> pd.DataFrame:
    """The one summary of attacked samples: one row per group of ``by`` (one row when empty).

    ``samples`` has one row per sample with the bool columns ``eligible``, ``success`` and
    ``imperceptible`` and the numeric ``columns``. Output: ``by``, then ``n`` (eligible samples),
    ``success_rate`` and ``imperceptible_rate`` (over the eligible samples), then each of ``columns``:
    its mean over the successful samples for :data:`OVER_SUCCESSFUL` (Pert), over the eligible
    ones otherwise; NaN where there are none. Only groups with an eligible sample appear, sorted by
    ``by`` when ``sort``, else in the order they first appear.
    """
    by, columns = list(by), list(columns)
    missing = {"eligible", "success", "imperceptible", *by, *columns} - set(samples.columns)
    if missing:
        raise ValueError(f"samples lack the columns {sorted(missing)}")
    if not by:  # one group: the same statistics, without a key
        return group_summary(samples.assign(_all=0), ["_all"], columns, sort=sort).drop(columns="_all")
    data = samples[samples["eligible"].astype(bool)]
    won = data[data["success"].astype(bool)]
    groups = data.groupby(by, sort=sort, dropna=False)
    size = groups.size()  # its index orders every column (a group with no success: NaN Pert)
    table = pd.DataFrame({
        "n": size,
        "success_rate": groups["success"].mean(),
        "imperceptible_rate": groups["imperceptible"].mean(),
        **{c: (won.groupby(by, dropna=False)[c].mean().reindex(size.index) if c in OVER_SUCCESSFUL
               else groups[c].mean()) for c in columns},
    })
    return table.reset_index()[[*by, "n", "success_rate", "imperceptible_rate", *columns]]


def result_samples(result: AttackResult) -> pd.DataFrame:
    """The per-sample columns :func:`group_summary` reads, from an attack's result on N images:
    ``eligible``, ``success``, ``imperceptible``, ``iterations``, ``pert_l2``, ``pert_l2_255`` and
    ``delta_<measure>`` (adversarial minus clean) of every measure, as float64; N rows, in batch order."""
    before, after = result.clean_measures(), result.adv_measures()
    columns = {"eligible": result.eligible, "success": result.success, "imperceptible": result.imperceptible,
               "iterations": result.iterations, "pert_l2": result.perturbation_l2,
               "pert_l2_255": result.perturbation_l2_255,
               **{f"delta_{m}": after[m] - before[m] for m in MEASURES}}
    return pd.DataFrame({name: (value.double() if value.is_floating_point() else value).detach().cpu().numpy()
                         for name, value in columns.items()})


def summarize(records: pd.DataFrame, by: tuple[str, ...] = ("scheme", "k", "method")) -> pd.DataFrame:
    """The paper's table: one row per (scheme, k, method), columns :data:`SUMMARY_COLUMNS`
    (:func:`group_summary` of the records, with the Δ of every measure).

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
    table = group_summary(data, by, SUMMARY_COLUMNS[3:])
    if "method" in by:
        order = {name: i for i, name in enumerate(METHODS)}
        table["_order"] = table["method"].map(order)
        table = table.sort_values([*(c for c in by if c != "method"), "_order"]).drop(columns="_order")
    return table.reset_index(drop=True)[[*by, *SUMMARY_COLUMNS]]


def robustness(model: nn.Module, images: Tensor, labels: Tensor, attacks: Mapping[str, Attack],
               selection: GlobalSelection | RandomSelection, k: int) -> pd.DataFrame:
    """How robust ``model`` is on one batch: each attack run once, summarised by :func:`group_summary`.

    Args:
        model: the victim; every attack must be built on it, with top-k size ``k``.
        images: (N, 3, H, W) in the attacks' box; labels: (N, C) in {0, 1}.
        attacks: name -> attack; the name is the table's ``method``.
        selection: the scheme giving each image its specified labels.
        k: the top-k size.

    Returns:
        One row per attack, in the order of ``attacks``: ``method`` then :data:`SUMMARY_COLUMNS`
        (success and imperceptible rates over eligible images, ``pert_l2_255`` the mean Pert in
        0–255 over successful ones, NaN where none succeeded; ``n = 0`` and NaN for an attack no
        image is eligible for).
    """
    if not attacks:
        raise ValueError("attacks is empty; pass name -> attack, e.g. {'tkmia': TkMIA(model, k)}")
    if not isinstance(selection, GlobalSelection | RandomSelection):
        raise TypeError("selection must be a selection scheme (tkmia.selection.GlobalSelection or "
                        f"RandomSelection), got {type(selection).__name__}")
    frames = []
    for name, attack in attacks.items():
        if not isinstance(attack, Attack):
            raise TypeError(f"attacks[{name!r}] must be a tkmia.attacks.Attack, got {type(attack).__name__}")
        if attack.model is not model or attack.k != k:
            raise ValueError(f"attacks[{name!r}] must be built on model with k={k}, got k={attack.k} on "
                             f"{'that' if attack.model is model else 'another'} model")
        frames.append(result_samples(attack(images, labels, selection)).assign(method=name))
    table = group_summary(pd.concat(frames, ignore_index=True), ["method"], SUMMARY_COLUMNS[3:], sort=False)
    table = table.set_index("method").reindex(list(attacks))  # an attack with no eligible image: NaN
    table["n"] = table["n"].fillna(0).astype(int)
    return table.reset_index()


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


def claim_verdict(tkmia_worst: float, baselines_least: float, success_rate: float, imperceptible_rate: float,
                  majority: float = CLAIM_MAJORITY) -> str:
    """The paper's main claim on one setting (one scheme, one k): the one rule of the book.

    Args:
        tkmia_worst: TkMIA's largest mean |Δ| over P@k, mAP@k and NDCG@k (≥ 0).
        baselines_least: the smallest mean |Δ| of any baseline over the same measures (≥ 0).
        success_rate, imperceptible_rate: TkMIA's, fractions in [0, 1] (NaN: nothing attacked).
        majority: the imperceptible rate from which the measures stay unchanged on "most" images.

    Returns:
        ``"holds"`` (TkMIA's measures move less than every baseline's, by every measure, and stay
        unchanged on at least ``majority`` of the images), ``"holds on average only"`` (they move
        less, but change on most images), ``"does not hold"``, or ``"cannot be judged"`` (TkMIA
        succeeded on no image).

    Example:
        >>> claim_verdict(0.02, 0.3, 1.0, 0.8)
        'holds'
    """
    for name, value in (("tkmia_worst", tkmia_worst), ("baselines_least", baselines_least)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
            raise ValueError(f"{name}={value!r}; expected a mean |Δ| >= 0")
    for name, value in (("success_rate", success_rate), ("imperceptible_rate", imperceptible_rate)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                math.isnan(value) or 0 <= value <= 1):
            raise ValueError(f"{name}={value!r}; expected a fraction in [0, 1] (or NaN)")
    if isinstance(majority, bool) or not isinstance(majority, numbers.Real) or not 0 < majority <= 1:
        raise ValueError(f"majority={majority!r}; expected a fraction in (0, 1]")
    if math.isnan(success_rate) or success_rate == 0:
        return "cannot be judged"
    if tkmia_worst < baselines_least:
        return "holds" if imperceptible_rate >= majority else "holds on average only"
    return "does not hold"


def claim_frame(table: pd.DataFrame, measures: Sequence[str] = WATCHED_MEASURES,
                majority: float = CLAIM_MAJORITY) -> pd.DataFrame:
    """:func:`claim_verdict` per (scheme, k) of a :func:`summarize` table (TkMIA and at least one
    baseline at each k; the baselines are every other method of the table).

    Columns: scheme, k, tkmia (TkMIA's largest mean |Δ| over ``measures``), baselines (the smallest
    of any baseline's), success_rate and imperceptible_rate (TkMIA's), verdict, and holds
    (verdict == "holds").
    """
    columns = [f"delta_{m}" for m in measures]
    missing = [c for c in ("scheme", "k", "method", "success_rate", "imperceptible_rate", *columns)
               if c not in table]
    if missing:
        raise ValueError(f"table lacks the columns {missing}; pass a tkmia.report.summarize table")
    rows = []
    for (scheme, k), group in table.groupby(["scheme", "k"], sort=True):
        by = group.set_index("method")
        if "tkmia" not in by.index or len(by.index) < 2:
            raise ValueError(f"table must hold TkMIA and at least one baseline at k = {k}")
        change = by[columns].abs()
        tkmia = float(change.loc["tkmia"].max())
        baselines = float(change.drop(index="tkmia").min(axis=1).min())
        success = float(by.loc["tkmia", "success_rate"])
        imperceptible = float(by.loc["tkmia", "imperceptible_rate"])
        verdict = claim_verdict(tkmia, baselines, success, imperceptible, majority)
        rows.append({"scheme": scheme, "k": k, "tkmia": tkmia, "baselines": baselines,
                     "success_rate": success, "imperceptible_rate": imperceptible, "verdict": verdict,
                     "holds": verdict == "holds"})
    return pd.DataFrame(rows)
