"""The classroom: exercise notebooks, their student versions and the checks they run (book chapter 14).

The exercise notebooks ``notebooks/14*_exercise_*.ipynb`` hold their solutions between nbgrader-style
markers, inside functions the student writes::

    def precision_at_k(scores, labels, k):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

:func:`strip_solutions` replaces each marked block by ``# YOUR CODE HERE`` /
``raise NotImplementedError()`` and drops the book's ``{solution-start}`` / ``{solution-end}``
wrappers; :func:`write_assignments` writes one student notebook per exercise notebook
(``python -m tkmia.classroom --out assignments``, ``make assignments``). Check cells (tagged
``check``) compare the student's functions with the library's through :func:`check_equal` and
friends, which raise ``AssertionError`` with a helpful message and print ``✓ ...`` on success.

Example:
    >>> check_equal(my_precision_at_k, tkmia.metrics.precision_at_k, measure_cases(8, seed=0))
    ✓ my_precision_at_k agrees with precision_at_k on 20 cases
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tkmia import metrics, relaxation
from tkmia.selection import Specification

__all__ = [
    "BEGIN",
    "END",
    "PLACEHOLDER",
    "strip_solutions",
    "exercise_notebooks",
    "write_assignments",
    "check_equal",
    "check_true",
    "check_upper_bound",
    "check_grid_minimum",
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
    "main",
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
#: what replaces a solution block in a student notebook (indented like the BEGIN marker)
PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError()")
_MARKDOWN_PLACEHOLDER = "YOUR ANSWER HERE"
_WRAPPER = re.compile(r"^\s*(`{3,}|:{3,})\{solution-(start|end)\}")
_REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------- notebooks
def _strip_source(source: str, markdown: bool) -> str:
    lines, out, inside = source.splitlines(), [], False
    for number, line in enumerate(lines, 1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"line {number}: {BEGIN!r} inside another solution block")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.extend([_MARKDOWN_PLACEHOLDER] if markdown else [indent + p for p in PLACEHOLDER])
        elif marker == END:
            if not inside:
                raise ValueError(f"line {number}: {END!r} without a {BEGIN!r} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"a {BEGIN!r} block is never closed by {END!r}")
    return "\n".join(out)


def strip_solutions(nb):
    """The student version of an exercise notebook (a copy; ``nb`` is not changed).

    Every block between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (code or markdown) becomes
    ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` (markdown: ``YOUR ANSWER HERE``), keeping
    the lines above it (the function's signature and docstring); markdown cells that only open or
    close a sphinx-exercise gated solution (``{solution-start}``, ``{solution-end}``) are dropped;
    outputs and execution counts are cleared. Check cells (tag ``check``) are kept as they are.

    Raises:
        ValueError: on unbalanced markers (the cell index is named).
    """
    out = copy.deepcopy(nb)
    cells = []
    for index, cell in enumerate(out.cells):
        if cell.cell_type == "markdown" and _WRAPPER.match(cell.source):
            continue
        if cell.cell_type in ("code", "markdown"):
            try:
                cell.source = _strip_source(cell.source, markdown=cell.cell_type == "markdown")
            except ValueError as err:
                raise ValueError(f"cell {index}: {err}") from None
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cells.append(cell)
    out.cells = cells
    return out


def exercise_notebooks(src_dir: str | Path = _REPO / "notebooks") -> list[Path]:
    """The exercise notebooks of the book: ``src_dir/14*_exercise_*.ipynb``, sorted by name."""
    return sorted(Path(src_dir).glob("14*_exercise_*.ipynb"))


def write_assignments(src_dir: str | Path = "notebooks", out_dir: str | Path = "assignments") -> list[Path]:
    """Write the student version (:func:`strip_solutions`) of every exercise notebook into ``out_dir``.

    Returns the written paths, one per ``src_dir/14*_exercise_*.ipynb``, with the same file names.

    Raises:
        FileNotFoundError: when ``src_dir`` holds no exercise notebook.
    """
    import nbformat

    sources = exercise_notebooks(src_dir)
    if not sources:
        raise FileNotFoundError(f"no exercise notebook (14*_exercise_*.ipynb) in {Path(src_dir).resolve()}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        nb = strip_solutions(nbformat.read(str(source), as_version=4))
        target = out_dir / source.name
        nbformat.write(nb, str(target))
        written.append(target)
    return written


# ---------------------------------------------------------------------------------------- checks
def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _reference_name(fn: Callable) -> str:
    module = getattr(fn, "__module__", None)
    return f"{module}.{_name(fn)}" if module and module.startswith("tkmia") else _name(fn)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 600 else text[:600] + " ..."


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
            return f"{where} should be a sequence of {len(expected)} values, got {_short(got)}"
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
        return None if ok else f"{where} should be {expected!r}, got {_short(got)}"
    return None if got == expected else f"{where} should be {_short(expected)}, got {_short(got)}"


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
) -> int:
    """Assert that ``fn(*case) == reference(*case)`` on every case; return the number of cases.

    Args:
        fn: the student's function.
        reference: the library's function (``tkmia.metrics.precision_at_k``, ...).
        cases: argument tuples (or keyword dicts), e.g. from :func:`measure_cases`.
        atol: absolute tolerance of float comparisons (tensors, numbers, dataclass fields).
        name: how to call ``fn`` in the messages (default its ``__name__``).
        quiet: do not print the success line.

    Raises:
        AssertionError: at the first case where the results differ, or where ``fn`` raises an
            exception that is not ``NotImplementedError``, naming the case, its inputs, the expected
            and the received value (``NotImplementedError`` propagates unchanged: the function is
            not written yet).
    """
    name = name or _name(fn)
    count = 0
    for index, case in enumerate(cases):
        args, kwargs = ((), dict(case)) if isinstance(case, Mapping) else (tuple(case), {})
        expected = reference(*args, **kwargs)
        try:
            got = fn(*args, **kwargs)
        except NotImplementedError:
            raise
        except Exception as err:  # a crash is a wrong answer: say on which input
            raise AssertionError(
                f"{name} raised {type(err).__name__}: {err}\n  on case {index}: args={_short(args)} "
                f"kwargs={_short(kwargs)}"
            ) from err
        found = _difference(got, expected, atol)
        if found:
            hint = ""
            if _has_ties(args):
                hint = ("\n  hint: this case has tied scores; tkmia ranks the lower label index first among "
                        "equal scores (torch.sort(..., descending=True, stable=True))")
            raise AssertionError(
                f"{name} disagrees with {_reference_name(reference)} on case {index}: {found}.\n"
                f"  args={_short(args)}\n  kwargs={_short(kwargs)}\n"
                f"  expected={_short(expected)}\n  got={_short(got)}{hint}"
            )
        count += 1
    if count == 0:
        raise ValueError("cases is empty: nothing was checked")
    if not quiet:
        print(f"✓ {name} agrees with {_reference_name(reference)} on {count} case{'s' if count != 1 else ''}")
    return count


def check_true(condition: bool | Tensor, message: str, success: str | None = None) -> None:
    """Assert ``condition`` (a bool or a tensor whose entries must all be true).

    Raises ``AssertionError(message)``; prints ``✓ success`` (default: ``message``'s claim) otherwise.
    """
    ok = bool(condition.all()) if isinstance(condition, Tensor) else bool(condition)
    if not ok:
        raise AssertionError(message)
    print(f"✓ {success or message}")


def check_upper_bound(average_top_k: Callable, cases: Iterable[tuple], atol: float = 1e-6) -> int:
    """Assert v_[m] ≤ ATk_m(v) for the student's ``average_top_k(v, m)`` on every ``(v, m)`` case.

    Returns the number of vectors checked; raises ``AssertionError`` naming the first violation.
    """
    total = 0
    for index, (v, m) in enumerate(cases):
        kth = relaxation.kth_largest(v, m)
        atk = average_top_k(v, m)
        bad = kth > atk + atol
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise AssertionError(
                f"case {index} (m = {m}): the {m}-th largest entry {kth[first].item():.6g} exceeds "
                f"average_top_k = {atk[first].item():.6g} at index {first}; ATk is a mean of the m "
                "largest entries, so it can never be below the smallest of them"
            )
        total += kth.numel()
    print(f"✓ v_[m] <= ATk_m(v) on all {total} vectors")
    return total


def check_grid_minimum(minimise: Callable, atk_variational: Callable, cases: Iterable[tuple]) -> int:
    """Check the student's ``minimise(v, m, grid) -> (value, lam)`` against the lemma on ``(v, m)`` cases.

    For a 1-D ``v`` and an even ``grid`` of λ's with step h covering [min v, max v], the minimum of
    the variational form over the grid must be within h·C/m of ATk_m(v) (never below it), and the
    minimising λ within h of the minimiser interval [v_[m+1], v_[m]] (v_[C+1] = −∞).
    Returns the number of vectors checked.
    """
    count = 0
    for index, (v, m) in enumerate(cases):
        for row in v.reshape(-1, v.shape[-1]):
            grid = torch.linspace(float(row.min()) - 1.0, float(row.max()) + 1.0, 501, dtype=row.dtype)
            h = float(grid[1] - grid[0])
            value, lam = minimise(row, m, grid)
            atk = float(relaxation.average_top_k(row, m))
            tol = 1e-5 * (1 + abs(atk))  # float32 rounding
            slack = h * row.numel() / m + tol
            if not atk - tol <= float(value) <= atk + slack:
                raise AssertionError(
                    f"case {index} (m = {m}): the grid minimum {float(value):.6g} should lie in "
                    f"[ATk, ATk + h·C/m] = [{atk:.6g}, {atk + slack:.6g}]; v = {_short(row)}"
                )
            upper = float(relaxation.kth_largest(row, m))
            lower = float(relaxation.kth_largest(row, m + 1)) if m < row.numel() else -math.inf
            if not lower - h - tol <= float(lam) <= upper + h + tol:
                raise AssertionError(
                    f"case {index} (m = {m}): the minimising λ = {float(lam):.6g} should lie in "
                    f"[v_[m+1], v_[m]] = [{lower:.6g}, {upper:.6g}] (up to the grid step {h:.2g})"
                )
            if atk_variational is not None:
                exact = float(atk_variational(row, m, torch.tensor(upper, dtype=row.dtype)))
                if not math.isclose(exact, atk, abs_tol=1e-5):
                    raise AssertionError(f"case {index}: atk_variational at λ = v_[m] is {exact:.6g}, "
                                         f"not ATk_m(v) = {atk:.6g}")
            count += 1
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


def _mean(values: Tensor, mask: Tensor) -> float:
    return float(values[mask].mean()) if mask.any() else math.nan


def compare_selections(setting: ClassSetting, selections: Mapping[str, Any], max_iter: int = 100):
    """Attack ``setting``'s images with TkMIA under each selection; one summary row per selection.

    A selection is a function ``(clean_scores, labels, k) -> Specification`` or a scheme object
    (:class:`~tkmia.selection.RandomSelection`, ...). Columns: ``eligible``, ``success_rate`` and
    ``imperceptible_rate`` (over eligible samples), ``pert_l2_255`` (mean ‖x_adv − x‖₂ in 0–255
    pixel units over successful samples), ``iterations`` (mean over eligible), ``delta_<measure>``
    (mean adversarial minus clean, over eligible samples).
    """
    import pandas as pd

    from tkmia.attacks import TkMIA

    attack = TkMIA(setting.model, setting.k, max_iter=max_iter, **setting.attack_options)
    with torch.no_grad():
        clean = setting.model(setting.images)
    rows = []
    for name, selection in selections.items():
        chosen = selection(clean, setting.labels, setting.k) if callable(selection) else selection
        result = attack(setting.images, setting.labels, chosen, ids=setting.ids)
        ok, hit = result.eligible, result.success
        row = {"selection": name, "eligible": int(ok.sum()),
               "success_rate": _mean(hit.float(), ok),
               "imperceptible_rate": _mean(result.imperceptible.float(), ok),
               "pert_l2_255": _mean(result.perturbation_l2_255, hit),
               "iterations": _mean(result.iterations.float(), ok)}
        before, after = result.clean_measures(), result.adv_measures()
        for measure in metrics.MEASURES:
            row[f"delta_{measure}"] = _mean(after[measure] - before[measure], ok)
        rows.append(row)
    return pd.DataFrame(rows).set_index("selection")


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


# ---------------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``python -m tkmia.classroom [--src notebooks] [--out assignments]``: write the student notebooks."""
    parser = argparse.ArgumentParser(
        prog="python -m tkmia.classroom",
        description="Write the student version of every exercise notebook (solutions removed).",
    )
    parser.add_argument("--src", default=str(_REPO / "notebooks"), help="folder of the exercise notebooks")
    parser.add_argument("--out", default="assignments", help="folder for the student notebooks")
    args = parser.parse_args(argv)
    try:
        written = write_assignments(args.src, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"tkmia.classroom: error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
