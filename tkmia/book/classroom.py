"""The classroom: the checks of the exercise notebooks and the nbgrader course around them (chapter 14).

The exercise notebooks ``notebooks/14*_exercise_*.ipynb`` are nbgrader *source* notebooks: solution
cells hold the answer between ``### BEGIN SOLUTION`` / ``### END SOLUTION``, autograded check cells
carry points and a stable ``grade_id`` and end with ``### BEGIN HIDDEN TESTS`` blocks, every other
cell is locked. The book executes them as they are (solutions in dropdowns); nbgrader makes the
student versions and grades what comes back:

- the checks (:func:`check_equal`, :func:`check_upper_bound`, :func:`check_grid_minimum`,
  :func:`passed`) compare a student's function with the library's and fail with a
  :class:`CheckFailed` that names the case in full;
- :func:`configure_course` is the course's nbgrader configuration (``classroom/nbgrader_config.py``
  calls it): the MyST-to-Markdown step of the student versions (:func:`plain_markdown`), the
  per-cell timeout, the gradebook export (student × question points);
- :func:`assign` writes the student versions (``tkmia classroom assign``);
  :mod:`tkmia.book.grading` grades what comes back, each submission in a sandbox
  (``tkmia classroom grade``).

Example:
    >>> check_equal(my_precision_at_k, tkmia.metrics.precision_at_k, measure_cases(8, seed=0))
    ✓ my_precision_at_k agrees with tkmia.metrics.precision_at_k on 20 cases
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tkmia import metrics, relaxation
from tkmia.selection import Specification

__all__ = [
    "CheckFailed",
    "check_equal",
    "check_true",
    "check_upper_bound",
    "check_grid_minimum",
    "passed",
    "measure_cases",
    "vector_cases",
    "loss_cases",
    "jensen_gap",
    "kth_largest_loss",
    "convexity_frame",
    "extreme_in_topk",
    "ClassSetting",
    "eligible_images",
    "compare_selections",
    "plot_variational",
    "exercise_notebooks",
    "plain_markdown",
    "myst_markup",
    "configure_course",
    "build_course",
    "assign",
]

_REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------- checks
class CheckFailed(AssertionError):
    """A check cell's verdict: the student's answer disagrees with the expected one (the message
    names the case, its inputs, the expected and the received value)."""

    def _render_traceback_(self) -> list[str]:
        """The lines IPython shows for this exception (its hook for exceptions that render
        themselves): the verdict alone, without the frames of tkmia's checks; when the student's
        function raised, its own traceback comes first."""
        lines = []
        cause = self.__cause__
        if cause is not None:
            shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
            if shell is not None:
                lines += shell.InteractiveTB.structured_traceback(type(cause), cause, cause.__traceback__)
            else:
                lines += traceback.format_exception(cause)
            lines.append("\nThe check below failed because your function raised the error above.\n")
        lines.append(f"\x1b[0;31mCheckFailed\x1b[0m: {self}")
        return lines


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _reference_name(fn: Callable) -> str:
    module = getattr(fn, "__module__", None)
    return f"{module}.{_name(fn)}" if module and module.startswith("tkmia") else _name(fn)


def _full(value: Any) -> str:
    """``repr`` of a value with every tensor entry printed (no ``...`` summarisation); torch's
    print options are back at their defaults afterwards."""
    torch.set_printoptions(threshold=1_000_000, linewidth=100, precision=4, sci_mode=False)
    try:
        return _full_repr(value)
    finally:
        torch.set_printoptions(profile="default")


def _full_repr(value: Any) -> str:
    if isinstance(value, Tensor):
        return repr(value.detach().cpu())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(f"{f.name}={_full_repr(getattr(value, f.name))}"
                           for f in dataclasses.fields(value))
        return f"{type(value).__name__}({fields})"
    if isinstance(value, tuple | list):
        inner = ", ".join(_full_repr(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if callable(value):
        return _reference_name(value)
    return repr(value)


def _case_lines(reference: Callable, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[str]:
    """``name = value`` for every argument of one case, named after the reference's parameters."""
    try:
        bound = inspect.signature(reference).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        bound = {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    return [f"  {key} = {_full(value)}".replace("\n", "\n    ") for key, value in bound.items()]


def _difference(got: Any, expected: Any, atol: float, where: str = "the result") -> str | None:
    """None when ``got`` matches ``expected``; else a sentence saying where they differ."""
    if dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        if type(got) is not type(expected):
            return f"{where} should be a {type(expected).__name__}, got a {type(got).__name__}"
        for f in dataclasses.fields(expected):
            found = _difference(getattr(got, f.name), getattr(expected, f.name), atol, f"{where}.{f.name}")
            if found:
                return found
        return None
    if isinstance(expected, tuple | list):
        if not isinstance(got, tuple | list) or len(got) != len(expected):
            return f"{where} should be a sequence of {len(expected)} values, got {type(got).__name__}"
        for i, (g, e) in enumerate(zip(got, expected)):
            found = _difference(g, e, atol, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(expected, Tensor):
        if not isinstance(got, Tensor):
            return f"{where} should be a torch.Tensor, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"{where} should have shape {tuple(expected.shape)}, got shape {tuple(got.shape)}"
        g, e = got.detach().cpu(), expected.detach().cpu()
        if e.dtype == torch.bool or g.dtype == torch.bool:
            bad = g.bool() != e.bool()
        else:
            g, e = g.double(), e.double()
            bad = ~torch.isclose(g, e, atol=atol, rtol=0, equal_nan=True)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            return (f"{where} differs at index {first}: expected {e[first].item()!r}, "
                    f"got {g[first].item()!r} ({int(bad.sum())} of {bad.numel()} entries differ)")
        return None
    if isinstance(expected, int | float):
        try:
            ok = math.isclose(float(got), float(expected), abs_tol=atol, rel_tol=0)
        except (TypeError, ValueError):
            ok = False
        return None if ok else f"{where} should be {expected!r}, got {got!r}"
    return None if got == expected else f"{where} should be {expected!r}, got {got!r}"


def _has_ties(args: Sequence[Any]) -> bool:
    first = args[0] if args else None
    if not isinstance(first, Tensor) or not first.is_floating_point() or first.dim() == 0:
        return False
    values = first.reshape(-1, first.shape[-1])
    return bool((values.sort(-1).values.diff(dim=-1) == 0).any())


def check_equal(
    fn: Callable,
    reference: Callable,
    cases: Iterable[tuple | Mapping],
    atol: float = 1e-5,
    name: str | None = None,
    quiet: bool = False,
    optional: bool = False,
) -> int:
    """Assert that ``fn(*case) == reference(*case)`` on every case; return the number of cases.

    Args:
        fn: the student's function.
        reference: the library's function (``tkmia.metrics.precision_at_k``, ...).
        cases: argument tuples (or keyword dicts), e.g. from :func:`measure_cases`.
        atol: absolute tolerance of float comparisons (tensors, numbers, dataclass fields).
        name: how to call ``fn`` in the messages (default its ``__name__``).
        quiet: do not print the success line.
        optional: the exercise is optional: a ``fn`` that raises ``NotImplementedError`` (not
            written yet) skips the check with a printed line and returns 0 instead of failing.

    Raises:
        CheckFailed: at the first case where the results differ, or where ``fn`` raises an
            exception that is not ``NotImplementedError``; the message names the case, every
            argument in full (under the reference's parameter names), the expected and the received
            value. ``NotImplementedError`` propagates unchanged (the function is not written yet)
            unless ``optional``.
    """
    __tracebackhide__ = True  # IPython: the student's traceback ends at the check cell
    name = name or _name(fn)
    count = 0
    for index, case in enumerate(cases):
        args, kwargs = ((), dict(case)) if isinstance(case, Mapping) else (tuple(case), {})
        expected = reference(*args, **kwargs)
        try:
            got = fn(*args, **kwargs)
        except NotImplementedError:
            if optional:
                print(f"○ {name} is optional and not written yet: check skipped")
                return 0
            raise
        except Exception as err:  # a crash is a wrong answer: say on which input
            raise CheckFailed("\n".join([
                f"{name} raised {type(err).__name__}: {err}", f"on case {index}, whose arguments are:",
                *_case_lines(reference, args, kwargs), f"  expected = {_full(expected)}"])) from err
        found = _difference(got, expected, atol)
        if found:
            lines = [f"{name} disagrees with {_reference_name(reference)} on case {index}: {found}.",
                     "The case:", *_case_lines(reference, args, kwargs),
                     f"  expected = {_full(expected)}", f"  got      = {_full(got)}"]
            if _has_ties(args):
                lines.append("hint: this case has tied scores; tkmia ranks the lower label index first among "
                             "equal scores (torch.sort(..., descending=True, stable=True))")
            raise CheckFailed("\n".join(lines))
        count += 1
    if count == 0:
        raise ValueError("cases is empty: nothing was checked")
    if not quiet:
        print(f"✓ {name} agrees with {_reference_name(reference)} on {count} case{'s' if count != 1 else ''}")
    return count


def check_true(condition: bool | Tensor, message: str, success: str | None = None) -> None:
    """Assert ``condition`` (a bool or a tensor whose entries must all be true).

    Raises ``CheckFailed(message)``; prints ``✓ success`` (default: ``message``'s claim) otherwise.
    """
    __tracebackhide__ = True
    ok = bool(condition.all()) if isinstance(condition, Tensor) else bool(condition)
    if not ok:
        raise CheckFailed(message)
    print(f"✓ {success or message}")


def passed(what: str = "public checks") -> None:
    """Print the verdict line of a check cell: ``✓ public checks passed``, with a reminder that
    hidden checks run when the notebook is graded (a student is never told "all tests passed")."""
    note = " (more checks run when your notebook is graded)" if what == "public checks" else ""
    print(f"✓ {what} passed{note}")


def check_upper_bound(average_top_k: Callable, cases: Iterable[tuple], atol: float = 1e-6,
                      quiet: bool = False) -> int:
    """Assert v_[m] ≤ ATk_m(v) for the student's ``average_top_k(v, m)`` on every ``(v, m)`` case.

    Returns the number of vectors checked; raises :class:`CheckFailed` naming the first violation
    (the vector in full, m, both values).
    """
    __tracebackhide__ = True
    total = 0
    for index, (v, m) in enumerate(cases):
        kth = relaxation.kth_largest(v, m)
        atk = average_top_k(v, m)
        bad = kth > atk + atol
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise CheckFailed(
                f"case {index} (m = {m}): the {m}-th largest entry {kth[first].item():.6g} exceeds "
                f"average_top_k = {atk[first].item():.6g} at index {first}; ATk is a mean of the m "
                f"largest entries, so it can never be below the smallest of them.\n"
                f"  v{list(first)} = {_full(v[first])}\n  m = {m}"
            )
        total += kth.numel()
    if not quiet:
        print(f"✓ v_[m] <= ATk_m(v) on all {total} vectors")
    return total


def check_grid_minimum(minimise: Callable, atk_variational: Callable, cases: Iterable[tuple],
                       quiet: bool = False) -> int:
    """Check the student's ``minimise(v, m, grid) -> (value, lam)`` against the lemma on ``(v, m)`` cases.

    For a 1-D ``v`` and an even ``grid`` of λ's with step h covering [min v, max v], the minimum of
    the variational form over the grid must be within h·C/m of ATk_m(v) (never below it), and the
    minimising λ within h of the minimiser interval [v_[m+1], v_[m]] (v_[C+1] = −∞).
    Returns the number of vectors checked; raises :class:`CheckFailed` naming v and m in full.
    """
    __tracebackhide__ = True
    count = 0
    for index, (v, m) in enumerate(cases):
        for row in v.reshape(-1, v.shape[-1]):
            grid = torch.linspace(float(row.min()) - 1.0, float(row.max()) + 1.0, 501, dtype=row.dtype)
            h = float(grid[1] - grid[0])
            value, lam = minimise(row, m, grid)
            atk = float(relaxation.average_top_k(row, m))
            tol = 1e-5 * (1 + abs(atk))  # float32 rounding
            slack = h * row.numel() / m + tol
            case = (f"\n  v = {_full(row)}\n  m = {m}\n  grid = torch.linspace({float(grid[0]):.6g}, "
                    f"{float(grid[-1]):.6g}, {grid.numel()})")
            if not atk - tol <= float(value) <= atk + slack:
                raise CheckFailed(
                    f"case {index}: the grid minimum {float(value):.6g} should lie in "
                    f"[ATk, ATk + h·C/m] = [{atk:.6g}, {atk + slack:.6g}]{case}"
                )
            upper = float(relaxation.kth_largest(row, m))
            lower = float(relaxation.kth_largest(row, m + 1)) if m < row.numel() else -math.inf
            if not lower - h - tol <= float(lam) <= upper + h + tol:
                raise CheckFailed(
                    f"case {index}: the minimising λ = {float(lam):.6g} should lie in "
                    f"[v_[m+1], v_[m]] = [{lower:.6g}, {upper:.6g}] (up to the grid step {h:.2g}){case}"
                )
            if atk_variational is not None:
                exact = float(atk_variational(row, m, torch.tensor(upper, dtype=row.dtype)))
                if not math.isclose(exact, atk, abs_tol=1e-5):
                    raise CheckFailed(f"case {index}: atk_variational at λ = v_[m] = {upper:.6g} is "
                                      f"{exact:.6g}, not ATk_m(v) = {atk:.6g}{case}")
            count += 1
    if not quiet:
        print(f"✓ on {count} vectors the grid minimum is ATk_m(v) and the minimiser lies in [v_[m+1], v_[m]]")
    return count


# ---------------------------------------------------------------------------------------- cases
def measure_cases(num_classes: int = 8, n_cases: int = 20, batch: int = 6, seed: int = 0) -> list[tuple]:
    """``(scores, labels, k)`` cases for measure functions, k cycling through 1..C−1.

    Each case is a batch of ``batch`` random samples (scores ~ N(0, 1), labels ~ Bernoulli(0.4)) with
    two edge rows appended: a sample without true labels and one whose labels are all true. The last
    case has tied scores (to check the tie rule: lower label index first).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for index in range(n_cases):
        k = 1 + index % (num_classes - 1)
        scores = torch.randn(batch + 2, num_classes, generator=gen)
        labels = (torch.rand(batch + 2, num_classes, generator=gen) < 0.4).float()
        labels[-2], labels[-1] = 0.0, 1.0
        if index == n_cases - 1:
            scores = torch.randint(0, 3, scores.shape, generator=gen).float()
        cases.append((scores, labels, k))
    return cases


def vector_cases(num_classes: int = 10, n_cases: int = 20, batch: int = 5, seed: int = 0,
                 with_lambda: bool = False) -> list[tuple]:
    """``(v, m)`` cases (or ``(v, m, lam)`` with ``with_lambda``), v of shape (batch, C), m cycling 1..C."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for index in range(n_cases):
        m = 1 + index % num_classes
        v = 2 * torch.randn(batch, num_classes, generator=gen)
        if with_lambda:
            cases.append((v, m, 2 * torch.randn(batch, generator=gen)))
        else:
            cases.append((v, m))
    return cases


def loss_cases(num_classes: int = 8, n_cases: int = 20, batch: int = 6, seed: int = 0) -> list[tuple]:
    """``(scores, labels, specified, k)`` cases for TkMIA's loss, S ⊆ Y, k cycling through 1..C−1.

    The last two rows of each batch have an empty S and an empty Y' = Y \\ S respectively.
    """
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for index in range(n_cases):
        k = 1 + index % (num_classes - 1)
        scores = torch.randn(batch + 2, num_classes, generator=gen)
        labels = (torch.rand(batch + 2, num_classes, generator=gen) < 0.5).float()
        labels[:, 0] = 1.0  # every sample has a true label
        specified = labels * (torch.rand(batch + 2, num_classes, generator=gen) < 0.4).float()
        specified[-2] = 0.0
        specified[-1] = labels[-1]
        cases.append((scores, labels, specified, k))
    return cases


# ---------------------------------------------------------------------------------------- convexity
def jensen_gap(loss: Callable, f: Tensor, g: Tensor, t: float, labels: Tensor, specified: Tensor,
               k: int) -> Tensor:
    """t·L(f) + (1 − t)·L(g) − L(t·f + (1 − t)·g) per sample: ≥ 0 for all f, g, t iff L is convex.

    ``loss(scores, labels, specified, k)`` -> (N,). Shape: f, g (N, C) -> (N,).
    """
    return t * loss(f, labels, specified, k) + (1 - t) * loss(g, labels, specified, k) - loss(
        t * f + (1 - t) * g, labels, specified, k)


def kth_largest_loss(scores: Tensor, labels: Tensor, specified: Tensor, k: int) -> Tensor:
    """The unrelaxed sub-goals a_[C−k] + b_[k] (k-th largest instead of ATk): not convex. Shape (N,)."""
    a, b = relaxation.tkmia_terms(scores, labels, specified, k)
    return relaxation.kth_largest(a, scores.shape[-1] - k) + relaxation.kth_largest(b, k)


def convexity_frame(losses: Mapping[str, Callable], num_classes: int = 8, n_pairs: int = 2000,
                    seed: int = 0, gap: Callable = jensen_gap):
    """Jensen gaps of each loss on random segments [f, g] of score space; one row per loss.

    Columns: ``pairs`` (segments tried), ``min_gap`` (the most negative gap found), ``violations``
    (fraction of segments with a gap below −1e-6: a convex loss has none). ``gap`` is the Jensen gap
    function used (the student's, by default the library's).
    """
    import pandas as pd

    gen = torch.Generator().manual_seed(seed)
    f = 3 * torch.randn(n_pairs, num_classes, generator=gen, dtype=torch.float64)
    g = 3 * torch.randn(n_pairs, num_classes, generator=gen, dtype=torch.float64)
    t = float(torch.rand(1, generator=gen))
    labels = (torch.rand(n_pairs, num_classes, generator=gen) < 0.5).double()
    labels[:, :2] = 1.0
    specified = torch.zeros_like(labels)
    specified[:, 0] = 1.0  # S = {0}, Y' ∋ 1: both sub-goals are active
    k = max(1, num_classes // 3)
    rows = []
    for name, loss in losses.items():
        gaps = gap(loss, f, g, t, labels, specified, k)
        rows.append({"loss": name, "pairs": n_pairs, "min_gap": float(gaps.min()),
                     "violations": float((gaps < -1e-6).double().mean())})
    return pd.DataFrame(rows).set_index("loss")


# ---------------------------------------------------------------------------------------- selection
def extreme_in_topk(clean_scores: Tensor, labels: Tensor, k: int, which: str = "lowest") -> Specification:
    """Specify one label per sample: the ``which`` (``"lowest"`` or ``"highest"``) scoring true label
    of the top-k (the exercise of chapter 14d; its reference solution for ``"lowest"``).

    Eligible iff Y ∩ T_k(x) ≠ ∅ and |Y| ≥ k + 1 (a true label outside the top-k can take the freed
    place); success iff that label leaves the top-k (required = 1). Ineligible rows specify nothing.
    Shape: (N, C) -> :class:`~tkmia.selection.Specification` of N samples.
    """
    if which not in ("lowest", "highest"):
        raise ValueError(f"which must be 'lowest' or 'highest', got {which!r}")
    truth = labels.bool()
    candidates = truth & metrics.topk_mask(clean_scores, k)
    fill = math.inf if which == "lowest" else -math.inf
    masked = clean_scores.masked_fill(~candidates, fill)
    pick = masked.argmin(1) if which == "lowest" else masked.argmax(1)
    eligible = candidates.any(1) & (truth.sum(1) >= k + 1)
    specified = torch.zeros_like(truth).scatter_(1, pick.unsqueeze(1), True) & eligible.unsqueeze(1)
    required = torch.ones(len(truth), dtype=torch.long, device=clean_scores.device)
    return Specification(specified, eligible, required)


@dataclasses.dataclass
class ClassSetting:
    """A victim and a few of its evaluation images for an exercise (see :func:`eligible_images`)."""

    model: torch.nn.Module
    images: Tensor
    labels: Tensor
    ids: Tensor
    k: int
    attack_options: dict[str, Any]
    classes: list[str]


def eligible_images(profile: str = "default", n_images: int = 32, k: int | None = None,
                    data_root: str | None = None, device: str = "cpu") -> ClassSetting:
    """The profile's victim and the first ``n_images`` evaluation images that have a true label in
    the top-k and at least k + 1 true labels (eligible for a one-label selection).

    ``k`` defaults to the profile's ``attack.k``; ``attack_options`` holds the profile's lr,
    weight_decay and box.
    """
    from tkmia.data import load_dataset
    from tkmia.experiments import ExperimentConfig, select_eligible
    from tkmia.profiles import load_profile
    from tkmia.victims import load_victim

    prof = load_profile(profile)
    k = prof.attack.k if k is None else k
    config = ExperimentConfig(profile=profile, scheme="random", k=k, n_pert=1, del_n=1, n_samples=n_images,
                              device=device, data_root=data_root).resolve(prof)
    model, _ = load_victim(prof, data_root=data_root, device=device)
    dataset = load_dataset(prof, prof.dataset.eval_split, root=data_root)
    ids = select_eligible(model, dataset, config)
    pairs = [dataset[i] for i in ids]
    images = torch.stack([p[0] for p in pairs]).to(device)
    labels = torch.stack([torch.as_tensor(p[1]) for p in pairs]).float().to(device)
    options = {"lr": prof.attack.lr, "weight_decay": prof.attack.weight_decay, "box": tuple(prof.attack.box)}
    return ClassSetting(model.eval(), images, labels, torch.tensor(ids), k, options, list(dataset.classes))


def compare_selections(setting: ClassSetting, selections: Mapping[str, Any], max_iter: int = 100):
    """Attack ``setting``'s images with TkMIA under each selection; one summary row per selection.

    A selection is a function ``(clean_scores, labels, k) -> Specification`` or a scheme object
    (:class:`~tkmia.selection.RandomSelection`, ...). Columns: ``eligible``, ``success_rate`` and
    ``imperceptible_rate`` (over eligible samples), ``pert_l2_255`` (mean ‖x_adv − x‖₂ in 0–255
    pixel units over successful samples), ``iterations`` (mean over eligible), ``delta_<measure>``
    (mean adversarial minus clean, over eligible samples).
    """
    import pandas as pd

    from tkmia import report
    from tkmia.attacks import TkMIA

    attack = TkMIA(setting.model, setting.k, max_iter=max_iter, **setting.attack_options)
    with torch.no_grad():
        clean = setting.model(setting.images)
    frames = []
    for name, selection in selections.items():
        chosen = selection(clean, setting.labels, setting.k) if callable(selection) else selection
        result = attack(setting.images, setting.labels, chosen, ids=setting.ids)
        frames.append(report.result_samples(result).assign(selection=name))
    columns = ["pert_l2_255", "iterations", *(f"delta_{m}" for m in metrics.MEASURES)]
    table = report.group_summary(pd.concat(frames, ignore_index=True), ["selection"], columns, sort=False)
    table = table.set_index("selection").reindex(list(selections)).rename(columns={"n": "eligible"})
    table["eligible"] = table["eligible"].fillna(0).astype(int)  # a selection no image is eligible for
    return table


# ---------------------------------------------------------------------------------------- figure
def plot_variational(v: Tensor, m: int, atk_variational: Callable = relaxation.atk_variational):
    """The variational form λ ↦ λ + (1/m) Σ_j [v_j − λ]_+ of one vector ``v`` (C,), with ATk_m(v)
    and the minimiser interval [v_[m+1], v_[m]] marked. Returns a matplotlib Figure."""
    import matplotlib.pyplot as plt

    grid = torch.linspace(float(v.min()) - 1.0, float(v.max()) + 1.0, 400, dtype=v.dtype)
    values = torch.stack([torch.as_tensor(atk_variational(v, m, lam)) for lam in grid])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(grid.numpy(), values.numpy(), label=r"$\lambda + \frac{1}{m}\sum_j [v_j - \lambda]_+$")
    ax.axhline(float(relaxation.average_top_k(v, m)), color="C1", ls="--", label=r"ATk$_m(v)$")
    upper = float(relaxation.kth_largest(v, m))
    lower = float(relaxation.kth_largest(v, m + 1)) if m < v.numel() else float(grid[0])
    ax.axvspan(lower, upper, color="C2", alpha=0.2, label=r"minimisers $[v_{[m+1]}, v_{[m]}]$")
    ax.scatter(v.numpy(), [float(values.min())] * v.numel(), marker="|", color="k", s=80,
               label="entries of v")
    ax.set_xlabel(r"$\lambda$")
    ax.set_ylabel("value")
    ax.set_title(f"variational form of ATk, m = {m}, C = {v.numel()}")
    ax.legend(fontsize=8, loc="upper center")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- MyST -> Markdown
_FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:.-]+)\}[ \t]*(?P<argument>.*?)\s*$")
_OPTION = re.compile(r"^:(?P<key>[\w-]+):[ \t]*(?P<value>.*)$")
SOLUTION_WRAPPER = re.compile(r"^\s*(`{3,}|:{3,})\{solution-(start|end)\}")
_TARGET = re.compile(r"^\s*\([\w:.-]+\)=\s*$")
_GLUE = re.compile(r"\{glue(?::text|:any|:md)?\}`(?P<name>[^`:]+)(?::[^`]*)?`")
_ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<body>[^`]*)`")
_TITLES = {"prf:lemma": "Lemma", "prf:theorem": "Theorem", "prf:definition": "Definition",
           "prf:proposition": "Proposition", "prf:corollary": "Corollary", "prf:remark": "Remark",
           "prf:algorithm": "Algorithm", "prf:example": "Example", "note": "Note", "tip": "Tip",
           "warning": "Warning", "important": "Important", "hint": "Hint"}


def _role(match: re.Match) -> str:
    role, body = match["role"], match["body"]
    if role == "math":
        return f"${body}$"
    if role == "cite":
        return f"[{body}]"
    explicit = re.match(r"^(?P<text>.*?)\s*<(?P<target>[^>]+)>$", body)
    if explicit:
        return explicit["text"]
    if role.startswith("py:"):
        return f"`{body.lstrip('~').split('.')[-1] if body.startswith('~') else body}`"
    return f"*{body.replace('-', ' ').replace(':', ' ')}*"


def _inline(text: str) -> str:
    return _ROLE.sub(_role, _GLUE.sub(lambda m: f"`{m['name']}`", text))


def plain_markdown(source: str, numbers: Iterator[int] | None = None) -> str:
    """The MyST-only markup of a markdown cell rewritten as plain Markdown (for JupyterLab).

    ``(label)=`` targets are dropped; ``{exercise}`` becomes a bold "Exercise N (title)." heading
    (N from ``numbers``), ``{prf:lemma}`` and friends a bold name, ``{prf:proof}`` an italic
    *Proof.*, ``{glue:figure}`` its caption; ``{solution-start}``/``{solution-end}`` disappear;
    a ``{glue:text}`` role becomes the glued name as code; other roles keep their text (a ``{ref}``
    with explicit text that text, a ``{py:class}`` the class name as code, ``{math}`` dollar
    maths). Plain Markdown, maths and code fences pass through unchanged. Directive bodies are
    converted recursively.

    Example:
        >>> plain_markdown("(ex-a)=\\n# Title\\nSee {ref}`the measures <measures>`.")
        '# Title\\nSee the measures.'
    """
    numbers = numbers if numbers is not None else itertools.count(1)
    lines, out, i = source.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        opening = _FENCE.match(line)
        if _TARGET.match(line):
            i += 1
            continue
        if not opening:
            out.append(_inline(line))
            i += 1
            continue
        fence, name, argument = opening["fence"], opening["name"], opening["argument"]
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        body = lines[i + 1:end]
        options = {}
        while body and _OPTION.match(body[0]):
            option = _OPTION.match(body[0])
            options[option["key"]] = option["value"]
            body = body[1:]
        text = plain_markdown("\n".join(body).strip("\n"), numbers)
        i = end + 1
        if name in ("solution-start", "solution-end", "solution", "exercise-end"):
            continue
        if name in ("exercise", "exercise-start"):
            title = f" ({_inline(argument)})" if argument else ""
            out.append(f"**Exercise {next(numbers)}{title}.** {text}".rstrip())
        elif name == "prf:proof":
            out.append(f"*Proof.* {text}".rstrip())
        elif name == "glue:figure":
            out.append(f"*Figure* (`{argument}`, drawn when the book is built): {text}".rstrip())
        elif name in ("math", "prf:equation"):
            out.append(f"$$\n{text}\n$$")
        else:
            label = _TITLES.get(name, name.split(":")[-1].capitalize())
            title = f" ({_inline(argument)})" if argument else ""
            out.append(f"**{label}{title}.** {text}".rstrip())
    return "\n".join(out).strip("\n")


_MYST_LEFT = re.compile(r"\{[\w:.-]+\}`|^\s*(`{3,}|:{3,})\{|^\s*\([\w:.-]+\)=\s*$|^:[\w-]+:", re.M)


def myst_markup(source: str) -> list[str]:
    """The MyST-only markup left in a text (roles, directive fences, targets, options), one per hit."""
    return [m.group(0).strip() for m in _MYST_LEFT.finditer(source)]


# ---------------------------------------------------------------------------------------- the course
def exercise_notebooks(src_dir: str | Path = _REPO / "notebooks") -> list[Path]:
    """The exercise notebooks of the book: ``src_dir/14*_exercise_*.ipynb``, sorted by name.

    Each is one nbgrader assignment whose id is the notebook's stem.
    """
    return sorted(Path(src_dir).glob("14*_exercise_*.ipynb"))


def _nbgrader_classes() -> dict[str, type]:
    """The course's nbgrader plug-ins, defined on first use (importing nbgrader costs seconds, and
    the exercise notebooks import this module)."""
    global _PLUGINS
    if _PLUGINS:
        return _PLUGINS
    from nbgrader.api import MissingEntry
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.plugins.export import ExportPlugin
    from nbgrader.preprocessors import NbGraderPreprocessor

    class PlainMarkdown(NbGraderPreprocessor):
        """nbgrader step of ``generate_assignment``: MyST-only markup -> plain Markdown
        (:func:`plain_markdown`); the book's ``{solution-start}``/``{solution-end}`` cells go."""

        def preprocess(self, nb, resources):
            numbers, cells = itertools.count(1), []
            for cell in nb.cells:
                if cell.cell_type == "markdown":
                    if SOLUTION_WRAPPER.match(cell.source):
                        continue
                    cell.source = plain_markdown(cell.source, numbers)
                cells.append(cell)
            nb.cells = cells
            return nb, resources

    class GradebookCsv(ExportPlugin):
        """``nbgrader export``: one row per student, one column per graded cell (its points), then
        ``total`` and ``max_score``. Columns follow the cells' order in the source notebooks; a
        student without a submission scores 0."""

        def export(self, gradebook) -> None:
            source = CourseDirectory(config=self.config)
            assignments = sorted(a.name for a in gradebook.assignments
                                 if not self.assignment or a.name in self.assignment)
            columns = []  # (assignment, notebook, grade cell, max points)
            for name in assignments:
                for notebook in sorted(gradebook.find_assignment(name).notebooks, key=lambda n: n.name):
                    cells = {c.name: c for c in notebook.grade_cells}
                    folder = Path(source.format_path(source.source_directory, ".", name))
                    path = folder / f"{notebook.name}.ipynb"
                    order = [c.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                             for c in json.loads(path.read_text())["cells"]] if path.exists() else []
                    ranked = sorted(cells, key=lambda g: (order.index(g) if g in order else len(order), g))
                    columns += [(name, notebook.name, g, cells[g].max_score) for g in ranked]
            with open(self.to or "grades.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["student", *[c[2] for c in columns], "total", "max_score"])
                for student in sorted(gradebook.students, key=lambda s: s.id):
                    if self.student and student.id not in self.student:
                        continue
                    points = []
                    for assignment, notebook, cell, _ in columns:
                        try:
                            points.append(gradebook.find_grade(cell, notebook, assignment, student.id).score)
                        except MissingEntry:
                            points.append(0.0)
                    writer.writerow([student.id, *[_points(p) for p in points], _points(sum(points)),
                                     _points(sum(c[3] for c in columns))])

    _PLUGINS = {"PlainMarkdown": PlainMarkdown, "GradebookCsv": GradebookCsv}
    return _PLUGINS


_PLUGINS: dict[str, type] = {}


def __getattr__(name: str):  # tkmia.book.classroom.PlainMarkdown / GradebookCsv, for nbgrader's config
    if name in ("PlainMarkdown", "GradebookCsv"):
        return _nbgrader_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _points(value: float) -> str:
    return f"{float(value):g}"


def configure_course(c, timeout: int = 30) -> None:
    """The nbgrader configuration of the tkmia course (called by ``nbgrader_config.py``).

    Args:
        c: the config object of an ``nbgrader_config.py`` (``get_config()``).
        timeout: seconds a cell may run when a submission is graded (``Execute.timeout``); a cell
            still running then is interrupted, and its check scores 0.

    Sets: ``generate_assignment`` rewrites MyST markup as plain Markdown first (``PlainMarkdown``);
    ``autograde`` runs the notebooks in this interpreter's kernel, interrupts a cell after
    ``timeout`` seconds, and adds back test cells a student deleted
    (``OverwriteCells.add_missing_cells``); edited locked cells are restored from the gradebook
    (nbgrader's default);
    ``export`` writes the question-level CSV (``GradebookCsv``).
    """
    from nbgrader.converters.generate_assignment import GenerateAssignment

    from tkmia.book.runner import ensure_kernel

    if not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"timeout must be a positive int (seconds), got {timeout!r}")
    plugins = _nbgrader_classes()
    c.CourseDirectory.course_id = "tkmia"
    defaults = GenerateAssignment.class_traits()["preprocessors"].default()
    c.GenerateAssignment.preprocessors = [plugins["PlainMarkdown"], *defaults]
    c.Execute.timeout = timeout
    c.Execute.error_on_timeout = {
        "ename": "CellTimeoutError", "evalue": f"the cell ran longer than {timeout} s",
        "traceback": [f"\x1b[0;31mCellTimeoutError\x1b[0m: this cell ran longer than {timeout} s (an "
                      "infinite loop?) and was stopped; its check scores 0"]}
    c.Execute.kernel_name = ensure_kernel()
    c.OverwriteCells.add_missing_cells = True
    c.ExportApp.plugin_class = plugins["GradebookCsv"]


_CONFIG = '''"""nbgrader configuration of the tkmia course (see book/exercises.md)."""
from tkmia.book.classroom import configure_course

configure_course(get_config(), timeout={timeout})  # noqa: F821 (get_config: given by nbgrader)
'''


def build_course(course_dir: str | Path, source_dir: str | Path = _REPO / "notebooks",
                 assignments: Sequence[str] | None = None, timeout: int = 30) -> Path:
    """Lay out an nbgrader course: ``source/<id>/<id>.ipynb`` for each exercise notebook of
    ``source_dir`` (or only the ``assignments`` ids) and an ``nbgrader_config.py``.

    Returns ``course_dir``. Raises ``FileNotFoundError`` when an id has no notebook.
    """
    course, found = Path(course_dir), {p.stem: p for p in exercise_notebooks(source_dir)}
    if not found:
        raise FileNotFoundError(f"no exercise notebook (14*_exercise_*.ipynb) in "
                                f"{Path(source_dir).resolve()}: source_dir must hold the source notebooks")
    ids = list(assignments) if assignments is not None else sorted(found)
    unknown = [i for i in ids if i not in found]
    if unknown:
        raise FileNotFoundError(f"no exercise notebook for {unknown}; the exercises are {sorted(found)}")
    for name in ids:
        (course / "source" / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found[name], course / "source" / name / f"{name}.ipynb")
    (course / "nbgrader_config.py").write_text(_CONFIG.format(timeout=int(timeout)))
    return course


def _environment() -> dict[str, str]:
    """This process's environment with this interpreter's scripts first on PATH (nbgrader calls the
    ``alembic`` script of its own environment)."""
    scripts = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
            "PYTHONWARNINGS": "ignore"}


