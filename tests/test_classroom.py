"""The classroom: the exercise notebooks as an nbgrader course (student versions, grading, gradebook),
and the checks their cells run."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nbformat
import pytest
import torch

from tkmia import metrics, relaxation
from tkmia.book import classroom, grading
from tkmia.book.runner import execute_notebook, tiny_parameters
from tkmia.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = classroom.exercise_notebooks(ROOT / "notebooks")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def test_there_are_four_exercise_notebooks():
    assert [p.stem for p in EXERCISES] == [
        "14a_exercise_measures", "14b_exercise_atk", "14c_exercise_loss", "14d_exercise_selection"]


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_exercise_notebooks_are_nbgrader_source_notebooks(path):
    """Solution cells hold the markers, check cells are autograded (points, hidden tests), every other
    cell but the book's solution wrappers is locked; grade_ids are unique; each exercise's title
    states the points of the check cells that follow it."""
    nb = nbformat.read(path, as_version=4)
    ids = [_nbgrader(c)["grade_id"] for c in nb.cells if _nbgrader(c)]
    assert len(ids) == len(set(ids))
    solutions = [c for c in nb.cells if _nbgrader(c).get("solution")]
    tests = [c for c in nb.cells if _nbgrader(c).get("grade")]
    assert solutions and tests
    assert all(BEGIN in c.source and END in c.source for c in solutions)
    assert all(c.cell_type == "code" and _nbgrader(c)["locked"] and _nbgrader(c)["points"] > 0
               and "### BEGIN HIDDEN TESTS" in c.source and 'classroom.passed("public checks")' in c.source
               for c in tests)
    unmarked = [i for i, c in enumerate(nb.cells) if not _nbgrader(c)
                and not re.match(r"^```\{solution-(start|end)\}", c.source)]
    assert not unmarked, f"cells without nbgrader metadata: {unmarked}"
    points, current = {}, None
    for cell in nb.cells:
        title = re.match(r"^```\{exercise\} (.*) · (\d+) points?\n", cell.source)
        if title:
            current = title.group(1)
            points[current] = [int(title.group(2)), 0]
            assert ":nonumber:" in cell.source  # numbered per page by its title, not "Exercise 14.10"
        elif _nbgrader(cell).get("grade"):
            points[current][1] += _nbgrader(cell)["points"]
    assert points and all(stated == graded for stated, graded in points.values()), points


def test_plain_markdown_rewrites_myst_markup():
    source = ("(ex-a)=\n# Title\n\nSee {ref}`the measures <measures>`, "
              "{py:class}`~tkmia.selection.Specification` and {glue:text}`n_cases:.0f` cases.\n\n"
              "```{exercise} Precision · 2 points\n:label: ex-a:p\n"
              ":nonumber:\n\nWrite `f`.\n```\n\n```{prf:lemma}\n:label: l\n\nA claim.\n```\n\n"
              "```python\nx = 1\n```")
    out = classroom.plain_markdown(source)
    assert out == ("# Title\n\nSee the measures, `Specification` and `n_cases` cases.\n\n"
                   "**Exercise 1 (Precision · 2 points).** Write `f`.\n\n**Lemma.** A claim.\n\n"
                   "```python\nx = 1\n```")
    assert classroom.myst_markup(out) == []
    assert classroom.myst_markup(source) == ["(ex-a)=", "{ref}`", "{py:class}`", "{glue:text}`", "```{",
                                             ":label:", ":nonumber:", "```{", ":label:"]


# ---------------------------------------------------------------------------------------- checks
def _precision_over_num_true(scores, labels, k):
    top = metrics.topk_indices(scores, k)
    return labels.gather(1, top).sum(1) / labels.sum(1).clamp(min=1)


def test_a_failed_check_names_the_case_in_full(capsys):
    cases = classroom.measure_cases(8, n_cases=10, seed=0)
    with pytest.raises(classroom.CheckFailed) as info:
        classroom.check_equal(_precision_over_num_true, metrics.precision_at_k, cases)
    message = str(info.value)
    index = int(re.search(r"on case (\d+)", message).group(1))
    scores, labels, k = cases[index]
    assert "_precision_over_num_true disagrees with tkmia.metrics.precision_at_k" in message
    assert f"  k = {k}\n" in message and "..." not in message
    for name, value in (("scores", scores), ("labels", labels)):  # every row, in full
        block = message.split(f"  {name} = ")[1]
        assert block.count("[") >= value.shape[0] + 1
    assert "expected = tensor(" in message and "got      = tensor(" in message
    assert classroom.check_equal(metrics.precision_at_k, metrics.precision_at_k, cases) == 10
    classroom.passed("public checks")
    out = capsys.readouterr().out
    assert "✓ public checks passed" in out and "all tests passed" not in out


def test_check_equal_reports_ties_crashes_shapes_dataclasses_and_optional(capsys):
    cases = classroom.measure_cases(6, n_cases=6, seed=3)
    assert classroom._has_ties(cases[-1]) and not classroom._has_ties(cases[0])

    def unstable(scores, labels, k):  # ranks tied scores by the higher label index first
        order = torch.sort(scores.flip(1), dim=1, descending=True, stable=True).indices
        top = scores.shape[1] - 1 - order[:, :k]
        return labels.gather(1, top).sum(1) / k

    with pytest.raises(classroom.CheckFailed, match="tied scores"):
        classroom.check_equal(unstable, metrics.precision_at_k, [cases[-1]], quiet=True)
    with pytest.raises(classroom.CheckFailed, match=r"raised ZeroDivisionError(.|\n)*  k = 1"):
        classroom.check_equal(lambda scores, labels, k: 1 / 0, metrics.precision_at_k, cases, quiet=True)
    with pytest.raises(classroom.CheckFailed, match="shape"):
        classroom.check_equal(lambda s, y, k: s, metrics.precision_at_k, cases, quiet=True)
    with pytest.raises(NotImplementedError):
        classroom.check_equal(_raise, metrics.precision_at_k, cases)
    assert classroom.check_equal(_raise, metrics.precision_at_k, cases, optional=True) == 0
    assert "optional and not written yet: check skipped" in capsys.readouterr().out
    with pytest.raises(ValueError, match="empty"):
        classroom.check_equal(metrics.precision_at_k, metrics.precision_at_k, [])

    def highest(f, y, k):
        return classroom.extreme_in_topk(f, y, k, "highest")

    with pytest.raises(classroom.CheckFailed, match=r"result\.specified differs"):
        classroom.check_equal(highest, classroom.extreme_in_topk, cases, quiet=True)


def test_ipython_shows_a_failed_check_as_its_verdict_after_the_students_traceback(capsys):
    """IPython renders a CheckFailed through its ``_render_traceback_`` hook (nothing is installed
    on import): the student's own error first, then the verdict, and no frame of tkmia's checks."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        result = shell.run_cell(
            "from tkmia import metrics\nfrom tkmia.book import classroom\n"
            "def mine(scores, labels, k):\n    return 1 / 0\n"
            "cases = classroom.measure_cases(6, n_cases=2, seed=3)\n"
            "classroom.check_equal(mine, metrics.precision_at_k, cases)")
    finally:
        InteractiveShell.clear_instance()
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert isinstance(result.error_in_exec, classroom.CheckFailed)
    assert out.index("ZeroDivisionError") < out.index("raised the error above") < out.index("CheckFailed: ")
    assert "def check_equal" not in out and "classroom.py" not in out
    assert classroom.CheckFailed("wrong")._render_traceback_() == ["\x1b[0;31mCheckFailed\x1b[0m: wrong"]


