"""Figures of the theory chapters ("The problem", "The convex relaxation", "The algorithm on one
image"), and the small tables they are drawn from.

Each ``*_frame`` function computes a tidy :class:`pandas.DataFrame`; each ``plot_*`` function draws
one and returns the matplotlib figure, so the notebooks stay thin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from tkmia.metrics import MEASURES, ranks
from tkmia.plots.theme import PAGE_WIDTH_IN, panel_grid, style
from tkmia.relaxation import atk_minimiser, atk_variational, average_top_k, kth_largest

__all__ = [
    "atk_line_frame",
    "plot_atk_vs_kth",
    "variational_frame",
    "plot_variational",
    "midpoint_convexity_gap",
    "plot_loss_history",
    "plot_lambda_modes",
    "rank_history_frame",
    "plot_rank_history",
    "topk_before_after",
    "measure_pairs_frame",
    "plot_measure_collapse",
    "plot_perturbation",
]

_MEASURE_LABELS = {"topk_accuracy": "top-k accuracy", "precision_at_k": "P@k", "map_at_k": "mAP@k",
                   "ndcg_at_k": "NDCG@k"}


def _as_vector(v, name: str = "v") -> Tensor:
    v = torch.as_tensor(v, dtype=torch.float64)
    if v.ndim != 1 or v.numel() < 2:
        raise ValueError(f"{name} must be a 1-D vector with at least 2 entries, got shape {tuple(v.shape)}")
    return v


def atk_line_frame(v, direction, m: int, ts: Sequence[float]) -> pd.DataFrame:
    """The exact m-th largest entry and its ATk bound along the line v + t·direction.

    Args:
        v, direction: vectors of the same length C (e.g. a score vector and a direction in score space).
        m: 1 ≤ m ≤ C.
        ts: the positions t on the line.
    Returns: columns ``t``, ``quantity`` ("m-th largest" or "ATk (average of the top m)"), ``value``.

    Example:
        >>> atk_line_frame([1.0, 0.0], [0.0, 1.0], 1, [0.0, 2.0]).value.tolist()
        [1.0, 2.0, 1.0, 2.0]
    """
    v, d = _as_vector(v), _as_vector(direction, "direction")
    if v.shape != d.shape:
        raise ValueError(
            f"v and direction must have the same shape, got {tuple(v.shape)} and {tuple(d.shape)}"
        )
    t = torch.as_tensor(list(ts), dtype=torch.float64)
    points = v + t[:, None] * d
    exact, bound = kth_largest(points, m), average_top_k(points, m)
    return pd.concat([
        pd.DataFrame({"t": t.numpy(), "quantity": f"{_ordinal(m)} largest", "value": exact.numpy()}),
        pd.DataFrame({"t": t.numpy(), "quantity": f"ATk (average of the top {m})", "value": bound.numpy()}),
    ], ignore_index=True)


def _ordinal(m: int) -> str:
    suffix = "th" if 10 <= m % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(m % 10, "th")
    return f"{m}{suffix}"


def plot_atk_vs_kth(frame: pd.DataFrame, title: str | None = None):
    """Draw :func:`atk_line_frame`: the non-convex m-th largest below its convex ATk bound."""
    style()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (quantity, part), line in zip(frame.groupby("quantity", sort=False), ("-", "--"), strict=False):
        ax.plot(part["t"], part["value"], line, label=quantity, lw=2)
    ax.set_xlabel("position t on the line  v + t·d (score units)")
    ax.set_ylabel("value (score units)")
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def variational_frame(v, m: int, lambdas: Sequence[float]) -> pd.DataFrame:
    """The variational form λ + (1/m) Σ_j [v_j − λ]_+ at each λ (Lemma of chapter 5).

    Returns: columns ``lambda``, ``value``; ``attrs`` holds ``atk`` (ATk_m(v)), ``minimiser``
    (λ* = v_[m]) and ``minimisers`` (v_[m+1], v_[m]): every λ of that interval is a minimiser
    (−inf on the left when m = C).

    Example:
        >>> f = variational_frame([3.0, 1.0], 1, [3.0]); float(f.value[0]), f.attrs["atk"]
        (3.0, 3.0)
    """
    v = _as_vector(v)
    lam = torch.as_tensor(list(lambdas), dtype=torch.float64)
    values = atk_variational(v.expand(lam.numel(), -1), m, lam)
    frame = pd.DataFrame({"lambda": lam.numpy(), "value": values.numpy()})
    low = float(kth_largest(v, m + 1)) if m < v.numel() else float("-inf")
    frame.attrs.update(atk=float(average_top_k(v, m)), minimiser=float(atk_minimiser(v, m)),
                       minimisers=(low, float(atk_minimiser(v, m))))
    return frame


def plot_variational(frame: pd.DataFrame, v=None, title: str | None = None):
    """Draw :func:`variational_frame`: a convex piecewise-linear curve in λ whose minimum, ATk_m(v),
    is reached at λ* = v_[m]; the entries of ``v`` (if given) are marked as the curve's kinks."""
    style()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(frame["lambda"], frame["value"], lw=2, label=r"$\lambda + \frac{1}{m}\sum_j [v_j - \lambda]_+$")
    atk, lam_star = frame.attrs["atk"], frame.attrs["minimiser"]
    ax.axhline(atk, color="grey", ls=":", label=r"ATk$_m(v)$")
    low, high = frame.attrs.get("minimisers", (lam_star, lam_star))
    if high > low:
        ax.axvspan(max(low, float(frame["lambda"].min())), high, color="C2", alpha=0.2,
                   label="every minimiser")
    ax.plot([lam_star], [atk], "o", color="C3", ms=8, label=r"$\lambda^* = v_{[m]}$")
    if v is not None:
        for x in _as_vector(v).tolist():
            ax.axvline(x, color="C0", alpha=0.15, lw=1)
    ax.set_xlabel(r"$\lambda$ (score units)")
    ax.set_ylabel("value (score units)")
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def midpoint_convexity_gap(fn: Callable[[Tensor], Tensor], dim: int, n: int = 1000, seed: int = 0,
                           scale: float = 3.0) -> float:
    """The largest violation of midpoint convexity, max [f((x+y)/2) − (f(x)+f(y))/2], over ``n``
    random pairs of vectors of length ``dim`` (normal, standard deviation ``scale``).

    ``fn`` maps (n, dim) to (n,). A convex function gives a value ≤ 0 (up to rounding); a positive
    value is a witnessed non-convexity.

    Example:
        >>> midpoint_convexity_gap(lambda v: v.amax(-1), 4) <= 1e-12
        True
    """
    if dim < 1 or n < 1:
        raise ValueError(f"dim and n must be >= 1, got dim = {dim}, n = {n}")
    generator = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    y = scale * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return float((fn((x + y) / 2) - (fn(x) + fn(y)) / 2).max())


