"""Figures and display tables of the experiment chapters: the paper-style table, the per-sample
changes of the measures, rates and Pert against k, and the clean / adversarial / perturbation gallery.

Book chapters "Global selection scheme", "Random selection scheme" and "Gallery". Every ``plot_*``
function returns a matplotlib Figure; tables come from :func:`tkmia.report.summarize` and records
from :func:`tkmia.experiments.run`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib import MatplotlibDeprecationWarning
from torch import Tensor

from tkmia.attacks import METHODS
from tkmia.metrics import MEASURES
from tkmia.plots.measures import MEASURE_NAMES
from tkmia.plots.theme import distinct_numbers, method_palette, panel_grid, style, tidy_table
from tkmia.report import CLAIM_MAJORITY, claim_frame

__all__ = [
    "METHOD_NAMES",
    "SUMMARY_NAMES",
    "method_label",
    "SUMMARY_CAPTION",
    "style_table",
    "plot_summary",
    "delta_frame",
    "plot_delta_distributions",
    "plot_vs_k",
    "plot_success_vs_k",
    "plot_pert_vs_k",
    "triplet_inputs",
    "plot_triplets",
    "fairness_frame",
    "claim_summary",
    "summary_prose",
    "topk_changes",
    "measure_outcomes",
    "typical_samples",
]

#: How the book writes each method of :data:`tkmia.attacks.METHODS`.
METHOD_NAMES = {"tkmia": "TkMIA", "tkml_ap_u": "TkML-AP-U", "ml_cw_u": "ML-CW-U", "kfool": "kFool",
                "tkmia_exact": "TkMIA-exact", "tkmia_margin": "TkMIA-margin"}

#: Readable names of the columns of :func:`tkmia.report.summarize`.
SUMMARY_NAMES = {
    "scheme": "scheme",
    "k": "k",
    "method": "method",
    "n": "n",
    "success_rate": "success",
    "imperceptible_rate": "imperceptible",
    "pert_l2_255": "Pert (×255)",
    "iterations": "iterations",
    **{f"delta_{m}": f"Δ{MEASURE_NAMES[m]}" for m in MEASURES},
}

# what plot_summary and plot_delta_distributions draw, in order
_RATES = ("success_rate", "imperceptible_rate")
_DELTAS = tuple(f"delta_{m}" for m in ("precision_at_k", "map_at_k", "ndcg_at_k"))


def method_label(name: str) -> str:
    """The book's name of a method (``"tkmia"`` -> ``"TkMIA"``); unknown names pass through."""
    return METHOD_NAMES.get(name, name)


def _method_order(methods) -> list[str]:
    present = list(dict.fromkeys(methods))
    known = [METHOD_NAMES[m] for m in METHODS if METHOD_NAMES[m] in present]
    return known + [m for m in present if m not in known]


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = sorted(set(columns) - set(frame.columns))
    if missing:
        raise ValueError(f"{what} lacks the columns {missing}")
    if frame.empty:
        raise ValueError(f"{what} is empty; nothing to draw")


#: The caption of :func:`style_table` (what its columns are).
SUMMARY_CAPTION = (
    "Per k and method: n eligible samples attacked; success and imperceptible-success rates (of the n); "
    "mean Pert over successful samples (L2, ×255 of [0, 1] pixels); mean iterations; mean change "
    "(adversarial − clean) of each measure over the n samples."
)


def style_table(table: pd.DataFrame, caption: str = SUMMARY_CAPTION):
    """A :func:`tkmia.report.summarize` table formatted for display (:func:`tidy_table`): method
    names as in the paper, rates as percentages, Δ measures signed to 3 significant digits, counts
    as integers, readable column names, a caption, no index.

    Returns a pandas Styler (render it as the last expression of a notebook cell).

    Example:
        >>> style_table(report.summarize(records))
    """
    _require(table, ["method"], "table")
    shown = table.copy()
    shown["method"] = shown["method"].map(method_label)
    present = [c for c in SUMMARY_NAMES if c in table.columns]
    return tidy_table(shown, caption, names=SUMMARY_NAMES,
                      percent=[c for c in present if c in _RATES],
                      signed=[c for c in present if c.startswith("delta_")])


def _long_summary(table: pd.DataFrame, columns) -> pd.DataFrame:
    by = [c for c in ("scheme", "k") if c in table.columns]
    long = table.melt(id_vars=[*by, "method"], value_vars=list(columns), var_name="quantity")
    long["quantity"] = long["quantity"].map(SUMMARY_NAMES)
    long["method"] = long["method"].map(method_label)
    return long