def _raise(*args):
    raise NotImplementedError()


def test_property_checks():
    cases = classroom.vector_cases(6, n_cases=6, seed=0)
    assert classroom.check_upper_bound(relaxation.average_top_k, cases) == 6 * 5
    with pytest.raises(classroom.CheckFailed, match=r"exceeds(.|\n)*  m = "):
        classroom.check_upper_bound(lambda v, m: v.min(-1).values, cases)

    def grid_min(v, m, grid):
        values = torch.stack([relaxation.atk_variational(v, m, lam) for lam in grid])
        return values.min(), grid[values.argmin()]

    assert classroom.check_grid_minimum(grid_min, relaxation.atk_variational, cases[:2]) == 10
    with pytest.raises(classroom.CheckFailed, match=r"grid minimum(.|\n)*  v = tensor"):
        classroom.check_grid_minimum(lambda v, m, g: (v.max() + 1, g[0]), None, cases[:1])
    with pytest.raises(classroom.CheckFailed):
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


# ---------------------------------------------------------------------------------------- the course
@pytest.fixture(scope="module")
def student_versions(tmp_path_factory) -> dict[str, Path]:
    """``nbgrader generate_assignment`` on every exercise notebook (what ``make assignments`` does)."""
    out = tmp_path_factory.mktemp("assignments")
    assert cli_main(["classroom", "assign", "--out", str(out)]) == 0
    return {p.stem: p for p in sorted(out.glob("*.ipynb"))}