def _loss_array(history: Mapping[str, Tensor]) -> np.ndarray:
    if "loss" not in history:
        raise ValueError("history has no 'loss': run the attack with record_history=True")
    return torch.as_tensor(history["loss"]).detach().cpu().double().numpy()


def plot_loss_history(history: Mapping[str, Tensor], names: Sequence[str] | None = None,
                      title: str | None = None):
    """The attack loss per iteration, one line per sample (``history["loss"]``, shape (T, N));
    a line ends where its sample succeeded and was frozen."""
    loss = _loss_array(history)
    style()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i in range(loss.shape[1]):
        ax.plot(np.arange(loss.shape[0]), loss[:, i], lw=1.8,
                label=names[i] if names is not None else f"sample {i}")
    ax.set_xlabel("iteration (optimiser steps)")
    ax.set_ylabel("loss (score units)")
    if loss.shape[1] <= 8:
        ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_lambda_modes(histories: Mapping[str, Mapping[str, Tensor]], names: Sequence[str] | None = None):
    """The loss curves of the same samples under several λ modes (e.g. ``"closed_form"`` and
    ``"gradient"``), one panel per sample, one line per mode."""
    arrays = {mode: _loss_array(h) for mode, h in histories.items()}
    if not arrays:
        raise ValueError("histories is empty")
    n = next(iter(arrays.values())).shape[1]
    if any(a.shape[1] != n for a in arrays.values()):
        raise ValueError("every history must hold the same samples")
    style()
    rows, cols, size = panel_grid(n, aspect=0.8)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            fig.delaxes(ax)
            continue
        for (mode, a), line in zip(arrays.items(), ("-", "--", ":", "-."), strict=False):
            ax.plot(np.arange(a.shape[0]), a[:, i], line, lw=1.8, label=mode)
        ax.set_title(names[i] if names is not None else f"sample {i}")
        ax.set_xlabel("iteration (steps)")
        if i % cols == 0:
            ax.set_ylabel("loss (score units)")
    axes.flat[0].legend(frameon=False)
    fig.tight_layout()
    return fig


