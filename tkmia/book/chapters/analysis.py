"""Figures and small tables of the analysis chapters: "Victims", "Sensitivity", "Measure monitoring".

As everywhere in :mod:`tkmia.plots`, a ``*_frame`` function computes a tidy table and a ``plot_*``
function draws one and returns the matplotlib Figure. :func:`sweep` runs one attack setting per value
of one parameter (through :func:`tkmia.experiments.run`, so every run is stored and reused).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn

from tkmia.monitoring import STATISTICS, detection_table, detects
from tkmia.plots.experiments import METHOD_NAMES, method_label
from tkmia.plots.measures import MEASURE_NAMES
from tkmia.plots.theme import PAGE_WIDTH_IN, distinct_numbers, method_palette, panel_grid, style
from tkmia.report import summarize
from tkmia.selection import GlobalSelection, RandomSelection
from tkmia.training import class_average_precision

__all__ = [
    "STATISTIC_NAMES",
    "as_image",
    "dataset_labels",
    "victim_scores",
    "model_summary",
    "plot_label_statistics",
    "per_class_ap_frame",
    "plot_per_class_ap",
    "eligibility_frame",
    "plot_eligibility",
    "SWEEP_PARAMETERS",
    "sweep",
    "sweep_summary",
    "plot_sweep",
    "budget_frame",
    "plot_budget",
    "plot_detection",
    "detection_verdicts",
    "verdict_prose",
    "detection_curve_frame",
    "plot_detection_curves",
    "parametrisation_summary",
    "return_rule_frame",
]

#: How the book writes each method of :data:`tkmia.attacks.METHODS`.
#: How the book writes each statistic of :data:`tkmia.monitoring.STATISTICS`.
STATISTIC_NAMES = {**{m: MEASURE_NAMES[m] for m in ("precision_at_k", "map_at_k", "ndcg_at_k")},
                   "average_precision": "AP (whole ranking)", "topk_margin": "top-k margin"}



# ---------------------------------------------------------------------------------- victims
def as_image(fig: Figure, dpi: int = 110):
    """``fig`` rendered as a PNG :class:`IPython.display.Image`, for figures made without pyplot
    (e.g. :func:`tkmia.data.show_samples`), which Jupyter's inline display leaves as text."""
    import io

    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return Image(data=buffer.getvalue(), format="png")


def dataset_labels(dataset) -> Tensor:
    """The (N, C) {0, 1} label matrix of ``dataset`` (its ``labels`` attribute, else item by item)."""
    if hasattr(dataset, "labels"):
        return torch.as_tensor(dataset.labels).float()
    return torch.stack([torch.as_tensor(dataset[i][1]).float() for i in range(len(dataset))])


def victim_scores(model: nn.Module, dataset, device: str = "cpu", batch_size: int = 256) -> Tensor:
    """The victim's logits on every image of ``dataset``, (N, C), on the CPU (eval mode)."""
    from tkmia.training import predict

    return predict(model, dataset, batch_size=batch_size, device=device)[0]


def model_summary(model: nn.Module) -> pd.DataFrame:
    """Parameters per top-level block of ``model``: columns block, type, parameters (and a total row)."""
    rows = [{"block": name, "type": type(child).__name__,
             "parameters": sum(p.numel() for p in child.parameters())}
            for name, child in model.named_children()]
    rows.append({"block": "total", "type": type(model).__name__,
                 "parameters": sum(p.numel() for p in model.parameters())})
    return pd.DataFrame(rows)


def plot_label_statistics(labels: Tensor, classes: Sequence[str]) -> Figure:
    """Two panels: how many labels an image has (histogram), and how often each class occurs.

    Shape: labels (N, C) in {0, 1}; ``classes`` the C class names.
    """
    labels = torch.as_tensor(labels).float()
    if labels.ndim != 2 or labels.shape[1] != len(classes):
        raise ValueError(f"labels must be (N, C) with C = len(classes) = {len(classes)}, "
                         f"got shape {tuple(labels.shape)}")
    per_image = labels.sum(1).long().numpy()
    counts = np.bincount(per_image, minlength=per_image.max() + 1 if per_image.size else 1)
    freq = labels.mean(0).numpy()
    style()
    fig, (left, right) = plt.subplots(2, 1, figsize=(PAGE_WIDTH_IN, 6.4),
                                      gridspec_kw={"height_ratios": [1, 1.3]})
    left.bar(np.arange(counts.size), counts / max(per_image.size, 1), color="C0")
    left.set(xlabel="labels per image |Y| (count)", ylabel="fraction of images")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    order = np.argsort(-freq)
    right.bar([classes[i] for i in order], freq[order], color="C1")
    right.set(ylabel="fraction of images", xlabel="class")
    right.tick_params(axis="x", rotation=60)
    for label in right.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