def plot_summary(table: pd.DataFrame):
    """The paper-style table as bars: success rate, imperceptible rate and ΔP@k, ΔmAP@k, ΔNDCG@k per
    method, one panel per k (and one row per scheme when the table holds several).

    Args:
        table: :func:`tkmia.report.summarize` output (columns k, method, the rates and deltas).

    Returns:
        The matplotlib figure; rates are fractions of eligible samples, Δs adversarial minus clean.
    """
    import seaborn as sns

    style()
    _require(table, ["k", "method", *_RATES, *_DELTAS], "table")
    long = _long_summary(table, (*_RATES, *_DELTAS))
    rows = "scheme" if "scheme" in long.columns and long["scheme"].nunique() > 1 else None
    order = _method_order(long["method"])
    n_cols = long["k"].nunique()
    _, cols, (width, _) = panel_grid(n_cols, max_columns=2 if rows is None else 3)
    height = 0.85 * width / cols
    grid = sns.catplot(
        data=long, kind="bar", x="quantity", y="value", hue="method", col="k", row=rows,
        col_wrap=cols if rows is None and n_cols > cols else None,
        hue_order=order, order=[SUMMARY_NAMES[c] for c in (*_RATES, *_DELTAS)],
        height=height, aspect=width / cols / height, palette=method_palette(order),
    )
    grid.set_axis_labels("", "rate (fraction) / mean change")
    grid.set_titles(("{row_name} scheme, " if rows else "") + "k = {col_name}")
    for ax in grid.axes.flat:
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    return _legend_on_top(grid)


def _legend_on_top(grid):
    """Move a FacetGrid's legend above its panels (so that it costs height, not page width) and
    return the figure."""
    import seaborn as sns

    if grid.legend is not None:
        sns.move_legend(grid, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, title=None, frameon=False)
    grid.figure.tight_layout()
    return grid.figure


def delta_frame(records: pd.DataFrame) -> pd.DataFrame:
    """Per eligible sample, the change (adversarial minus clean) of P@k, mAP@k and NDCG@k, tidy.

    Columns: sample, method (the book's name), k, measure (as in :data:`MEASURE_NAMES`), change.
    """
    columns = ["sample", "method", "k", "eligible"]
    shown = ("precision_at_k", "map_at_k", "ndcg_at_k")
    columns += [f"{side}_{m}" for side in ("clean", "adv") for m in shown]
    _require(records, columns, "records")
    data = records[records["eligible"]].copy()
    for m in ("precision_at_k", "map_at_k", "ndcg_at_k"):
        data[MEASURE_NAMES[m]] = data[f"adv_{m}"] - data[f"clean_{m}"]
    data["method"] = data["method"].map(method_label)
    names = [MEASURE_NAMES[m] for m in ("precision_at_k", "map_at_k", "ndcg_at_k")]
    return data.melt(id_vars=["sample", "method", "k"], value_vars=names, var_name="measure",
                     value_name="change")


def plot_delta_distributions(records: pd.DataFrame):
    """Distributions over eligible samples of ΔP@k, ΔmAP@k and ΔNDCG@k per method: a box per method
    with every sample as a dot; one column per measure, one row per k.

    Args:
        records: per-sample records of :func:`tkmia.experiments.run` (one or several runs).

    Returns:
        The matplotlib figure.
    """
    import seaborn as sns

    style()
    frame = delta_frame(records)
    order = _method_order(frame["method"])
    rows = "k" if frame["k"].nunique() > 1 else None
    _, cols, (width, _) = panel_grid(frame["measure"].nunique())
    height = 0.95 * width / cols
    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated ``vert`` to bxp
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
        grid = sns.catplot(
            data=frame, kind="box", x="method", y="change", col="measure", row=rows, order=order,
            showfliers=False, color="0.88", height=height, aspect=width / cols / height, sharey=True,
        )
    grid.map_dataframe(sns.stripplot, x="method", y="change", order=order, hue="method", hue_order=order,
                       palette=method_palette(order), size=2.5, alpha=0.5, jitter=0.3, legend=False)
    grid.set_titles(("k = {row_name}, " if rows else "") + "Δ{col_name}")
    grid.set_axis_labels("", "change (adversarial − clean)")
    for ax in grid.axes.flat:
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    grid.figure.tight_layout()
    return grid.figure