def rank_history_frame(history: Mapping[str, Tensor], sample: int = 0,
                       final_scores: Tensor | None = None) -> pd.DataFrame:
    """Each label's score and rank at each recorded iteration of one sample, as a tidy table.

    Args:
        history: an attack's ``result.history`` (``"scores"`` of shape (T, N, C)).
        sample: which of the N samples.
        final_scores: optional (C,) scores of the returned iterate, appended as the last iteration
            (the history holds the iterates the attack stepped from, not the one it returned).
    Returns: columns ``iteration``, ``label``, ``score``, ``rank`` (1 = best; ties: lower index first).
    Rows of iterations after the sample was frozen (NaN scores) are dropped.
    """
    if "scores" not in history:
        raise ValueError("history has no 'scores': run the attack with record_history=True")
    scores = torch.as_tensor(history["scores"]).detach().cpu()[:, sample, :]
    if final_scores is not None:
        scores = torch.cat([scores, torch.as_tensor(final_scores, dtype=scores.dtype).reshape(1, -1)])
    keep = ~torch.isnan(scores).any(1)
    steps = torch.arange(scores.shape[0])[keep]
    scores = scores[keep]
    if scores.shape[0] == 0:
        return pd.DataFrame(columns=["iteration", "label", "score", "rank"])
    r = ranks(scores)
    num_classes = scores.shape[1]
    return pd.DataFrame({
        "iteration": steps.repeat_interleave(num_classes).numpy(),
        "label": np.tile(np.arange(num_classes), len(steps)),
        "score": scores.flatten().numpy(),
        "rank": r.flatten().numpy(),
    })