def per_class_ap_frame(scores: Tensor, labels: Tensor, classes: Sequence[str]) -> pd.DataFrame:
    """Average precision of each class over the images (the ranking of the images by that class's
    score), with the class's frequency. Columns class, index, ap, frequency; sorted by ap.

    Shape: scores, labels (N, C). The AP is :func:`tkmia.training.class_average_precision` (tied
    scores form one threshold, as scikit-learn's); a class without positive images gets NaN.
    """
    scores, labels = torch.as_tensor(scores).double(), torch.as_tensor(labels).double()
    if scores.shape != labels.shape or scores.shape[1] != len(classes):
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must both be (N, C) "
                         f"with C = {len(classes)}")
    ap = class_average_precision(scores, labels)
    frame = pd.DataFrame({"class": list(classes), "index": range(len(classes)), "ap": ap.numpy(),
                          "frequency": labels.mean(0).numpy()})
    return frame.sort_values("ap").reset_index(drop=True)


def plot_per_class_ap(frame: pd.DataFrame) -> Figure:
    """Bars of :func:`per_class_ap_frame`: the victim's AP per class, worst first."""
    style()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 3.6))
    sns.barplot(data=frame, x="class", y="ap", color="C2", ax=ax, order=list(frame["class"]))
    ax.set(ylabel="average precision (0–1)", xlabel="class", ylim=(min(0.0, frame["ap"].min()), 1.02))
    ax.tick_params(axis="x", rotation=60)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


def eligibility_frame(scores: Tensor, labels: Tensor, ks: Sequence[int], *, classes: Sequence[int],
                      n_pert: int, del_n: int, seed: int = 0) -> pd.DataFrame:
    """How many images each scheme can attack, per k (the eligibility rules of the book page "The
    reference implementation").

    Global: S = ``classes`` ∩ Y must meet the top-k and |Y| ≥ k + |S|. Random: ``n_pert`` true labels
    of the top-k are drawn and |Y| ≥ k + n_pert (k < n_pert is skipped). Columns scheme, k,
    eligible, images, fraction.
    """
    scores, labels = torch.as_tensor(scores).float(), torch.as_tensor(labels).float()
    ids = torch.arange(scores.shape[0])
    rows = []
    for k in ks:
        schemes = {"global": GlobalSelection(list(classes))}
        if k >= n_pert:
            schemes["random"] = RandomSelection(n_pert, del_n, seed=seed)
        for name, selection in schemes.items():
            spec = selection.select(scores, labels, int(k), ids=ids)
            count = int(spec.eligible.sum())
            rows.append({"scheme": name, "k": int(k), "eligible": count, "images": int(scores.shape[0]),
                         "fraction": count / max(int(scores.shape[0]), 1)})
    return pd.DataFrame(rows)


def plot_eligibility(frame: pd.DataFrame) -> Figure:
    """Bars of :func:`eligibility_frame`: the fraction of images eligible per k and scheme."""
    style()
    fig, ax = plt.subplots(figsize=(5.4, 3.4))
    sns.barplot(data=frame, x="k", y="fraction", hue="scheme", ax=ax)
    ax.set(xlabel="k (top-k size)", ylabel="fraction of images eligible", ylim=(0, 1))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- sensitivity
#: The parameters :func:`sweep` varies (fields of :class:`tkmia.experiments.ExperimentConfig`).
SWEEP_PARAMETERS = ("k", "n_pert", "lr", "weight_decay", "max_iter")