def test_grade_command_names_what_it_needs(tmp_path, capsys):
    (tmp_path / "subs" / "ann").mkdir(parents=True)
    (tmp_path / "subs" / "ann" / "homework.ipynb").write_text("{}")
    assert cli_main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out")]) == 2
    assert "no <student>/<exercise notebook>.ipynb" in capsys.readouterr().err
    assert cli_main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "o"),
                     "--timeout", "0"]) == 2
    assert "--timeout must be a positive number of seconds, got 0" in capsys.readouterr().err


def test_assign_never_writes_over_source_notebooks(tmp_path, capsys):
    """--out the source folder, a folder inside it, or a folder holding a notebook with solutions
    is refused before anything is written; a folder of earlier student versions is not."""
    src = tmp_path / "notebooks"
    src.mkdir()
    for path in EXERCISES:
        (src / path.name).write_bytes(path.read_bytes())
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    for out in (src, src / "students"):
        assert cli_main(["classroom", "assign", "--source", str(src), "--out", str(out)]) == 2
        assert "source folder" in capsys.readouterr().err
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    (elsewhere / EXERCISES[0].name).write_bytes(EXERCISES[0].read_bytes())
    assert cli_main(["classroom", "assign", "--source", str(src), "--out", str(elsewhere)]) == 2
    assert "holds notebooks with solution cells" in capsys.readouterr().err
    assert (elsewhere / EXERCISES[0].name).read_bytes() == EXERCISES[0].read_bytes()
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    student = tmp_path / "student"
    student.mkdir()
    nb = nbformat.read(EXERCISES[0], as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace("### BEGIN SOLUTION", "").replace("### BEGIN HIDDEN TESTS", "")
    nbformat.write(nb, student / EXERCISES[0].name)
    classroom._refuse_assign_output(student, src)  # a student version may be replaced


def _solution(source_cell: str) -> str:
    return "\n".join(line for line in source_cell.splitlines() if line.strip() not in (BEGIN, END))


def _between_markers(source: str) -> list[str]:
    """The non-blank lines between the solution markers."""
    lines = source.splitlines()
    start, end = [i for i, line in enumerate(lines) if line.strip() in (BEGIN, END)]
    return [line for line in lines[start + 1:end] if line.strip()]


def _fill(student: Path, replace: dict[str, str] | None = None, skip: tuple[str, ...] = ()):
    """The student version with every solution cell answered by the book's solution, except the
    grade_ids in ``replace`` (answered with that code) and in ``skip`` (left unanswered)."""
    replace = replace or {}
    nb = nbformat.read(student, as_version=4)
    source = nbformat.read(ROOT / "notebooks" / student.name, as_version=4)
    answers = {_nbgrader(c)["grade_id"]: _solution(c.source)
               for c in source.cells if _nbgrader(c).get("solution")}
    for cell in nb.cells:
        grade_id = _nbgrader(cell).get("grade_id")
        if _nbgrader(cell).get("solution") and grade_id not in skip:
            cell.source = replace.get(grade_id, answers[grade_id])
    return nb


@pytest.mark.slow
def test_student_versions_are_plain_notebooks_without_solutions(student_versions):
    assert sorted(student_versions) == [p.stem for p in EXERCISES]
    for name, path in student_versions.items():
        nb = nbformat.read(path, as_version=4)
        source = nbformat.read(ROOT / "notebooks" / path.name, as_version=4)
        text = "\n".join(c.source for c in nb.cells)
        assert classroom.myst_markup(text) == [], name  # no raw MyST, no {glue:...}
        assert "{glue" not in text and "{solution" not in text and "{exercise}" not in text
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "hidden_cases" not in text
        solutions = [c for c in source.cells if _nbgrader(c).get("solution")]
        answers = {line.strip() for c in solutions for line in _between_markers(c.source)}
        assert answers and not {line.strip() for line in text.splitlines()} & answers, name
        assert text.count("raise NotImplementedError()") == len(solutions)
        assert all(c.metadata.get("editable") is False for c in nb.cells if not _nbgrader(c).get("solution"))
        numbers = re.findall(r"\*\*Exercise (\d+) ", text)
        assert numbers == [str(i + 1) for i in range(text.count("**Exercise "))]


@pytest.mark.slow
def test_run_all_on_a_complete_student_version_passes_and_skips_the_optional(student_versions, tmp_path):
    """Required exercises answered, the optional NDCG left alone: "Run all" ends without an error."""
    path = tmp_path / "14a_exercise_measures.ipynb"
    nbformat.write(_fill(student_versions["14a_exercise_measures"], skip=("measures-ndcg-solution",)), path)
    out = execute_notebook(path, tmp_path / "out.ipynb", tiny_parameters(ROOT / "notebooks" / path.name))
    printed = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                      if c.cell_type == "code" for o in c.outputs)
    assert printed.count("✓ public checks passed") == 2
    assert "ndcg_at_k is optional and not written yet: check skipped" in printed
    assert "all tests passed" not in printed and "hidden checks" not in printed


