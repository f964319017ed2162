"""The book's open questions, part A: the relaxation, the box parametrisation, the arms race.

Each question compares attacks on the *same* samples (one plan of eligible samples per setting,
from :mod:`tkmia.experiments`, so runs are shared with every chapter of the same setting) and ends
in a verdict computed from the records. Book part "Open questions": chapters "Does the convex
relaxation cost anything?" (:func:`relaxation_runs`, :func:`bound_gaps`), "The box
parametrisation" (:func:`parametrisation_runs`, :func:`pixel_shares`) and "The arms race"
(:func:`arms_race_runs`, :func:`monitor_table`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as _stats
from torch import Tensor

from tkmia import experiments, monitoring
from tkmia.experiments import ExperimentConfig
from tkmia.metrics import MEASURES, WATCHED_MEASURES
from tkmia.relaxation import average_top_k, kth_largest, tkmia_terms
from tkmia.report import group_summary, with_deltas

__all__ = [
    "COMPARISON_COLUMNS",
    "variant_configs",
    "variant_runs",
    "comparison_table",
    "paired_test",
    "relaxation_runs",
    "relaxation_verdict",
    "attack_path",
    "bound_gaps",
    "bound_gap_table",
    "parametrisation_variants",
    "parametrisation_runs",
    "pixel_shares",
    "parametrisation_verdict",
    "arms_race_runs",
    "EXTRA_STATISTICS",
    "extra_statistics",
    "monitor_table",
    "arms_race_verdict",
]

#: Columns of :func:`comparison_table`, in order.
COMPARISON_COLUMNS = ("n", "success_rate", "imperceptible_rate", "iterations", "pert_l2", "pert_l2_255",
                      *(f"delta_{m}" for m in MEASURES))


# ---------------------------------------------------------------------------------- shared
def variant_configs(variants: Mapping[str, tuple], *, profile: str = "default", k: int | None = None,
                    n_samples: int | None = None, save_images: int = 8,
                    **config) -> dict[str, ExperimentConfig]:
    """The configuration of each variant: name -> (method, options) or (method, options, fields),
    ``fields`` being :class:`~tkmia.experiments.ExperimentConfig` fields of that variant only (e.g.
    ``{"lr": 2.5e-4}``); the global scheme; ``config`` holds fields shared by every variant
    (``data_root``, ``device`` ...)."""
    if not variants:
        raise ValueError("variants must name at least one (method, options) pair")
    out = {}
    for name, spec in variants.items():
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise ValueError(f"variant {name!r} must be (method, options) or (method, options, fields), "
                             f"got {spec!r}")
        method, options, own = (*spec, {}) if len(spec) == 2 else spec
        out[name] = ExperimentConfig(**{"profile": profile, "method": method, "scheme": "global", "k": k,
                                        "n_samples": n_samples, "options": dict(options),
                                        "save_images": save_images, **config, **dict(own)})
    return out


def variant_runs(variants: Mapping[str, tuple], *, progress: bool = False, **kw) -> pd.DataFrame:
    """One run per variant (see :func:`variant_configs`, which takes ``kw``); all records in one
    table with a ``variant`` column. Each run goes through :func:`tkmia.experiments.run`, so a
    stored run of the same setting is loaded, not recomputed."""
    frames = [experiments.run(cfg, progress=progress).records.assign(variant=name)
              for name, cfg in variant_configs(variants, **kw).items()]
    return pd.concat(frames, ignore_index=True)


def _common(records: pd.DataFrame) -> pd.DataFrame:
    """The eligible records of the samples eligible in every variant."""
    data = records[records["eligible"].astype(bool)]
    common = set.intersection(*(set(g["sample"]) for _, g in data.groupby("variant", sort=False)))
    return data[data["sample"].isin(common)]


def comparison_table(records: pd.DataFrame) -> pd.DataFrame:
    """Per variant, on the samples eligible in every variant: ``n``, success and imperceptible
    rates, mean iterations (over those samples), mean Pert over successful samples in [0, 1]
    pixel units (``pert_l2``) and ×255 (``pert_l2_255``), and the mean Δ (adversarial − clean)
    of each measure. Rows in the order the variants first appear; columns :data:`COMPARISON_COLUMNS`."""
    if "variant" not in records:
        raise ValueError("records need a 'variant' column (see variant_runs)")
    data = with_deltas(_common(records))
    if data.empty:
        raise ValueError("no sample is eligible in every variant: there is nothing to compare")
    columns = [c for c in COMPARISON_COLUMNS if c not in ("n", "success_rate", "imperceptible_rate")]
    return group_summary(data, ["variant"], columns, sort=False)[["variant", *COMPARISON_COLUMNS]]


def paired_test(records: pd.DataFrame, first: str, second: str) -> dict[str, float]:
    """Two variants compared sample by sample on the samples eligible in both.

    Returns ``n``; ``success_first_only`` and ``success_second_only`` (counts of samples only one of
    them removes S on) with the exact two-sided sign test's ``success_p`` (McNemar's exact test);
    the same for imperceptible success (``imperceptible_*``); and, on the samples both remove S on
    (``n_both``), the median ratio of Pert second/first (``pert_ratio``), the share where the second's
    Pert is smaller (``pert_second_smaller``) and the Wilcoxon signed-rank test's ``pert_p`` (NaN
    with fewer than 2 such samples or no difference).
    """
    data = _common(records[records["variant"].isin([first, second])])
    wide = data.pivot(index="sample", columns="variant", values=["success", "imperceptible", "pert_l2"])
    out: dict[str, float] = {"n": float(len(wide))}
    for what in ("success", "imperceptible"):
        a, b = wide[what][first].astype(bool), wide[what][second].astype(bool)
        only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
        out[f"{what}_first_only"], out[f"{what}_second_only"] = float(only_a), float(only_b)
        out[f"{what}_p"] = (float(_stats.binomtest(only_a, only_a + only_b).pvalue)
                            if only_a + only_b else 1.0)
    both = wide["success"][first].astype(bool) & wide["success"][second].astype(bool)
    p1, p2 = wide["pert_l2"][first][both].to_numpy(float), wide["pert_l2"][second][both].to_numpy(float)
    out["n_both"] = float(both.sum())
    out["pert_ratio"] = float(np.median(p2 / p1)) if both.any() else float("nan")
    out["pert_second_smaller"] = float(np.mean(p2 < p1)) if both.any() else float("nan")
    differ = p1 != p2
    out["pert_p"] = (float(_stats.wilcoxon(p1[differ], p2[differ]).pvalue) if differ.sum() >= 2
                     else float("nan"))
    return out


def _significant(p: float, level: float) -> bool:
    return bool(np.isfinite(p) and p < level)


# ---------------------------------------------------------------------------------- 1. the relaxation
def relaxation_runs(widths: Sequence[int] = (1,), **kw) -> pd.DataFrame:
    """TkMIA (``"TkMIA (ATk)"``) and TkMIA-exact at each width of ``widths`` (``"width w"``; width 1:
    the unrelaxed conditions) on the same samples, through :func:`variant_runs` (``kw``)."""
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be ints >= 1, got {widths}")
    variants = {"TkMIA (ATk)": ("tkmia", {})}
    variants.update({f"width {w}": ("tkmia_exact", {"width": w}) for w in widths})
    return variant_runs(variants, **kw)


def relaxation_verdict(records: pd.DataFrame, level: float = 0.05, exact: str = "width 1",
                       relaxed: str = "TkMIA (ATk)") -> dict[str, object]:
    """Does the relaxation cost anything? ``exact`` against ``relaxed``, paired (:func:`paired_test`).

    The relaxation *costs* success (or imperceptible success) when the exact loss removes S on
    significantly more samples (exact sign test at ``level``), *costs* perturbation when, on the
    samples both remove S on, the exact loss's Pert is significantly smaller (Wilcoxon) with median
    ratio below 1; it *helps* in the opposite cases. Returns the paired numbers and ``verdict``: a
    sentence fragment ("costs success", "costs nothing measurable", "helps: ..." ...).
    """
    test = paired_test(records, relaxed, exact)
    costs, helps = [], []
    for what, word in (("success", "success"), ("imperceptible", "imperceptible success")):
        if _significant(test[f"{what}_p"], level):
            (costs if test[f"{what}_second_only"] > test[f"{what}_first_only"] else helps).append(word)
    if _significant(test["pert_p"], level):
        (costs if test["pert_ratio"] < 1 else helps).append("perturbation size")
    if costs and helps:
        verdict = f"costs {' and '.join(costs)} but saves {' and '.join(helps)}"
    elif costs:
        verdict = f"costs {' and '.join(costs)}"
    elif helps:
        verdict = f"costs nothing; the exact loss does worse in {' and '.join(helps)}"
    else:
        verdict = "costs nothing measurable"
    return {**test, "verdict": verdict}


def attack_path(config: ExperimentConfig, n: int, *, record_history: bool = True):
    """Attack the first ``n`` eligible samples of ``config``'s setting directly (not stored), with the
    iterates' history. Returns (result, labels (n, C), specified (n, C)) — the AttackResult's
    ``history["scores"]`` is (T, n, C), NaN where a sample took no step."""
    from tkmia.data import load_dataset
    from tkmia.profiles import load_profile
    from tkmia.victims import load_victim

    profile = load_profile(config.profile)
    config = experiments.ExperimentConfig(**{**config.resolve(profile).to_dict(), "n_samples": int(n)})
    model, _ = load_victim(profile, data_root=config.data_root, device=config.device, progress=False)
    dataset = load_dataset(profile, profile.dataset.eval_split, root=config.data_root)
    result, _ = experiments.attack_eligible(config, model, dataset, box=tuple(profile.attack.box),
                                            record_history=record_history)
    return result, result.labels, result.specified


def bound_gaps(scores: Tensor, labels: Tensor, specified: Tensor, k: int) -> pd.DataFrame:
    """How tight the ATk bounds are along an attack's path.

    ``scores`` (T, N, C) are the iterates' scores (e.g. ``result.history["scores"]``, NaN rows
    skipped). Per step t and sample: ``gap_a`` = ATk_{C−k}(a) − a_[C−k] and ``gap_b`` = ATk_k(b) −
    b_[k] (≥ 0, in logits; 0 means the bound is tight), and ``exact_a`` = a_[C−k], ``exact_b`` =
    b_[k] themselves. Long frame: columns iteration, sample (the column index), term ("a" or
    "b"), gap, exact.
    """
    if scores.dim() != 3 or labels.shape != scores.shape[1:] or specified.shape != scores.shape[1:]:
        raise ValueError(f"scores must be (T, N, C) with labels and specified (N, C), got "
                         f"{tuple(scores.shape)}, {tuple(labels.shape)}, {tuple(specified.shape)}")
    steps, n, num_classes = scores.shape
    flat = scores.reshape(steps * n, num_classes).double()
    present = torch.isfinite(flat).all(1)
    y = labels.double().repeat(steps, 1)[present]
    s = specified.double().repeat(steps, 1)[present]
    a, b = tkmia_terms(flat[present], y, s, k)
    exact_a, exact_b = kth_largest(a, num_classes - k), kth_largest(b, k)
    gap_a, gap_b = average_top_k(a, num_classes - k) - exact_a, average_top_k(b, k) - exact_b
    where = present.nonzero().flatten()
    iteration, sample = (where // n).numpy(), (where % n).numpy()
    frames = [pd.DataFrame({"iteration": iteration, "sample": sample, "term": term, "gap": gap.numpy(),
                            "exact": exact.numpy()})
              for term, gap, exact in (("a", gap_a, exact_a), ("b", gap_b, exact_b))]
    return pd.concat(frames, ignore_index=True)


def bound_gap_table(gaps: pd.DataFrame) -> pd.DataFrame:
    """Per term: the gap at the start (iteration 0, median over samples), its median over every
    step of every path, at each path's last step, and its ratio to |exact| at the last step
    (median): how loose the surrogate is where the attack actually ends."""
    rows = []
    for term, group in gaps.groupby("term", sort=True):
        last = group.loc[group.groupby("sample")["iteration"].idxmax()]
        rows.append({"term": term, "samples": group["sample"].nunique(),
                     "steps": len(group), "gap_start": group.loc[group["iteration"] == 0, "gap"].median(),
                     "gap_median": group["gap"].median(), "gap_last": last["gap"].median(),
                     "exact_last": last["exact"].median(),
                     "gap_over_exact_last": (last["gap"] / last["exact"].abs()).median()})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- 5. the box
def parametrisation_variants(parametrisations: Sequence[str] = ("exact", "reference", "pixel"),
                             pixel_lr_factors: Sequence[float] = (0.5,), lr: float | None = None) -> dict:
    """TkMIA under each box parametrisation (name -> (method, options, fields)); ``"exact"`` is the
    default attack (no option), so it shares the other chapters' runs of the same setting. The pixel
    parametrisation steps by ∂L/∂x where the tanh ones step by ∂L/∂x · half·(1 − tanh²w) ≤ half·∂L/∂x,
    so at the same ``lr`` its steps are at least 1/half times larger; ``pixel_lr_factors`` adds a
    pixel variant at ``lr`` × each factor (0.5: the tanh step of a mid-grey pixel in the (0, 1)
    box), named "pixel, lr × f". ``lr`` is the shared learning rate (None: the profile's), needed
    to scale."""
    out = {p: ("tkmia", {} if p == "exact" else {"parametrisation": p}) for p in parametrisations}
    if pixel_lr_factors:
        if lr is None:
            raise ValueError("pixel_lr_factors need lr (the profile's attack.lr) to scale")
        for f in pixel_lr_factors:
            out[f"pixel, lr × {f:g}"] = ("tkmia", {"parametrisation": "pixel"}, {"lr": float(lr) * float(f)})
    return out


def parametrisation_runs(variants: Mapping[str, tuple], n_samples: int | None = None, **kw) -> pd.DataFrame:
    """The runs of :func:`parametrisation_variants` (``variants``) through :func:`variant_runs`, with
    the images of every sample saved (for :func:`pixel_shares`)."""
    save = int(n_samples) if n_samples is not None else 10**6
    return variant_runs(variants, n_samples=n_samples, save_images=save, **kw)


def pixel_shares(records: pd.DataFrame, variants: Mapping[str, tuple], *, threshold: float = 0.5 / 255,
                 **kw) -> pd.DataFrame:
    """Per variant of :func:`parametrisation_runs` (the same ``variants`` and ``kw``), on the saved
    images of the samples eligible in every variant: the share of clean pixel values on the box's
    edges (``saturated``), the share of pixel values the attack moved by more than ``threshold``
    (default half a grey level, so that the change survives 8-bit quantisation) over all pixels
    (``moved``) and over the saturated ones (``saturated_moved``), and the number of samples with
    images (``n_images``)."""
    common = set(_common(records)["sample"])
    rows = []
    for name, cfg in variant_configs(variants, **kw).items():
        found = experiments.run(cfg, progress=False)
        saved = experiments.load_images(found)
        keep = [i for i, s in enumerate(saved["sample"]) if s in common]
        if not keep:
            raise ValueError(f"variant {name!r}: no saved image of a common eligible sample")
        clean, adv = saved["clean"][keep].double(), saved["adv"][keep].double()
        low, high = (float(b) for b in found.meta["box"])
        edge = (clean <= low) | (clean >= high)
        moved = (adv - clean).abs() > threshold * (high - low)
        rows.append({"variant": name, "n_images": len(keep), "saturated": edge.double().mean().item(),
                     "moved": moved.double().mean().item(),
                     "saturated_moved": (moved & edge).sum().item() / max(int(edge.sum()), 1)})
    return pd.DataFrame(rows)


def parametrisation_verdict(records: pd.DataFrame, default: str = "exact", level: float = 0.05) -> dict:
    """Which parametrisation should the book's attacks use? Each other one against ``default``,
    paired (:func:`paired_test`): a candidate is *better* when it removes S on significantly more
    samples, or on as many (no significant difference) with a significantly smaller Pert (median
    ratio < 1); *worse* in the mirror cases. Returns per candidate its test and word, and
    ``choice`` (the better candidate with the smallest Pert ratio, else ``default``) with
    ``change`` ("change" / "keep")."""
    out: dict[str, object] = {}
    better = {}
    for name in records["variant"].unique():
        if name == default:
            continue
        test = paired_test(records, default, name)
        success_diff = test["success_second_only"] - test["success_first_only"]
        pert = test["pert_ratio"]
        if _significant(test["success_p"], level):
            word = "better" if success_diff > 0 else "worse"
        elif _significant(test["pert_p"], level):
            word = "better" if pert < 1 else "worse"
        else:
            word = "no different"
        out[name] = {**test, "word": word}
        if word == "better":
            better[name] = pert if np.isfinite(pert) else 1.0
    choice = min(better, key=better.get) if better else default
    out["choice"] = choice
    out["change"] = "change" if choice != default else "keep"
    return out


# ---------------------------------------------------------------------------------- 6. the arms race
def arms_race_runs(weight: float = 1.0, keep: float = 0.5, **kw) -> pd.DataFrame:
    """TkMIA and TkMIA-margin (``weight``, ``keep``) on the same samples, through :func:`variant_runs`;
    ``variant`` is the method name (so :func:`tkmia.monitoring.detection_table` groups by it)."""
    variants = {"tkmia": ("tkmia", {}), "tkmia_margin": ("tkmia_margin", {"weight": weight, "keep": keep})}
    return variant_runs(variants, **kw)


#: Label-free statistics a victim could watch next (name -> (what it watches, sides flagged)):
#: "low" flags small values (as every statistic of :data:`tkmia.monitoring.STATISTICS`), "both"
#: flags values outside the clean images' central range.
EXTRA_STATISTICS = {
    "next_margin": ("score gap f_[k+1] − f_[k+2] below the boundary", "low"),
    "kth_score": ("the k-th largest score f_[k] itself", "low"),
    "positives": ("number of labels with a positive logit (predicted |Y|)", "both"),
}


def extra_statistics(scores: Tensor, k: int) -> dict[str, Tensor]:
    """Every statistic of :data:`EXTRA_STATISTICS` per sample. Shape: (N, C) -> dict of (N,)."""
    top = torch.topk(scores, k + 2, dim=1).values
    return {"next_margin": top[:, k] - top[:, k + 1], "kth_score": top[:, k - 1],
            "positives": (scores > 0).sum(1).to(scores.dtype)}


def _statistics(records: pd.DataFrame, which: str, k: int) -> dict[str, np.ndarray]:
    tensors = experiments.records_tensors(records[[f"{which}_scores", "labels"]])
    scores, labels = tensors[f"{which}_scores"], tensors["labels"]
    out = {name: v.numpy() for name, v in monitoring.statistics(scores, labels, k).items()}
    out.update({name: v.numpy() for name, v in extra_statistics(scores, k).items()})
    return out


def monitor_table(records: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per (method, statistic), for the statistics of :data:`tkmia.monitoring.STATISTICS` and
    :data:`EXTRA_STATISTICS`: the realised false-alarm rate on the clean eligible images, the
    detection rate of each method's successful images, and ``detected`` by chapter "Measure
    monitoring"'s rule (detection above twice the realised false-alarm rate).

    One-sided statistics flag values below τ = :func:`tkmia.monitoring.threshold` at ``alpha``;
    two-sided ones flag values below the α/2 threshold or above the mirror one. Columns method,
    statistic, sides, false_alarm, detection, n_attacks, detected.
    """
    data = records[records["eligible"].astype(bool)]
    if data["k"].nunique() != 1:
        raise ValueError(f"records must hold one k, got {sorted(data['k'].unique())}")
    k = int(data["k"].iloc[0])
    clean = _statistics(data.drop_duplicates("sample"), "clean", k)
    sides = {**{name: "low" for name in monitoring.STATISTICS},
             **{name: side for name, (_, side) in EXTRA_STATISTICS.items()}}
    flags = {}
    for name, side in sides.items():
        if side == "low":
            tau = monitoring.threshold(clean[name], alpha)
            flags[name] = lambda v, t=tau: v < t
        else:
            low = monitoring.threshold(clean[name], alpha / 2)
            high = -monitoring.threshold(-clean[name], alpha / 2)
            flags[name] = lambda v, lo=low, hi=high: (v < lo) | (v > hi)
    rows = []
    for method, group in data.groupby("method", sort=False):
        won = group[group["success"].astype(bool)]
        adv = _statistics(won, "adv", k) if len(won) else None
        for name, flag in flags.items():
            alarm = float(np.mean(flag(clean[name])))
            detection = float(np.mean(flag(adv[name]))) if adv is not None else float("nan")
            rows.append({"method": method, "statistic": name, "sides": sides[name], "false_alarm": alarm,
                         "detection": detection, "n_attacks": len(won),
                         "detected": bool(monitoring.detects(detection, alarm))})
    return pd.DataFrame(rows)


_NO_ATTACK = "cannot be judged (no successful attack)"


def arms_race_verdict(records: pd.DataFrame, table: pd.DataFrame, level: float = 0.05) -> dict[str, object]:
    """What the arms race shows: whether TkMIA and TkMIA-margin are detected by the top-k margin
    (``tkmia_caught``, ``margin_caught``: "caught" / "not caught"), the detection rates and the
    margin's realised false-alarm rate, what evasion costs (paired: :func:`paired_test`, success
    and Pert), whether the paper's measures (P@k, mAP@k, NDCG@k) detect TkMIA-margin
    (``paper_rate``, ``paper_caught``), and the next monitor: of the statistics beyond the paper's
    measures and the top-k margin, the one that detects TkMIA-margin most relative to its false
    alarms (``next_statistic``, its rate, and ``next_verdict``: "catches" / "does not catch")."""
    grid = table.set_index(["method", "statistic"])
    out: dict[str, object] = {}
    for method, key in (("tkmia", "tkmia"), ("tkmia_margin", "margin")):
        row = grid.loc[(method, "topk_margin")]
        out[f"{key}_margin_rate"] = float(row["detection"])
        out[f"{key}_caught"] = (_NO_ATTACK if np.isnan(row["detection"])
                                else "caught" if bool(row["detected"]) else "not caught")
    out["margin_alarm"] = float(grid.loc[("tkmia", "topk_margin"), "false_alarm"])
    test = paired_test(records.assign(variant=records["method"]), "tkmia", "tkmia_margin")
    out.update({f"cost_{name}": value for name, value in test.items()})
    summary = comparison_table(records.assign(variant=records["method"])).set_index("variant")
    out["success_tkmia"] = float(summary.loc["tkmia", "success_rate"])
    out["success_margin"] = float(summary.loc["tkmia_margin", "success_rate"])
    out["imperceptible_tkmia"] = float(summary.loc["tkmia", "imperceptible_rate"])
    out["imperceptible_margin"] = float(summary.loc["tkmia_margin", "imperceptible_rate"])
    out["pert_tkmia"] = float(summary.loc["tkmia", "pert_l2_255"])
    out["pert_margin"] = float(summary.loc["tkmia_margin", "pert_l2_255"])
    out["success_cost"] = ("significant" if _significant(test["success_p"], level) else "not significant")
    mine = table[table["method"] == "tkmia_margin"].set_index("statistic")
    paper = mine.loc[[m for m in WATCHED_MEASURES if m in mine.index]]
    out["paper_rate"] = float(paper["detection"].max())
    out["paper_caught"] = (_NO_ATTACK if paper["detection"].isna().all()
                           else "caught" if paper["detected"].any() else "not caught")
    others = table[(table["method"] == "tkmia_margin")
                   & ~table["statistic"].isin([*WATCHED_MEASURES, "topk_margin"])]
    excess = monitoring.detection_excess(others["detection"], others["false_alarm"])
    others = others.assign(excess=pd.Series(excess, index=others.index).fillna(-np.inf))
    best = others.sort_values("excess", ascending=False).iloc[0]
    out["next_statistic"] = str(best["statistic"])
    out["next_rate"] = float(best["detection"])
    out["next_alarm"] = float(best["false_alarm"])
    out["next_verdict"] = (_NO_ATTACK if np.isnan(best["detection"])
                           else "catches" if bool(best["detected"]) else "does not catch")
    return out