def plot_vs_k(
    table: pd.DataFrame, columns: Sequence[str] = ("success_rate", "imperceptible_rate", "pert_l2_255")
):
    """Each column of a :func:`tkmia.report.summarize` table against k, one line per method, one panel
    per column (and one row per scheme when the table holds several). Returns the figure."""
    import seaborn as sns

    style()
    _require(table, ["k", "method", *columns], "table")
    if len(columns) > 3:
        raise ValueError(f"columns: at most 3 panels a row, got {len(columns)} columns {list(columns)}")
    long = _long_summary(table, columns)
    rows = "scheme" if "scheme" in long.columns and long["scheme"].nunique() > 1 else None
    order = _method_order(long["method"])
    _, cols, (width, _) = panel_grid(len(columns))
    height = 0.9 * width / cols
    grid = sns.relplot(
        data=long, kind="line", x="k", y="value", hue="method", style="method", col="quantity", row=rows,
        hue_order=order, style_order=order, col_order=[SUMMARY_NAMES[c] for c in columns], markers=True,
        dashes=False, height=height, aspect=width / cols / height, facet_kws={"sharey": False},
        palette=method_palette(order),
    )
    grid.set_titles(("{row_name} scheme, " if rows else "") + "{col_name}")
    grid.set(xticks=sorted(long["k"].unique()))
    units = {SUMMARY_NAMES[c]: "fraction of eligible samples" for c in _RATES}
    units[SUMMARY_NAMES["pert_l2_255"]] = "L2 (×255, [0, 1] pixels)"
    for ax, name in zip(grid.axes.flat, [SUMMARY_NAMES[c] for c in columns] * (grid.axes.shape[0])):
        ax.set_ylabel(units.get(name, name))
        ax.set_xlabel("k (top-k size)")
        if name in (SUMMARY_NAMES[c] for c in _RATES):
            ax.set_ylim(-0.05, 1.05)
        elif name == SUMMARY_NAMES["pert_l2_255"] and (long.loc[long["quantity"] == name, "value"] > 0).all():
            ax.set_yscale("log")  # methods differ by orders of magnitude
    return _legend_on_top(grid)


def plot_success_vs_k(table: pd.DataFrame):
    """Success rate and imperceptible-success rate against k, one line per method."""
    return plot_vs_k(table, _RATES)


def plot_pert_vs_k(table: pd.DataFrame):
    """Mean Pert (L2 norm of the perturbation, ×255 of [0, 1] pixel units, over successful samples)
    against k, one line per method, on a log scale (when every value is positive)."""
    return plot_vs_k(table, ("pert_l2_255",))


def triplet_inputs(
    images: dict, records: pd.DataFrame, n: int | None = None, samples: Sequence[int] | None = None
):
    """Align saved images (``tkmia.experiments.load_images``) with their records rows.

    Args:
        images: {"sample", "clean", "adv"} of one run.
        records: that run's records (a ``sample`` column).
        n: keep the first ``n`` saved samples (default all).
        samples: keep exactly these sample ids, in this order (must all be saved); overrides ``n``.

    Returns:
        (clean (n, 3, H, W), adv (n, 3, H, W), rows: a DataFrame of the n records, same order).
    """
    saved = [int(s) for s in images["sample"]]
    if samples is None:
        samples = saved[:n] if n is not None else saved
    samples = [int(s) for s in samples]
    missing = sorted(set(samples) - set(saved))
    if missing:
        raise ValueError(f"samples {missing} have no saved images; saved: {saved}")
    where = torch.tensor([saved.index(s) for s in samples], dtype=torch.long)
    rows = records.set_index("sample").loc[samples].reset_index()
    return images["clean"][where], images["adv"][where], rows


def _label_line(ax, y: float, prefix: str, top: Sequence[int], truth: set, specified: set, classes) -> None:
    """Write ``prefix`` then each top-k label under an image, coloured: specified labels red with a
    star, other true labels black, false labels grey italic."""
    text = ax.annotate(prefix, xy=(0.0, y), xycoords="axes fraction", va="top", ha="left", fontsize=9)
    for i, label in enumerate(top):
        name = classes[label] if classes is not None else str(label)
        if label in specified:
            style = {"color": "tab:red", "fontweight": "bold"}
            name += "*"
        elif label in truth:
            style = {"color": "black"}
        else:
            style = {"color": "0.45", "fontstyle": "italic"}
        name += "," if i < len(top) - 1 else ""
        text = ax.annotate(" " + name, xy=(1.0, 0.0), xycoords=text, va="bottom", ha="left", fontsize=9,
                           **style)