def sweep(profile: str, parameter: str, values: Sequence, *, methods: Sequence[str] = ("tkmia",),
          progress: bool = False, **fixed) -> pd.DataFrame:
    """Records of one run per (method, value of ``parameter``), with a column named ``parameter``.

    ``fixed`` are further :class:`~tkmia.experiments.ExperimentConfig` fields (scheme, n_samples,
    data_root, device ...); runs are stored and reused as by :func:`tkmia.experiments.run`.
    Sweeping ``n_pert`` sets ``del_n = n_pert`` unless ``fixed`` names ``del_n``.
    """
    from tkmia.experiments import ExperimentConfig, run  # floor 4, imported lazily

    if parameter not in SWEEP_PARAMETERS:
        raise ValueError(f"parameter must be one of {SWEEP_PARAMETERS}, got {parameter!r}")
    frames = []
    for method in methods:
        for value in values:
            values_ = {parameter: value}
            if parameter == "n_pert" and "del_n" not in fixed:
                values_["del_n"] = value  # every specified label must leave
            config = ExperimentConfig(profile=profile, method=method, **values_, **fixed)
            records = run(config, progress=progress).records.copy()
            records[parameter] = value
            frames.append(records)
    return pd.concat(frames, ignore_index=True)


def sweep_summary(records: pd.DataFrame, parameter: str) -> pd.DataFrame:
    """:func:`tkmia.report.summarize` per (``parameter``, method) of :func:`sweep`'s records."""
    return summarize(records, by=(parameter, "method"))


def plot_sweep(summary: pd.DataFrame, parameter: str, *, log: bool = False,
               label: str | None = None) -> Figure:
    """Three panels against ``parameter``: success and imperceptible-success rates, mean Pert
    (×255, over successful samples), and the mean ΔP@k; one line per method."""
    style()
    data = summary.assign(method=summary["method"].map(method_label))
    palette = method_palette(data["method"])
    _, _, (width, height) = panel_grid(3, aspect=0.95)
    fig, axes = plt.subplots(1, 3, figsize=(width, height + 0.5))
    rates = data.melt(id_vars=[parameter, "method"], value_vars=["success_rate", "imperceptible_rate"],
                      var_name="rate", value_name="value")
    rates["rate"] = rates["rate"].map({"success_rate": "success", "imperceptible_rate": "imperceptible"})
    sns.lineplot(data=rates, x=parameter, y="value", hue="method", style="rate", marker="o", ax=axes[0],
                 palette=palette)
    axes[0].set(ylabel="rate (fraction of eligible)", ylim=(-0.02, 1.02))
    sns.lineplot(data=data, x=parameter, y="pert_l2_255", hue="method", marker="o", ax=axes[1], legend=False,
                 palette=palette)
    axes[1].set(ylabel="Pert (L2 ×255, [0,1] pixels)")
    pert = data["pert_l2_255"].dropna()
    if len(pert) and (pert > 0).all() and pert.max() > 10 * pert.min():
        axes[1].set_yscale("log")  # values span a decade or more
    sns.lineplot(data=data, x=parameter, y="delta_precision_at_k", hue="method", marker="o", ax=axes[2],
                 legend=False, palette=palette)
    axes[2].axhline(0, color="0.6", lw=0.8)
    axes[2].set(ylabel="mean ΔP@k (adv. − clean)")
    if axes[0].get_legend() is not None:
        handles, names = axes[0].get_legend_handles_labels()
        axes[0].get_legend().remove()
        fig.legend(handles, names, loc="upper center", ncol=min(len(names), 6), frameon=False,
                   bbox_to_anchor=(0.5, 1.0))
    integer = pd.api.types.is_integer_dtype(data[parameter])
    for ax in axes:
        ax.set_xlabel(label or parameter)
        if integer:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            values = sorted(set(data[parameter]))
            if values[0] > 0:
                ax.set_xscale("log")
            else:  # a zero (e.g. no weight decay) needs the linear stretch of a symmetric log axis
                ax.set_xscale("symlog", linthresh=min(v for v in values if v > 0))
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.minorticks_off()
            if values[0] >= 0:  # no empty negative half of the symmetric-log axis
                ax.set_xlim(left=values[0])
            ax.tick_params(axis="x", rotation=45)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return fig


def budget_frame(records: pd.DataFrame, budgets: Sequence[int] | None = None) -> pd.DataFrame:
    """Success rate per method had the attack's budget been ``max_iter = b``, for each budget b.

    Computed from one run's ``iterations`` column, the index of the first successful iterate, with
    no extra runs. A budget ``max_iter = b`` examines iterates 0 … b − 1 (the engine's convention,
    the reference's ``maxiter``), so a sample succeeds within it iff ``iterations < b``. Budgets
    default to 61 values in 1 … (largest iteration + 1). Rates are over eligible samples. Columns
    method, max_iter, success_rate.
    """
    data = records[records["eligible"]]
    if budgets is None:
        top = int(data["iterations"].max()) + 1 if len(data) else 1
        budgets = sorted(set(np.linspace(1, top, 61).round().astype(int).tolist()))
    rows = []
    for method, group in data.groupby("method", sort=False):
        won = group["success"].to_numpy()
        steps = group["iterations"].to_numpy()
        for b in budgets:
            rate = float(np.mean(won & (steps < b)))
            rows.append({"method": method, "max_iter": int(b), "success_rate": rate})
    return pd.DataFrame(rows)