def _nbgrader(course: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` (this interpreter's) in ``course``; raise with its log on failure."""
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, text=True,
                          capture_output=True, env=_environment())
    if "Exception while loading config file" in done.stderr:  # traitlets logs it and goes on
        raise RuntimeError(f"{course / 'nbgrader_config.py'} failed to load:\n{done.stderr[-3000:]}")
    if check and done.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed (exit {done.returncode}):\n"
                           + (done.stdout + done.stderr)[-3000:])
    return done


def _has_solution_cells(path: Path) -> bool:
    """Whether the notebook at ``path`` is an instructor's source: a code cell holds nbgrader's
    ``### BEGIN SOLUTION`` or ``### BEGIN HIDDEN TESTS`` (student versions have neither)."""
    try:
        cells = json.loads(path.read_text()).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return False
    markers = ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS")
    for cell in cells:
        source = cell.get("source", "") if isinstance(cell, dict) else ""
        text = "".join(source) if isinstance(source, list) else str(source)
        if any(marker in text for marker in markers):
            return True
    return False


def _refuse_assign_output(out: Path, source: Path) -> None:
    """Raise ``ValueError`` when writing student versions into ``out`` could replace a source
    notebook: ``out`` is the source folder (or inside it), or holds a notebook with solutions."""
    out_r, src = out.resolve(), source.resolve()
    if out_r == src or src in out_r.parents:
        raise ValueError(f"--out {out} is the exercise notebooks' source folder {src} (or inside it): "
                         "the student versions would replace the instructor's notebooks; use the "
                         "default assignments/ or another folder")
    if out.is_dir():
        held = sorted(p.name for p in out.glob("*.ipynb") if _has_solution_cells(p))
        if held:
            raise ValueError(f"--out {out} holds notebooks with solution cells ({', '.join(held)}): "
                             "writing the student versions would overwrite them; use another folder")
    elif out.exists():
        raise ValueError(f"--out {out} is an existing file, not a folder")


def assign(out_dir: str | Path = "assignments", source_dir: str | Path = _REPO / "notebooks",
           course_dir: str | Path | None = None, assignments: Sequence[str] | None = None) -> list[Path]:
    """Write the student version of every exercise notebook into ``out_dir`` (same file names).

    Runs ``nbgrader generate_assignment ID --force`` in ``course_dir`` (a temporary course when
    None, built by :func:`build_course`): solutions become ``raise NotImplementedError()``, hidden
    tests disappear, locked cells are marked read-only, MyST becomes plain Markdown.
    Returns the written paths.
    """
    out = Path(out_dir)
    _refuse_assign_output(out, Path(source_dir))
    with tempfile.TemporaryDirectory(prefix="tkmia-course-") as scratch:
        course = Path(course_dir) if course_dir is not None else Path(scratch)
        build_course(course, source_dir, assignments)
        ids = list(assignments) if assignments is not None else sorted(p.stem for p in
                                                                       exercise_notebooks(source_dir))
        out.mkdir(parents=True, exist_ok=True)
        written = []
        _nbgrader(course, "generate_assignment", "*", "--force")  # every assignment of the course
        for name in ids:
            target = out / f"{name}.ipynb"
            shutil.copyfile(course / "release" / name / f"{name}.ipynb", target)
            written.append(target)
    return written