def plot_triplets(
    clean: Tensor,
    adv: Tensor,
    records_rows: pd.DataFrame,
    classes: Sequence[str] | None = None,
    amplify: float | None = None,
    title: str | None = None,
    panel_size: float = 2.4,
):
    """Per sample, the clean image, the adversarial image and the amplified perturbation, as in the
    paper's figures, with the top-k lists before and after written under the images.

    Args:
        clean, adv: images (n, 3, H, W) in [0, 1].
        records_rows: the n records rows of these samples, same order (``clean_topk``, ``adv_topk``,
            ``labels``, ``specified``, ``sample``; optionally ``method``, ``pert_l2_255``).
        classes: label names (default the indices).
        amplify: the perturbation panel shows ``|adv − clean| · amplify`` clipped to [0, 1]; None
            scales each sample so that its largest entry is 1 (the factor is written in its title).
        title: figure title (default the method's name when the rows have one).

    Returns:
        A figure with n rows of 3 panels. Under the images: the top-k labels, specified ones in red
        with a star, false ones in grey italic.

    Example:
        >>> clean, adv, rows = triplet_inputs(load_images(run), run.records, n=4)
        >>> plot_triplets(clean, adv, rows, dataset.classes)
    """
    import matplotlib.pyplot as plt

    style()
    if clean.shape != adv.shape or clean.dim() != 4:
        raise ValueError(f"clean and adv must both have shape (n, 3, H, W), got {tuple(clean.shape)} "
                         f"and {tuple(adv.shape)}")
    if len(records_rows) != clean.shape[0]:
        raise ValueError(f"records_rows has {len(records_rows)} rows for {clean.shape[0]} images")
    if amplify is not None and amplify <= 0:
        raise ValueError(f"amplify must be > 0 or None, got {amplify!r}")
    _require(records_rows, ["sample", "clean_topk", "adv_topk", "labels", "specified"], "records_rows")
    n = clean.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(3 * panel_size, n * panel_size * 1.25 + 0.5), squeeze=False)
    diff = (adv.float() - clean.float()).abs()
    for row, (axs, (_, rec)) in enumerate(zip(axes, records_rows.iterrows())):
        truth, specified = {int(j) for j in rec["labels"]}, {int(j) for j in rec["specified"]}
        scale = amplify if amplify is not None else 1.0 / max(float(diff[row].max()), 1e-12)
        pert = f", Pert {rec['pert_l2_255']:.1f}" if "pert_l2_255" in rec else ""
        panels = [
            (clean[row], f"sample {int(rec['sample'])}: clean"),
            (adv[row], f"adversarial{pert}"),
            ((diff[row] * scale).clamp(0, 1), f"|adv − clean| × {scale:.0f}"),
        ]
        for ax, (image, name) in zip(axs, panels):
            ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
            ax.set_title(name, fontsize=9.5)
            ax.set_xticks([])
            ax.set_yticks([])
        k = len(rec["clean_topk"])
        for ax, column in zip(axs[:2], ("clean_topk", "adv_topk")):
            _label_line(ax, -0.04, f"top-{k}:", [int(j) for j in rec[column]], truth, specified, classes)
    if title is None and "method" in records_rows.columns:
        title = method_label(str(records_rows["method"].iloc[0]))
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(h_pad=1.6, rect=(0, 0.5 / fig.get_figheight(), 1, 1))
    fig.text(0.5, 0.005, "under the images: the top-k before (left) and after (middle);\nred*: specified, "
             "grey italic: not a true label", ha="center", va="bottom", fontsize=9)
    return fig


def fairness_frame(records: pd.DataFrame) -> pd.DataFrame:
    """Whether every method attacked the same samples with the same specified labels (the fairness
    rule), per (scheme, k, method).

    Columns: scheme, k, method, n (samples attacked), same_samples and same_specified (compared with
    the first method of the same scheme and k, in the order of :data:`tkmia.attacks.METHODS`).
    """
    _require(records, ["scheme", "k", "method", "sample", "specified"], "records")
    rows = []
    for (scheme, k), group in records.groupby(["scheme", "k"], sort=True):
        methods = [m for m in METHODS if m in set(group["method"])]
        methods += sorted(set(group["method"]) - set(methods))
        plans = {}
        for method in methods:
            part = group[group["method"] == method].sort_values("sample")
            specified = tuple(tuple(int(j) for j in s) for s in part["specified"])
            plans[method] = (tuple(part["sample"]), specified)
        first = plans[methods[0]]
        for method in methods:
            rows.append({"scheme": scheme, "k": k, "method": method, "n": len(plans[method][0]),
                         "same_samples": plans[method][0] == first[0],
                         "same_specified": plans[method] == first})
    return pd.DataFrame(rows)