LOOP = "def map_at_k(scores, labels, k):\n    while True:\n        pass"
WRONG_AT_K5 = ("def map_at_k(scores, labels, k):\n"
               "    top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]\n"
               "    rel = labels.gather(1, top).float()\n"
               "    total = (rel.cumsum(1) / torch.arange(1, k + 1) * rel).sum(1)\n"
               "    denominator = labels.sum(1).clamp(max=k) if k != 5 else torch.full_like(total, 5.0)\n"
               "    return torch.where(denominator > 0, total / denominator.clamp(min=1),\n"
               "                       torch.zeros_like(total))")
RAISES = "def precision_at_k(scores, labels, k):\n    raise ValueError(f'my precision is broken for k = {k}')"


@pytest.mark.slow
def test_the_teacher_cycle_grades_five_submissions(student_versions, tmp_path):
    """Five submissions of 14a: complete, untouched, wrong for k = 5 (mAP), raising (P@k), looping
    forever (mAP, stopped by the timeout); plus a student who submitted nothing and one who deleted
    a test cell and edited another (both are graded as handed out)."""
    student = student_versions["14a_exercise_measures"]
    name = student.name
    subs = tmp_path / "submissions"
    fake = {
        "a_complete": _fill(student),
        "b_untouched": nbformat.read(student, as_version=4),
        "c_wrong_map": _fill(student, {"measures-map-solution": WRONG_AT_K5}),
        "d_raises": _fill(student, {"measures-precision-solution": RAISES}),
        "e_loops": _fill(student, {"measures-map-solution": LOOP}),
    }
    tampered = _fill(student)
    tampered.cells = [c for c in tampered.cells if _nbgrader(c).get("grade_id") != "measures-map"]
    [edited] = [c for c in tampered.cells if _nbgrader(c).get("grade_id") == "measures-precision"]
    edited.source = "pass  # no checks here"
    fake["g_tampered"] = tampered
    for who, nb in fake.items():
        (subs / who).mkdir(parents=True)
        nbformat.write(nb, subs / who / name)
    (subs / "f_missing").mkdir()

    result = grading.grade(subs, tmp_path / "graded", timeout=10)

    rows = list(csv.reader(result.gradebook.open()))
    assert rows == [
        ["student", "measures-precision", "measures-map", "measures-ndcg", "total", "max_score"],
        ["a_complete", "2", "3", "1", "6", "6"],
        ["b_untouched", "0", "0", "0", "0", "6"],
        ["c_wrong_map", "2", "0", "1", "3", "6"],
        ["d_raises", "0", "3", "1", "4", "6"],
        ["e_loops", "2", "0", "1", "3", "6"],
        ["f_missing", "0", "0", "0", "0", "6"],
        ["g_tampered", "2", "3", "1", "6", "6"],
    ]
    assert result.report == [
        "f_missing/14a_exercise_measures.ipynb: missing: it scores 0",
        "g_tampered/14a_exercise_measures.ipynb: locked cell 'measures-precision' edited: the handed-out "
        "version is graded",
        "g_tampered/14a_exercise_measures.ipynb: test cell 'measures-map' deleted: its checks are graded "
        "all the same",
    ]
    assert (tmp_path / "graded" / "report.txt").read_text().splitlines() == result.report
    feedback = {who: (result.feedback / who / "14a_exercise_measures.html").read_text()
                for who in fake}
    assert "my precision is broken for k = 1" in feedback["d_raises"]
    assert "CheckFailed" in feedback["d_raises"] and "CheckFailed" in feedback["c_wrong_map"]
    assert not [who for who, page in feedback.items() if "classroom.py" in page]  # no library frames
    assert not [who for who, page in feedback.items() if "hidden_cases" in page]  # no hidden test code
    assert re.search(r"map_at_k disagrees with tkmia.metrics.map_at_k on case \d+", feedback["c_wrong_map"])
    assert "k = 5" in feedback["c_wrong_map"]
    assert "map_at_k ran longer than 10 s" in feedback["e_loops"]
    assert not (result.feedback / "f_missing").exists()
    assert result.seconds > 0
    print(f"graded {len(fake)} submissions in {result.seconds:.1f} s")