def plot_budget(frame: pd.DataFrame) -> Figure:
    """Lines of :func:`budget_frame`: success rate against the iteration budget, one per method."""
    style()
    data = frame.assign(method=frame["method"].map(method_label))
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    sns.lineplot(data=data, x="max_iter", y="success_rate", hue="method", drawstyle="steps-post", ax=ax,
                 palette=method_palette(data["method"]))
    ax.set(xlabel="iteration budget max_iter (iterations)", ylabel="success rate (fraction)",
           ylim=(-0.02, 1.02))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- monitoring
def plot_detection(table: pd.DataFrame) -> Figure:
    """Heatmap of :func:`tkmia.monitoring.detection_table`: detection rate per method × statistic."""
    grid = table.pivot(index="method", columns="statistic", values="detection")
    grid = grid.reindex(index=[m for m in METHOD_NAMES if m in grid.index] +
                        [m for m in grid.index if m not in METHOD_NAMES],
                        columns=[s for s in STATISTICS if s in grid.columns])
    grid = grid.rename(index=method_label, columns=lambda s: STATISTIC_NAMES.get(s, s))
    style()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 0.6 * len(grid) + 2.0))
    sns.heatmap(grid, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="rocket_r", ax=ax,
                cbar_kws={"label": "detection rate (fraction)"})
    ax.set(xlabel="statistic the victim watches", ylabel="attack")
    ax.tick_params(axis="x", rotation=20)
    ax.tick_params(axis="y", rotation=0)  # horizontal method names never overlap
    fig.tight_layout()
    return fig


def detection_verdicts(table: pd.DataFrame, alpha: float, attack: str = "tkmia") -> dict:
    """What :func:`tkmia.monitoring.detection_table` says about ``attack`` against the other methods.

    An attack counts as *detected* by a statistic under :func:`tkmia.monitoring.detects` (its
    detection rate above twice the statistic's realised false-alarm rate); by a set of statistics
    when any of them detects it. Returns (NaN / "n/a" where a method is missing):
    ``tkmia_paper_max`` (the attack's highest detection rate over P@k, mAP@k, NDCG@k),
    ``tkmia_paper_alarm`` (the realised false-alarm rate of that statistic), ``tkmia_paper_ratio``
    (their ratio, ∞ when no clean image was flagged), ``false_alarm_paper_max``,
    ``baselines_paper_min`` (the lowest, over the other methods, of each one's highest rate over
    those three), ``tkmia_paper_verdict`` ("detected" / "not detected"), ``baselines_paper_verdict``
    ("all", "some", "none"), ``tkmia_ap``, ``tkmia_margin``, ``false_alarm_ap``,
    ``false_alarm_margin`` and ``tkmia_ap_verdict``, ``tkmia_margin_verdict`` and
    ``tkmia_smart_verdict`` (by either of the two). ``alpha`` is the budget the table was made with.
    """
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    paper = ["precision_at_k", "map_at_k", "ndcg_at_k"]
    grid = table.pivot(index="method", columns="statistic", values="detection")
    alarms = table.groupby("statistic")["false_alarm"].max()
    nan = float("nan")

    def rate(method, statistics):
        if method not in grid.index:
            return nan
        return float(grid.loc[method, [s for s in statistics if s in grid.columns]].max())

    def detected(method, statistics) -> bool | None:
        if method not in grid.index:
            return None
        return any(bool(detects(grid.loc[method, s], alarms[s])) for s in statistics if s in grid.columns)

    def verdict(method, statistics):
        caught = detected(method, statistics)
        return "n/a" if caught is None else ("detected" if caught else "not detected")

    others = [m for m in grid.index if m != attack]
    best = [rate(m, paper) for m in others]
    caught = sum(bool(detected(m, paper)) for m in others)
    top = rate(attack, paper)
    rates = grid.loc[attack, [s for s in paper if s in grid.columns]].astype(float) \
        if attack in grid.index else pd.Series(dtype=float)
    if rates.notna().any():  # NaN when the attack never succeeded
        loudest = rates.idxmax()
        alarm = float(alarms[loudest])
        ratio = top / alarm if alarm > 0 else (float("inf") if top > 0 else nan)
    else:
        alarm = ratio = nan
    return {
        "tkmia_paper_max": top,
        "tkmia_paper_alarm": alarm,
        "tkmia_paper_ratio": ratio,
        "false_alarm_paper_max": float(alarms.reindex(paper).max()),
        "baselines_paper_min": float(min(best)) if best else nan,
        "tkmia_paper_verdict": verdict(attack, paper),
        "baselines_paper_verdict": ("n/a" if not others else "all" if caught == len(others)
                                    else "none" if caught == 0 else "some"),
        "tkmia_ap": rate(attack, ["average_precision"]),
        "tkmia_margin": rate(attack, ["topk_margin"]),
        "false_alarm_ap": float(alarms.get("average_precision", nan)),
        "false_alarm_margin": float(alarms.get("topk_margin", nan)),
        "tkmia_ap_verdict": verdict(attack, ["average_precision"]),
        "tkmia_margin_verdict": verdict(attack, ["topk_margin"]),
        "tkmia_smart_verdict": verdict(attack, ["average_precision", "topk_margin"]),
    }