def claim_summary(table: pd.DataFrame) -> dict[str, str]:
    """Sentence fragments for the prose about :func:`tkmia.report.claim_frame` over a grid of k
    (so that it reads right whatever the numbers are): ``verdict`` ("holds", "holds only in part",
    "does not hold": at every k, some, none, by :func:`tkmia.report.claim_verdict`) and ``where``
    (e.g. "for every k of the grid (2, 3)", "for k = 2 only", "for no k of the grid")."""
    frame = claim_frame(table)
    ks = [int(k) for k in frame["k"].unique()]
    good = sorted({int(k) for k in frame.loc[frame["holds"], "k"]})
    bad = sorted({int(k) for k in frame.loc[~frame["holds"], "k"]})
    listed = ", ".join(map(str, ks))
    if not bad:
        return {"verdict": "holds", "where": f"for every k of the grid ({listed})"}
    if not good:
        return {"verdict": "does not hold", "where": f"for no k of the grid ({listed})"}
    return {"verdict": "holds only in part",
            "where": f"for k = {', '.join(map(str, good))} only, not for k = {', '.join(map(str, bad))}"}


_PROSE_RATES = ("success_rate", "imperceptible_rate")
_PROSE_DELTAS = ("delta_precision_at_k", "delta_map_at_k", "delta_ndcg_at_k")


def summary_prose(table: pd.DataFrame, k: int) -> dict[str, str]:
    """The numbers the prose of the scheme chapters quotes at one ``k`` of a
    :func:`tkmia.report.summarize` table, as text formatted together so that distinct values read
    distinct (:func:`tkmia.plots.distinct_numbers`): rates as percentages, Δs signed to at least 3
    significant digits, Pert and iterations to 3.

    Keys: ``<method>_<column>`` for each method of :data:`tkmia.attacks.METHODS` (a method absent
    from the table reads "–") and column success_rate, imperceptible_rate, pert_l2_255, iterations,
    delta_precision_at_k, delta_map_at_k, delta_ndcg_at_k; ``k``; ``n`` (eligible samples per
    method); ``pert_ratio`` (kFool's mean Pert over TkMIA's); ``tkmia_worst`` and
    ``baselines_least`` (:func:`tkmia.report.claim_frame` at ``k``) with ``focus_verdict`` (what
    :func:`tkmia.report.claim_verdict` says at ``k``) and ``claim_majority`` (its imperceptible-rate
    bar, a percentage); ``verdict`` and ``where`` over the whole grid (:func:`claim_summary`).
    Book chapters "Global selection scheme" and "Random selection scheme".
    """
    _require(table, ["scheme", "k", "method", "n", "pert_l2_255", "iterations", *_PROSE_RATES,
                     *_PROSE_DELTAS], "table")
    focus = table[table["k"] == k]
    if focus.empty or focus["method"].duplicated().any():
        raise ValueError(f"k = {k} must be one k of the table (one row per method), whose k values "
                         f"are {sorted(table['k'].unique())} and schemes {sorted(table['scheme'].unique())}")
    focus = focus.set_index("method").reindex(list(METHODS))
    out: dict[str, str] = {"k": f"{int(k):d}", "n": f"{int(focus['n'].max()):d}"}
    groups = ((_PROSE_RATES, "percent"), (_PROSE_DELTAS, "signed"), (("pert_l2_255",), "plain"),
              (("iterations",), "plain"))
    for columns, kind in groups:
        keys = [(m, c) for m in METHODS for c in columns]
        texts = distinct_numbers([focus.loc[m, c] for m, c in keys], kind)
        out.update({f"{m}_{c}": text for (m, c), text in zip(keys, texts, strict=True)})
    ratio = focus.loc["kfool", "pert_l2_255"] / focus.loc["tkmia", "pert_l2_255"]
    out["pert_ratio"] = distinct_numbers([ratio])[0]
    claim = claim_frame(table)
    claim = claim[claim["k"] == k]
    if len(claim) != 1:
        raise ValueError(f"table must hold one scheme, got {sorted(table['scheme'].unique())}; "
                         "pass one scheme's rows")
    claim = claim.iloc[0]
    out["tkmia_worst"], out["baselines_least"] = distinct_numbers([claim["tkmia"], claim["baselines"]])
    out["focus_verdict"] = str(claim["verdict"])
    out["claim_majority"] = distinct_numbers([CLAIM_MAJORITY], "percent")[0]
    out.update(claim_summary(table))
    return out