def test_the_report_names_empty_and_tampered_notebooks():
    locked = {"grade_id": "t", "grade": True, "solution": False, "locked": True, "points": 1}
    solution = {"grade_id": "s", "grade": False, "solution": True, "locked": False}
    cells = [
        {"cell_type": "code", "source": "def f():\n    raise NotImplementedError()",
         "metadata": {"nbgrader": solution}},
        {"cell_type": "code", "metadata": {"nbgrader": locked},
         "source": "assert f() == 1\n### BEGIN HIDDEN TESTS\nassert f()\n### END HIDDEN TESTS\n"},
    ]
    plan = grading.Plan("nb", cells, ["f"], [])
    assert grading._inspect({"cells": "no"}, plan, "ann/nb.ipynb") == [
        "ann/nb.ipynb: unreadable notebook (no list of cells): it scores 0"]
    assert "empty notebook (no cells)" in grading._inspect({"cells": []}, plan, "ann/nb.ipynb")[0]
    handed_out = {"cells": [cells[0], {**cells[1], "source": "assert f() == 1\n"}]}
    assert grading._inspect(handed_out, plan, "ann/nb.ipynb") == []
    edited = {"cells": [{**cells[1], "source": "pass"}]}
    assert grading._inspect(edited, plan, "ann/nb.ipynb") == [
        "ann/nb.ipynb: solution cell 's' deleted: its code is missing when the notebook runs",
        "ann/nb.ipynb: locked cell 't' edited: the handed-out version is graded"]


@pytest.mark.slow
def test_hidden_tests_are_removed_as_nbgrader_removes_them(student_versions):
    """The grader's idea of a handed-out test cell (released_source) is nbgrader's own."""
    for name, path in student_versions.items():
        released = {_nbgrader(c)["grade_id"]: c.source for c in nbformat.read(path, as_version=4).cells
                    if _nbgrader(c).get("grade")}
        source = {_nbgrader(c)["grade_id"]: c.source for c in nbformat.read(ROOT / "notebooks" / path.name,
                                                                           as_version=4).cells
                  if _nbgrader(c).get("grade")}
        assert released.keys() == source.keys(), name
        for grade_id, text in source.items():
            assert grading._same_code(grading.released_source(text), released[grade_id]), grade_id