_VERDICT_RATES = ("tkmia_paper_max", "tkmia_paper_alarm", "false_alarm_paper_max", "baselines_paper_min",
                  "tkmia_ap", "tkmia_margin", "false_alarm_ap", "false_alarm_margin")


def verdict_prose(verdicts: dict) -> dict[str, str]:
    """:func:`detection_verdicts` as the text the monitoring chapter glues: the rates formatted
    together (:func:`tkmia.plots.distinct_numbers`, so a detection rate never reads equal to a
    different false-alarm rate), the verdict words unchanged, and ``tkmia_paper_ratio`` as a
    clause that reads right in every case ("so TkMIA's images are flagged 16 times as often as
    clean ones", "... at a rate of 0.419 while no clean image is", ...), and ``paper_claim``:
    whether the paper's claim of measure imperceptibility "holds" (TkMIA not detected by the top-k
    measures), "does not hold" or "cannot be judged"."""
    missing = sorted({*_VERDICT_RATES, "tkmia_paper_ratio"} - set(verdicts))
    if missing:
        raise ValueError(f"verdicts lacks {missing}; pass the output of detection_verdicts")
    out = {name: str(value) for name, value in verdicts.items() if isinstance(value, str)}
    texts = distinct_numbers([verdicts[name] for name in _VERDICT_RATES])
    out.update(zip(_VERDICT_RATES, texts, strict=True))
    out["paper_claim"] = {"not detected": "holds", "detected": "does not hold"}.get(
        str(verdicts.get("tkmia_paper_verdict")), "cannot be judged")
    ratio, top = float(verdicts["tkmia_paper_ratio"]), float(verdicts["tkmia_paper_max"])
    if np.isfinite(ratio):
        out["tkmia_paper_ratio"] = (f"so TkMIA's images are flagged {distinct_numbers([ratio])[0]} times "
                                    "as often as clean ones")
    elif ratio == float("inf"):
        out["tkmia_paper_ratio"] = (f"so TkMIA's images are flagged at a rate of {out['tkmia_paper_max']} "
                                    "while no clean image is")
    elif top == 0:
        out["tkmia_paper_ratio"] = "so neither TkMIA's images nor clean ones are flagged"
    else:
        out["tkmia_paper_ratio"] = "and there is no successful TkMIA image to compare"
    return out


def detection_curve_frame(records: pd.DataFrame, alphas: Sequence[float] | None = None) -> pd.DataFrame:
    """:func:`tkmia.monitoring.detection_table` for every false-alarm budget in ``alphas``
    (an ROC-style curve per method and statistic); column ``alpha`` added."""
    alphas = np.linspace(0.0, 0.5, 26) if alphas is None else alphas
    return pd.concat([detection_table(records, float(a)).assign(alpha=float(a)) for a in alphas],
                     ignore_index=True)