def plot_rank_history(frame: pd.DataFrame, specified: Sequence[int], k: int, labels: Sequence[int] = (),
                      classes: Sequence[str] | None = None, title: str | None = None):
    """Draw :func:`rank_history_frame`: each true label's rank per iteration, the specified labels
    (solid, red shades) and the other true labels (dashed, blue shades), with the top-k band shaded.
    Labels that are neither true nor specified are drawn faintly."""
    specified, labels = {int(s) for s in specified}, {int(y) for y in labels}
    style()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 4))
    num_classes = int(frame["label"].max()) + 1 if len(frame) else 1
    ax.axhspan(0.5, k + 0.5, color="C2", alpha=0.12, label=f"top-{k}")
    reds, blues = plt.cm.Reds, plt.cm.Blues
    n_spec, n_rest = max(len(specified), 1), max(len(labels - specified), 1)
    i_spec = i_rest = 0
    for label, part in frame.groupby("label"):
        name = classes[label] if classes is not None else str(label)
        if label in specified:
            color, line, lw = reds(0.55 + 0.4 * i_spec / n_spec), "-", 2.2
            i_spec += 1
            text = f"{name} (specified)"
        elif label in labels:
            color, line, lw = blues(0.5 + 0.45 * i_rest / n_rest), "--", 1.8
            i_rest += 1
            text = f"{name} (true)"
        else:
            ax.plot(part["iteration"], part["rank"], color="grey", alpha=0.2, lw=0.8)
            continue
        ax.plot(part["iteration"], part["rank"], line, color=color, lw=lw, label=text)
    ax.set_ylim(num_classes + 0.5, 0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration (optimiser steps)")
    ax.set_ylabel("rank (1 = highest score)")
    ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def topk_before_after(clean_scores: Tensor, adv_scores: Tensor, labels: Sequence[int],
                      specified: Sequence[int], k: int, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """One sample's top-k before and after the attack, best first.

    Args:
        clean_scores, adv_scores: (C,) scores.
        labels, specified: the true and the specified label indices.
    Returns: one row per rank 1..k; columns ``clean`` and ``adversarial`` (label names, marked
    "(S)" for a specified label, "(true)" for another true label, "(false)" otherwise).
    """
    names = classes if classes is not None else [str(i) for i in range(len(clean_scores))]
    labels, specified = {int(y) for y in labels}, {int(s) for s in specified}

    def mark(j: int) -> str:
        kind = "S" if j in specified else "true" if j in labels else "false"
        return f"{names[j]} ({kind})"

    out = {}
    for column, s in (("clean", clean_scores), ("adversarial", adv_scores)):
        s = torch.as_tensor(s).reshape(1, -1)
        order = torch.argsort(-s[0], stable=True)[:k].tolist()
        out[column] = [mark(j) for j in order]
    return pd.DataFrame(out, index=pd.RangeIndex(1, k + 1, name="rank"))


def measure_pairs_frame(records: pd.DataFrame, measures: Sequence[str] = MEASURES) -> pd.DataFrame:
    """Clean and adversarial value of each measure of each eligible sample, tidy.

    Args:
        records: an experiment's records (columns ``clean_<m>``, ``adv_<m>``, ``eligible``, ``sample``).
    Returns: columns ``sample``, ``measure`` (as the book writes it), ``image`` ("clean" or
    "adversarial"), ``value``.
    """
    eligible = records[records["eligible"].astype(bool)] if "eligible" in records else records
    parts = []
    for m in measures:
        for image, prefix in (("clean", "clean_"), ("adversarial", "adv_")):
            parts.append(pd.DataFrame({"sample": eligible["sample"].to_numpy(), "measure": _MEASURE_LABELS[m],
                                       "image": image, "value": eligible[prefix + m].to_numpy(dtype=float)}))
    return pd.concat(parts, ignore_index=True)


def plot_measure_collapse(frame: pd.DataFrame, title: str | None = None):
    """Draw :func:`measure_pairs_frame`: per measure, the distribution of clean and adversarial values
    (histograms on [0, 1], clean behind adversarial)."""
    names = list(dict.fromkeys(frame["measure"]))
    style()
    rows, cols, size = panel_grid(len(names), aspect=0.75)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0], size[1] + 0.4), sharey=True, squeeze=False)
    for ax in axes.flat[len(names):]:
        fig.delaxes(ax)
    bins = np.linspace(0, 1, 12)
    for i, (ax, name) in enumerate(zip(axes.flat, names)):
        part = frame[frame["measure"] == name]
        for (image, color) in (("clean", "C0"), ("adversarial", "C3")):
            values = part.loc[part["image"] == image, "value"].to_numpy()
            ax.hist(values, bins=bins, color=color, alpha=0.55, label=image,
                    weights=np.full(len(values), 1 / max(len(values), 1)))
        ax.set_title(name)
        ax.set_xlabel("value (0–1)")
        if i % cols == 0:
            ax.set_ylabel("fraction of samples")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False,
               bbox_to_anchor=(0.5, 0.99 if not title else 0.93))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.45 if not title else 0.75) / fig.get_figheight()))
    return fig


def plot_perturbation(clean: Tensor, adv: Tensor, amplify: float | None = None, title: str | None = None):
    """Clean image, adversarial image and the perturbation (amplified around grey) side by side.

    Args:
        clean, adv: (3, H, W) images in [0, 1].
        amplify: the factor applied to the perturbation; default: the one that maps its largest
            absolute value to 0.5.
    """
    clean, adv = torch.as_tensor(clean).detach().cpu(), torch.as_tensor(adv).detach().cpu()
    if clean.shape != adv.shape or clean.ndim != 3:
        raise ValueError(
            f"clean and adv must be two (3, H, W) images, got {tuple(clean.shape)}, {tuple(adv.shape)}"
        )
    delta = adv - clean
    peak = float(delta.abs().max())
    if amplify is None:
        amplify = 0.5 / peak if peak > 0 else 1.0
    style()
    fig, axes = plt.subplots(1, 3, figsize=(PAGE_WIDTH_IN, 2.9))
    shown = (clean, adv, (0.5 + amplify * delta).clamp(0, 1))
    captions = ("clean", "adversarial", f"perturbation ×{amplify:.0f}")
    for ax, image, caption in zip(axes, shown, captions, strict=True):
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(caption)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
