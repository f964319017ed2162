"""The classroom: student notebooks without solutions whose check cells still run, and the checks."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from papermill.exceptions import PapermillExecutionError

from tkmia import classroom, metrics, relaxation
from tkmia.book import execute_notebook, tiny_parameters

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = classroom.exercise_notebooks(ROOT / "notebooks")
NO_VICTIM = [p for p in EXERCISES if "selection" not in p.stem]


def _solution_lines(nb) -> list[str]:
    """The non-blank lines between the markers of every cell of ``nb``."""
    lines, inside = [], False
    for cell in nb.cells:
        for line in cell.source.splitlines():
            if line.strip() == classroom.BEGIN:
                inside = True
            elif line.strip() == classroom.END:
                inside = False
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def _checks(nb) -> list[str]:
    return [c.source for c in nb.cells if "check" in c.metadata.get("tags", [])]


def test_there_are_four_exercise_notebooks():
    assert [p.stem for p in EXERCISES] == [
        "14a_exercise_measures", "14b_exercise_atk", "14c_exercise_loss", "14d_exercise_selection"]


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_student_version_has_no_solution_but_keeps_checks_and_statements(path):
    nb = nbformat.read(path, as_version=4)
    solutions = _solution_lines(nb)
    assert solutions, "an exercise notebook must hold solutions between the markers"
    student = classroom.strip_solutions(nb)
    text = "\n".join(c.source for c in student.cells)
    assert classroom.BEGIN not in text and classroom.END not in text
    student_lines = {line.strip() for line in text.splitlines()}
    leaked = [line for line in solutions if line in student_lines and not line.startswith(("#", '"""'))]
    assert not leaked, f"solution lines left in the student version: {leaked}"
    assert text.count("raise NotImplementedError()") == nb_count(nb)
    assert "{solution-start}" not in text and "{solution-end}" not in text
    assert _checks(student) == _checks(nb) and _checks(nb)
    statements = re.findall(r"\{exercise\}.*", "\n".join(c.source for c in nb.cells))
    assert statements and all(s in text for s in statements)
    assert all(not c.outputs for c in student.cells if c.cell_type == "code")
    assert any("parameters" in c.metadata.get("tags", []) for c in student.cells)
    assert nb.cells[0].source == student.cells[0].source  # the original is not changed
    assert _solution_lines(nb) == solutions


def nb_count(nb) -> int:
    return sum(line.strip() == classroom.BEGIN for c in nb.cells for line in c.source.splitlines())


def test_strip_keeps_the_signature_and_indents_the_placeholder():
    source = ('def f(x):\n    """Doc."""\n    ### BEGIN SOLUTION\n    return x + 1\n'
              '    ### END SOLUTION\n\nf(1)')
    nb = new_notebook(cells=[
        new_markdown_cell("```{solution-start} ex-a\n:class: dropdown\n```"),
        new_code_cell(source, outputs=[], execution_count=3),
        new_markdown_cell("```{solution-end}\n```"),
        new_markdown_cell("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION"),
    ])
    out = classroom.strip_solutions(nb)
    assert [c.cell_type for c in out.cells] == ["code", "markdown"]
    assert out.cells[0].source == ('def f(x):\n    """Doc."""\n    # YOUR CODE HERE\n'
                                   '    raise NotImplementedError()\n\nf(1)')
    assert out.cells[0].execution_count is None
    assert out.cells[1].source == "Why?\nYOUR ANSWER HERE"
    with pytest.raises(ValueError, match="cell 0.*never closed"):
        classroom.strip_solutions(new_notebook(cells=[new_code_cell("### BEGIN SOLUTION\nx = 1")]))
    with pytest.raises(ValueError, match="without"):
        classroom.strip_solutions(new_notebook(cells=[new_code_cell("x = 1\n### END SOLUTION")]))


def test_write_assignments_and_the_command_line(tmp_path, capsys):
    written = classroom.write_assignments(ROOT / "notebooks", tmp_path / "a")
    assert [p.name for p in written] == [p.name for p in EXERCISES]
    for path in written:
        assert classroom.BEGIN not in path.read_text()
    assert classroom.main(["--src", str(ROOT / "notebooks"), "--out", str(tmp_path / "b")]) == 0
    assert sorted(p.name for p in (tmp_path / "b").glob("*.ipynb")) == [p.name for p in EXERCISES]
    assert classroom.main(["--src", str(tmp_path / "empty"), "--out", str(tmp_path / "c")]) == 2
    assert "no exercise notebook" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_student_notebook_stops_at_the_first_unwritten_function(path, tmp_path):
    [student] = [p for p in classroom.write_assignments(path.parent, tmp_path) if p.name == path.name]
    with pytest.raises(PapermillExecutionError) as info:
        execute_notebook(student, tmp_path / "out" / path.name, tiny_parameters(path))
    assert info.value.ename == "NotImplementedError"
    nb = nbformat.read(tmp_path / "out" / path.name, as_version=4)
    failed = [c for c in nb.cells if c.cell_type == "code"
              and any(o.output_type == "error" for o in c.outputs)]
    assert len(failed) == 1 and "check" in failed[0].metadata.get("tags", [])