def topk_changes(rows: pd.DataFrame) -> pd.DataFrame:
    """What an attack did to each sample's top-k (records rows with clean_topk, adv_topk, labels,
    specified).

    Columns: sample, removed (specified labels that left the top-k), false_in (labels outside Y that
    entered it), true_in (true labels that entered it).
    """
    _require(rows, ["sample", "clean_topk", "adv_topk", "labels", "specified"], "rows")
    out = []
    for _, rec in rows.iterrows():
        before, after = {int(j) for j in rec["clean_topk"]}, {int(j) for j in rec["adv_topk"]}
        truth, spec = {int(j) for j in rec["labels"]}, {int(j) for j in rec["specified"]}
        entered = after - before
        out.append({"sample": int(rec["sample"]), "removed": len((before - after) & spec),
                    "false_in": len(entered - truth), "true_in": len(entered & truth)})
    return pd.DataFrame(out, columns=["sample", "removed", "false_in", "true_in"])


_SHOWN = ("precision_at_k", "map_at_k", "ndcg_at_k")


def measure_outcomes(records: pd.DataFrame) -> dict[str, float]:
    """How an attack's successful samples left the measures: ``n`` (successful eligible samples),
    ``unchanged`` (fraction with P@k, mAP@k and NDCG@k all unchanged), ``p_dropped`` (fraction whose
    P@k fell), ``other_change`` (fraction whose P@k did not fall while some measure moved; the three
    fractions sum to 1), ``mean_p_drop`` (mean fall of P@k among those whose P@k fell, NaN if none)
    and ``median_delta_p`` (median ΔP@k over the successful samples); with no successful sample
    ``n`` is 0 and the rest NaN. Book chapter "The problem"."""
    _require(records, ["eligible", "success", *(f"{side}_{m}" for side in ("clean", "adv") for m in _SHOWN)],
             "records")
    won = records[records["eligible"].astype(bool) & records["success"].astype(bool)]
    if won.empty:
        nan = float("nan")
        return {"n": 0, "unchanged": nan, "p_dropped": nan, "other_change": nan, "mean_p_drop": nan,
                "median_delta_p": nan}
    delta = {m: won[f"adv_{m}"].to_numpy(float) - won[f"clean_{m}"].to_numpy(float) for m in _SHOWN}
    still = np.all([abs(d) < 1e-9 for d in delta.values()], axis=0)
    dropped = delta["precision_at_k"] < -1e-9
    return {"n": int(len(won)), "unchanged": float(still.mean()), "p_dropped": float(dropped.mean()),
            "other_change": float((~still & ~dropped).mean()),
            "mean_p_drop": float(-delta["precision_at_k"][dropped].mean()) if dropped.any() else float("nan"),
            "median_delta_p": float(pd.Series(delta["precision_at_k"]).median())}


def typical_samples(records: pd.DataFrame, samples: Sequence[int]) -> list[int]:
    """``samples`` (e.g. those with saved images) that were attacked successfully, most typical
    first: ordered by how far their ΔP@k lies from the median ΔP@k of every successful sample
    (ties: by ΔNDCG@k's distance to its median, then by sample id). The book's rule for choosing
    an example image. When no sample of ``samples`` succeeded, the eligible ones are ordered the
    same way (over every eligible sample)."""
    wanted = {int(x) for x in samples}
    eligible = records[records["eligible"].astype(bool)]
    won = eligible[eligible["success"].astype(bool)]
    if not set(won["sample"].astype(int)) & wanted:
        won = eligible
    dp = won["adv_precision_at_k"] - won["clean_precision_at_k"]
    dn = won["adv_ndcg_at_k"] - won["clean_ndcg_at_k"]
    far = pd.DataFrame({"sample": won["sample"].astype(int), "p": (dp - dp.median()).abs(),
                        "n": (dn - dn.median()).abs()})
    far = far[far["sample"].isin([int(x) for x in samples])].sort_values(["p", "n", "sample"])
    if far.empty:
        raise ValueError(f"none of the samples {list(samples)} is an eligible sample of records")
    return far["sample"].tolist()