def plot_detection_curves(frame: pd.DataFrame) -> Figure:
    """Detection rate of each method and false-alarm rate on clean images (black, dashed) against
    the monitor's false-alarm budget α, one panel per statistic (:func:`detection_curve_frame`).

    The x axis is the budget, not the realised false-alarm rate: the top-k measures take few values,
    so their realised rate stays at 0 over most budgets and an ROC plot would pile every curve on
    the left edge. A method whose line stays near the dashed one goes unnoticed by that statistic.
    """
    style()
    data = frame.assign(method=frame["method"].map(method_label),
                        statistic=frame["statistic"].map(lambda s: STATISTIC_NAMES.get(s, s)))
    present = set(data["statistic"])
    names = [STATISTIC_NAMES.get(s, s) for s in STATISTICS if STATISTIC_NAMES.get(s, s) in present]
    if not names:
        raise ValueError("frame holds no statistic of tkmia.monitoring.STATISTICS")
    palette = method_palette(data["method"])
    rows, cols, (width, height) = panel_grid(len(names), aspect=0.9)
    fig, axes = plt.subplots(rows, cols, figsize=(width, height + 0.5), sharey=True, squeeze=False)
    top = float(data["alpha"].max())
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            fig.delaxes(ax)
            continue
        part = data[data["statistic"] == names[i]].sort_values("alpha")
        sns.lineplot(data=part, x="alpha", y="detection", hue="method", marker="o", ax=ax, markersize=4,
                     drawstyle="steps-post", legend=i == 0, errorbar=None, palette=palette)
        clean = part.drop_duplicates("alpha")
        ax.plot(clean["alpha"], clean["false_alarm"], color="black", ls="--", lw=1.2, drawstyle="steps-post",
                label="false alarms (clean)")
        ax.set(title=names[i], xlabel="false-alarm budget α", xlim=(-0.01, top + 0.01), ylim=(-0.02, 1.02))
        ax.set_ylabel("rate (fraction of images)" if i % cols == 0 else "")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if axes.flat[0].get_legend() is not None:
        axes.flat[0].get_legend().remove()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


# ---------------------------------------------------------------------------------- the reference's quirks
def parametrisation_summary(runs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Runs of one method under several parametrisations (name -> records), on the samples eligible
    in all of them: per parametrisation the number of samples, the clean measures' means, success
    rate, mean Pert over successful samples in [0, 1] units, ×255 and in the tanh space, and the mean
    Δ of each measure. Book chapter "Reproducing the paper at full scale"."""
    from tkmia.metrics import MEASURES

    if not runs:
        raise ValueError("runs must name at least one parametrisation's records")
    common = None
    for records in runs.values():
        ids = set(records.loc[records["eligible"], "sample"])
        common = ids if common is None else common & ids
    rows = []
    for name, records in runs.items():
        data = records[records["sample"].isin(common)]
        won = data[data["success"]]
        row = {"parametrisation": name, "n": len(data)}
        row.update({f"clean_{m}": data[f"clean_{m}"].mean() for m in MEASURES})
        row.update({"success_rate": data["success"].mean(), "pert_l2": won["pert_l2"].mean(),
                    "pert_l2_255": won["pert_l2_255"].mean(), "tanh_space_l2": won["tanh_space_l2"].mean(),
                    "tanh_space_l2_255": 255 * won["tanh_space_l2"].mean()})
        row.update({f"delta_{m}": (data[f"adv_{m}"] - data[f"clean_{m}"]).mean() for m in MEASURES})
        rows.append(row)
    return pd.DataFrame(rows)


def return_rule_frame(records: pd.DataFrame) -> pd.DataFrame:
    """What the return rule for failed samples does to the mean Δ of each measure, per method.

    The reference (and tkmia) return the last iterate of a sample that did not succeed within the
    budget, so its measure changes count in the table's means; the alternative returns the clean
    image on failure (its Δ is 0). Columns method, failed (fraction of eligible samples), then
    ``delta_<measure>`` under the rule ``"last iterate"`` and ``"clean on failure"`` (column rule).
    """
    from tkmia.metrics import MEASURES

    data = records[records["eligible"]]
    rows = []
    for method, group in data.groupby("method", sort=False):
        won = group["success"].to_numpy()
        for rule in ("last iterate", "clean on failure"):
            row = {"method": method, "rule": rule, "n": len(group), "failed": float(np.mean(~won))}
            for m in MEASURES:
                delta = (group[f"adv_{m}"] - group[f"clean_{m}"]).to_numpy()
                row[f"delta_{m}"] = float(np.mean(delta if rule == "last iterate" else delta * won))
            rows.append(row)
    return pd.DataFrame(rows)