@pytest.mark.slow
@pytest.mark.parametrize("path", NO_VICTIM, ids=lambda p: p.stem)
def test_full_notebook_passes_every_check(path, tmp_path):
    out = execute_notebook(path, tmp_path / path.name, tiny_parameters(path))
    nb = nbformat.read(out, as_version=4)
    printed = ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells
               if "check" in c.metadata.get("tags", [])]
    assert printed and all("✓" in text for text in printed)


def _precision_over_num_true(scores, labels, k):
    top = metrics.topk_indices(scores, k)
    return labels.gather(1, top).sum(1) / labels.sum(1).clamp(min=1)


def test_check_equal_catches_a_wrong_precision_and_passes_the_right_one(capsys):
    cases = classroom.measure_cases(8, n_cases=10, seed=0)
    with pytest.raises(AssertionError, match=r"_precision_over_num_true disagrees with "
                       r"tkmia.metrics.precision_at_k on case \d+: .*differs at index"):
        classroom.check_equal(_precision_over_num_true, metrics.precision_at_k, cases)
    assert classroom.check_equal(metrics.precision_at_k, metrics.precision_at_k, cases) == 10
    assert "✓" in capsys.readouterr().out


def test_check_equal_reports_ties_crashes_shapes_and_dataclasses():
    cases = classroom.measure_cases(6, n_cases=6, seed=3)
    assert classroom._has_ties(cases[-1]) and not classroom._has_ties(cases[0])

    def unstable(scores, labels, k):  # ranks tied scores by the higher label index first
        order = torch.sort(scores.flip(1), dim=1, descending=True, stable=True).indices
        top = scores.shape[1] - 1 - order[:, :k]
        return labels.gather(1, top).sum(1) / k

    with pytest.raises(AssertionError, match="tied scores"):
        classroom.check_equal(unstable, metrics.precision_at_k, [cases[-1]], quiet=True)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        classroom.check_equal(lambda s, y, k: 1 / 0, metrics.precision_at_k, cases, quiet=True)
    with pytest.raises(AssertionError, match="shape"):
        classroom.check_equal(lambda s, y, k: s, metrics.precision_at_k, cases, quiet=True)
    with pytest.raises(NotImplementedError):
        classroom.check_equal(_raise, metrics.precision_at_k, cases)
    with pytest.raises(ValueError, match="empty"):
        classroom.check_equal(metrics.precision_at_k, metrics.precision_at_k, [])

    def highest(f, y, k):
        return classroom.extreme_in_topk(f, y, k, "highest")

    with pytest.raises(AssertionError, match=r"result\.specified differs"):
        classroom.check_equal(highest, classroom.extreme_in_topk, cases, quiet=True)


def _raise(*args):
    raise NotImplementedError()


def test_property_checks():
    cases = classroom.vector_cases(6, n_cases=6, seed=0)
    assert classroom.check_upper_bound(relaxation.average_top_k, cases) == 6 * 5
    with pytest.raises(AssertionError, match="exceeds"):
        classroom.check_upper_bound(lambda v, m: v.min(-1).values, cases)

    def grid_min(v, m, grid):
        values = torch.stack([relaxation.atk_variational(v, m, lam) for lam in grid])
        return values.min(), grid[values.argmin()]

    assert classroom.check_grid_minimum(grid_min, relaxation.atk_variational, cases[:2]) == 10
    with pytest.raises(AssertionError, match="grid minimum"):
        classroom.check_grid_minimum(lambda v, m, g: (v.max() + 1, g[0]), None, cases[:1])
    with pytest.raises(AssertionError):
        classroom.check_true(torch.tensor([True, False]), "all true")


def test_extreme_in_topk_specifies_one_true_label_of_the_top_k():
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0], [4.0, 3.0, 2.0, 1.0, 0.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    low = classroom.extreme_in_topk(scores, labels, 3)
    assert low.specified[0].nonzero().flatten().tolist() == [1]
    assert low.eligible.tolist() == [True, False] and not low.specified[1].any()
    high = classroom.extreme_in_topk(scores, labels, 3, "highest")
    assert high.specified[0].nonzero().flatten().tolist() == [0]
    assert low.required.tolist() == [1, 1]


def test_the_unrelaxed_loss_is_not_convex_and_the_relaxed_one_is():
    frame = classroom.convexity_frame(
        {"relaxed": relaxation.tkmia_loss, "unrelaxed": classroom.kth_largest_loss}, n_pairs=500, seed=0)
    assert frame.loc["relaxed", "violations"] == 0
    assert frame.loc["unrelaxed", "violations"] > 0
