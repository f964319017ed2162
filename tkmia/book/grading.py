"""Grading a class's exercise notebooks, with every verdict decided where student code cannot reach.

``tkmia classroom grade SUBMISSIONS --out DIR`` (:func:`grade`) grades a plain folder of
``<student>/<notebook>.ipynb`` in three steps per exercise notebook:

1. **The plan**, in the grader's process, from the instructor's source notebook: its cells run up
   to the last graded cell, and each graded cell (public and hidden checks) runs with the
   solution's functions wrapped, so that every call the checks make of a student's function is
   recorded: its name and its arguments (the hidden inputs included).
2. **The submission**, in a sandbox (:mod:`tkmia.book.sandbox`): the handed-out version of every
   locked cell, the student's solution cells and the cells they added run in order; in place of
   each graded cell, the recorded calls are made of the student's functions, and their results
   (plain data) come back. The sandbox sees no test code, no expected value, no source notebook.
3. **The verdicts**, back in the grader's process: each graded cell's code runs again with the
   student's functions replaced by their recorded results, so that the very checks of the
   notebook (:func:`tkmia.book.classroom.check_equal`, ...) compare them with the library's
   answers. A cell scores its points when its checks pass, else 0.

The gradebook, ``report.txt`` and the feedback pages are written by the grader alone, at the end,
each file atomically (a temporary file renamed into place); an interrupted run writes nothing.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import dataclasses
import html
import io
import itertools
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tkmia.book import classroom, sandbox
from tkmia.book.classroom import CheckFailed
from tkmia.book.runner import NOTEBOOKS

__all__ = ["Grading", "grade", "plan_notebook", "Plan", "released_source"]

MARKER = ".tkmia-grading"  # the file that makes an --out folder recognisably a grading's
_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[ \t]*\n.*?^[ \t]*### END HIDDEN TESTS[ \t]*(\n|\Z)",
                     re.M | re.S)
_NOTEBOOK_LIMIT = 20 << 20  # bytes: a bigger "notebook" is not graded
_MESSAGE_LIMIT = 8000  # characters of a check's message in the feedback
_SOURCES = NOTEBOOKS
_UMASK = os.umask(0o22)
os.umask(_UMASK)


@dataclasses.dataclass
class Grading:
    """What :func:`grade` wrote: the gradebook CSV, the feedback folder, the report lines (one per
    anomaly: missing, unreadable or tampered notebook, a stopped sandbox) and the wall-clock seconds."""

    gradebook: Path
    feedback: Path
    report: list[str]
    seconds: float


def _info(cell: dict) -> dict:
    meta = cell.get("metadata", {}) if isinstance(cell, dict) else {}
    nbgrader = meta.get("nbgrader", {}) if isinstance(meta, dict) else {}
    return nbgrader if isinstance(nbgrader, dict) else {}


def _text(cell: dict) -> str:
    source = cell.get("source", "") if isinstance(cell, dict) else ""
    return "".join(source) if isinstance(source, list) else str(source)


def released_source(source: str) -> str:
    """A test cell as students get it: the ``### BEGIN/END HIDDEN TESTS`` blocks removed."""
    return _HIDDEN.sub("", source)


def _same_code(a: str, b: str) -> bool:
    strip = lambda s: [line.rstrip() for line in s.strip().splitlines()]  # noqa: E731
    return strip(a) == strip(b)


def _shown(name: str) -> str:
    """A student's or file's name as a report line shows it (control characters escaped)."""
    return name if name.isprintable() else ascii(name)[1:-1]


# ---------------------------------------------------------------------------------------- the plan
@dataclasses.dataclass
class Question:
    """One graded cell of the plan: its code (hidden tests included), its points, the namespace it
    ran in and the calls its checks made of the student's functions (``(name, args, kwargs)``,
    encoded)."""

    grade_id: str
    index: int
    points: float
    source: str
    namespace: dict
    calls: list[tuple]


@dataclasses.dataclass
class Plan:
    """What grading one exercise notebook needs: its cells, the names of the functions its solution
    cells define, and its :class:`Question` s in order."""

    name: str
    cells: list[dict]
    functions: list[str]
    questions: list[Question]

    @property
    def last(self) -> int:
        return max(q.index for q in self.questions)


class _Recorded:
    """A solution function while the plan runs: each outermost call is recorded, then made."""

    depth = 0

    def __init__(self, name: str, fn: Callable, log: list):
        self.__name__, self.fn, self.log = name, fn, log

    def __call__(self, *args, **kwargs):
        if _Recorded.depth == 0:
            self.log.append((self.__name__, _encode(args), _encode(kwargs)))
        _Recorded.depth += 1
        try:
            return self.fn(*args, **kwargs)
        finally:
            _Recorded.depth -= 1


def _encode(value: Any) -> Any:
    """:func:`tkmia.book.sandbox.encode`, with a student's function (recorded or replayed) as an
    argument sent as a reference to the same name in the student's notebook."""
    if isinstance(value, _Recorded | _Replayed):
        return sandbox.student_reference(value.__name__)
    if isinstance(value, tuple | list):
        items = [_encode(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return sandbox.encode(value)


def _defined_functions(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def plan_notebook(path: str | Path) -> Plan:
    """Run the source notebook at ``path`` up to its last graded cell, recording each graded cell's
    calls of the solution functions. Raises ``RuntimeError`` naming the cell when the instructor's
    own notebook fails (the plan of a broken notebook would grade nothing right)."""
    path = Path(path)
    cells = json.loads(path.read_text())["cells"]
    functions = sorted({name for c in cells if _info(c).get("solution") and c.get("cell_type") == "code"
                        for name in _defined_functions(_text(c))})
    graded = [i for i, c in enumerate(cells) if _info(c).get("grade") and c.get("cell_type") == "code"]
    if not graded:
        raise RuntimeError(f"{path} has no graded cell (nbgrader metadata grade: true)")
    namespace: dict = {"__name__": "__main__"}
    questions = []
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for index, cell in enumerate(cells[: graded[-1] + 1]):
            if cell.get("cell_type") != "code":
                continue
            source, info = _text(cell), _info(cell)
            if index not in graded:
                _exec_plan(source, namespace, path, index)
                continue
            snapshot, log = dict(namespace), []
            for name in functions:
                if callable(namespace.get(name)):
                    namespace[name] = _Recorded(name, snapshot[name], log)
            try:
                _exec_plan(source, namespace, path, index)
            finally:
                for name in functions:
                    if name in snapshot:
                        namespace[name] = snapshot[name]
            if not log:
                raise RuntimeError(f"{path}, graded cell {info.get('grade_id')!r}: its checks call no "
                                   f"function of the solution cells ({', '.join(functions)}), so there is "
                                   "nothing of a student's to grade")
            questions.append(Question(str(info["grade_id"]), index, float(info.get("points", 0)), source,
                                      snapshot, log))
    return Plan(path.stem, cells, functions, questions)


def _exec_plan(source: str, namespace: dict, path: Path, index: int) -> None:
    try:
        exec(compile(source, f"<{path.name} cell {index}>", "exec"), namespace)
    except Exception as err:
        raise RuntimeError(f"{path}: cell {index} of the instructor's notebook fails "
                           f"({type(err).__name__}: {err}); fix it before grading") from err


# ---------------------------------------------------------------------------------------- replay
class _NotRun(Exception):
    """The student's function was not called on these arguments (its sandbox stopped first)."""


class _Replayed:
    """A student's function during the verdicts: each call returns (or raises) what the same call
    returned in the sandbox."""

    def __init__(self, name: str, question: Question, outcomes: list | None, state: dict, why: str):
        self.__name__, self.question, self.outcomes = name, question, outcomes
        self.state, self.why = state, why

    def __call__(self, *args, **kwargs):
        key = (self.__name__, _encode(args), _encode(kwargs))
        calls = self.question.calls
        for j in range(self.state["at"], len(calls)):
            if _equal(calls[j], key):
                self.state["at"] = j + 1
                break
        else:
            raise RuntimeError(f"the checks of {self.question.grade_id!r} called {self.__name__} on "
                               "arguments the plan did not record (does the cell draw random inputs "
                               "without a seed?)")
        if self.outcomes is None or j >= len(self.outcomes):
            raise _NotRun(f"{self.__name__} was not run on this case: {self.why}")
        return _outcome(self.outcomes[j], self.__name__, self.state["timeout"])


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool(((a == b) | (a.isnan() & b.isnan())).all()
                                                 if a.is_floating_point() else (a == b).all()))
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


class _Raised(Exception):
    """An exception a student's function raised in the sandbox (type name and message kept)."""

    traceback_text = ""


def _outcome(outcome: Any, name: str, timeout: int) -> Any:
    kind = outcome[0] if isinstance(outcome, tuple) and outcome else None
    if kind == "ok" and len(outcome) == 2:
        return sandbox.decode(outcome[1], untrusted=True)
    if kind == "timeout":
        raise sandbox.CellTimeoutError(f"{name} ran longer than {timeout} s (the cell's time-out) and was "
                                       "stopped")
    if kind == "raised" and len(outcome) == 4:
        type_name, message, text = (str(part) for part in outcome[1:])
        if type_name == "NotImplementedError":
            error: Exception = NotImplementedError(message)
        else:
            cls = type(type_name if type_name.isidentifier() else "Error", (_Raised,), {})
            error = cls(message)
        error.traceback_text = text  # type: ignore[attr-defined]
        raise error
    raise _NotRun(f"{name}: the sandbox sent back an outcome of the wrong form")


@dataclasses.dataclass
class Verdict:
    """One graded cell of one submission: the points given (0 or the cell's), what the checks
    printed, and the failure's message (empty when it passed)."""

    grade_id: str
    points: float
    max_points: float
    printed: str
    failure: str


def _verdict(plan: Plan, question: Question, outcomes: list | None, why: str, timeout: int) -> Verdict:
    namespace = dict(question.namespace)
    state = {"at": 0, "timeout": timeout}
    for name in plan.functions:
        namespace[name] = _Replayed(name, question, outcomes, state, why)
    printed, failure = io.StringIO(), ""
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        try:
            exec(compile(question.source, f"<check {question.grade_id}>", "exec"), namespace)
        except CheckFailed as err:
            failure = f"CheckFailed: {err}"
            cause = err.__cause__
            if cause is not None and getattr(cause, "traceback_text", ""):
                failure = f"Your function raised:\n{cause.traceback_text}\n{failure}"
        except NotImplementedError as err:
            failure = ("NotImplementedError: a function of this question is not written yet"
                       + (f" ({err})" if str(err) else ""))
        except _NotRun as err:
            failure = f"not graded: {err}"
        except Exception as err:  # noqa: BLE001 (a result the checks cannot handle is a wrong result)
            failure = f"{type(err).__name__}: {err}"
            if getattr(err, "traceback_text", ""):
                failure = f"Your function raised:\n{err.traceback_text}\n{failure}"
    points = 0.0 if failure else question.points
    return Verdict(question.grade_id, points, question.points, printed.getvalue()[-_MESSAGE_LIMIT:],
                   failure[:_MESSAGE_LIMIT])


# ---------------------------------------------------------------------------------------- one submission
def _inspect(nb: Any, plan: Plan, who: str) -> list[str]:
    """Report lines for one submission compared with the handed-out notebook."""
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        return [f"{who}: unreadable notebook (no list of cells): it scores 0"]
    if not cells:
        return [f"{who}: empty notebook (no cells): its checks fail, it scores 0"]
    lines, mine = [], {_info(c).get("grade_id"): c for c in cells if _info(c).get("grade_id")}
    for cell in plan.cells:
        info, grade_id = _info(cell), _info(cell).get("grade_id")
        if not grade_id or info.get("solution") and cell.get("cell_type") != "code":
            continue
        if grade_id not in mine:
            if info.get("grade"):
                lines.append(f"{who}: test cell {grade_id!r} deleted: its checks are graded all the same")
            elif info.get("solution"):
                lines.append(f"{who}: solution cell {grade_id!r} deleted: its code is missing when the "
                             "notebook runs")
            continue
        if info.get("locked") and cell.get("cell_type") == "code":
            handed_out = released_source(_text(cell)) if info.get("grade") else _text(cell)
            if not _same_code(_text(mine[grade_id]), handed_out):
                lines.append(f"{who}: locked cell {grade_id!r} edited: the handed-out version is graded")
    return lines


def _layout(nb: dict, plan: Plan) -> list[dict]:
    """The cells the sandbox runs: the plan's cells up to the last graded one, the student's code in
    solution cells and in the cells they added (after the cell they follow), the recorded calls in
    place of each graded cell. Each entry also says which cell of the plan it stands for."""
    mine = [c for c in nb.get("cells", []) if isinstance(c, dict)]
    by_id = {_info(c).get("grade_id"): c for c in mine if _info(c).get("grade_id")}
    known = {_info(c).get("grade_id") for c in plan.cells if _info(c).get("grade_id")}
    added: dict[Any, list[str]] = {}
    anchor = None
    for cell in mine:
        grade_id = _info(cell).get("grade_id")
        if grade_id in known:
            anchor = grade_id
        elif cell.get("cell_type") == "code" and _text(cell).strip():
            added.setdefault(anchor, []).append(_text(cell))
    slots = {q.index: slot for slot, q in enumerate(plan.questions)}
    run = [{"kind": "code", "source": s, "shows": ("added", None)} for s in added.get(None, [])]
    for index, cell in enumerate(plan.cells[: plan.last + 1]):
        info, grade_id = _info(cell), _info(cell).get("grade_id")
        if cell.get("cell_type") == "code":
            if index in slots:
                slot = slots[index]
                run.append({"kind": "answers", "slot": slot, "calls": plan.questions[slot].calls,
                            "shows": ("plan", index)})
            elif info.get("solution"):
                if grade_id in by_id:
                    run.append({"kind": "code", "source": _text(by_id[grade_id]), "shows": ("plan", index)})
            else:
                run.append({"kind": "code", "source": _text(cell), "shows": ("plan", index)})
        run += [{"kind": "code", "source": s, "shows": ("added", grade_id)} for s in added.get(grade_id, [])]
    return run


@dataclasses.dataclass
class _Graded:
    verdicts: list[Verdict]
    pages: str
    lines: list[str]


def _grade_one(nb: dict, plan: Plan, who: str, student: str, timeout: int, limits: sandbox.Limits) -> _Graded:
    lines = _inspect(nb, plan, who)
    if lines and ("unreadable" in lines[0]):
        return _Graded([Verdict(q.grade_id, 0.0, q.points, "", "unreadable notebook")
                        for q in plan.questions], "", lines)
    layout = _layout(nb, plan)
    finished = sandbox.run_cells([{k: v for k, v in c.items() if k != "shows"} for c in layout], timeout,
                                 limits)
    results: dict[int, dict] = {}
    answers: dict[int, list] = {}
    for message in finished.messages:  # untrusted: a submission can write to the reply pipe itself
        if len(message) != 3 or type(message[1]) is not int:
            continue
        if message[0] == "cell" and isinstance(message[2], dict):
            results.setdefault(message[1], message[2])
        elif message[0] == "answers" and isinstance(message[2], list):
            answers.setdefault(message[1], message[2])
    why = (f"the sandbox was stopped before this question ({finished.stopped})" if finished.stopped
           else "the sandbox sent no answers for this question")
    verdicts = [_verdict(plan, q, answers.get(slot), why, timeout) for slot, q in enumerate(plan.questions)]
    if finished.stopped:
        lost = [q.grade_id for slot, q in enumerate(plan.questions) if slot not in answers]
        lines.append(f"{who}: stopped: {finished.stopped}; "
                     + (f"{', '.join(lost)} score 0" if lost else "every question had been answered"))
    page = _feedback_page(plan, student, layout, results, verdicts, finished.stopped)
    return _Graded(verdicts, page, lines)


# ---------------------------------------------------------------------------------------- feedback
def _pre(text: str, css: str = "") -> str:
    return f'<pre class="{css}">{html.escape(text)}</pre>' if text else ""


def _markdown(text: str) -> str:
    try:
        from markdown_it import MarkdownIt
    except ModuleNotFoundError:
        return _pre(text)
    return MarkdownIt("commonmark", {"html": False}).render(text)


_STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;white-space:pre-wrap}
pre.err{background:#fdecea}pre.ok{background:#e9f6ec}.score{font-weight:bold}
.cell{border-left:3px solid #ddd;padding-left:.8em;margin:1em 0}.note{color:#666}"""


def _feedback_page(plan: Plan, student: str, layout: list[dict], results: dict[int, dict],
                   verdicts: list[Verdict], stopped: str | None) -> str:
    got, total = sum(v.points for v in verdicts), sum(v.max_points for v in verdicts)
    head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(plan.name)}: "
            f"{html.escape(student)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(plan.name)}</h1><p>Student: {html.escape(student)}. "
            f"<span class='score'>Score: {got:g} / {total:g}</span></p>")
    if stopped:
        head += f"<p class='score'>Stopped: {html.escape(stopped)}</p>"
    ran = {entry["shows"]: i for i, entry in enumerate(layout)}
    by_index = {q.index: v for q, v in zip(plan.questions, verdicts)}
    body, numbers = [], itertools.count(1)
    for i, entry in enumerate(layout):
        if entry["shows"][0] == "added" and entry["shows"][1] is None:
            body.append(_code_block(entry["source"], results.get(i), "a cell you added"))
    for index, cell in enumerate(plan.cells):
        info = _info(cell)
        if cell.get("cell_type") == "markdown":
            if not classroom.SOLUTION_WRAPPER.match(_text(cell)):
                body.append(_markdown(classroom.plain_markdown(_text(cell), numbers)))
            continue
        if cell.get("cell_type") != "code":
            continue
        at = ran.get(("plan", index))
        if index in by_index:
            v = by_index[index]
            verdict = (f"<p class='score'>{v.points:g} / {v.max_points:g} points</p>"
                       + _pre(v.printed, "ok") + _pre(v.failure, "err"))
            body.append(f"<div class='cell'>{_pre(released_source(_text(cell)))}{verdict}</div>")
        elif index > plan.last:
            body.append(f"<div class='cell'>{_pre(_text(cell))}<p class='note'>(not run when grading: it "
                        "comes after the last graded cell)</p></div>")
        elif info.get("solution"):
            entry = layout[at] if at is not None else None
            body.append(_code_block(entry["source"], results.get(at), None) if entry
                        else "<p class='note'>(this solution cell was deleted)</p>")
        else:
            body.append(_code_block(_text(cell), results.get(at) if at is not None else None, None))
        for j, entry in enumerate(layout):
            if entry["shows"] == ("added", info.get("grade_id")) and info.get("grade_id"):
                body.append(_code_block(entry["source"], results.get(j), "a cell you added"))
    return head + "".join(body) + "</body></html>\n"


def _code_block(source: str, result: dict | None, note: str | None) -> str:
    parts = [f"<p class='note'>({note})</p>" if note else "", _pre(source)]
    if result:
        for key in ("stdout", "stderr", "value"):
            value = result.get(key)
            if isinstance(value, str):
                parts.append(_pre(value))
        if isinstance(result.get("error"), str):
            parts.append(_pre(result["error"], "err"))
    return "<div class='cell'>" + "".join(parts) + "</div>"


# ---------------------------------------------------------------------------------------- the run
def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.chmod(temporary, 0o666 & ~_UMASK)  # what open() would have made (mkstemp makes 0600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ValueError(f"--out {out} is a folder that holds files and is not an earlier grading's "
                         f"(no {MARKER}): grading writes gradebook.csv, report.txt and feedback/ there; "
                         "use a new or empty folder")


def _read_notebook(path: Path, who: str) -> tuple[Any, str | None]:
    if path.is_symlink() or not path.is_file():
        return None, f"{who}: not a regular file (a link?): not graded, it scores 0"
    if path.stat().st_size > _NOTEBOOK_LIMIT:
        return None, f"{who}: larger than {_NOTEBOOK_LIMIT >> 20} MiB: not graded, it scores 0"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (ValueError, UnicodeDecodeError) as err:
        return None, f"{who}: unreadable notebook ({type(err).__name__}): it scores 0"


def grade(submissions: str | Path, out_dir: str | Path, source_dir: str | Path = _SOURCES,
          timeout: int = 30, limits: sandbox.Limits | None = None,
          progress: Callable[[str], None] | None = None) -> Grading:
    """Grade ``submissions/<student>/<notebook>.ipynb`` against the exercise notebooks of
    ``source_dir``; write ``gradebook.csv`` (one row per student, one column per graded cell,
    ``total``, ``max_score``), ``feedback/<student>/<notebook>.html`` and ``report.txt`` into
    ``out_dir`` (a new or empty folder, or an earlier grading's).

    Args:
        timeout: seconds each cell may run in the sandbox (a cell still running is stopped and its
            question scores 0).
        limits: what each sandbox may use (default :class:`tkmia.book.sandbox.Limits`'s).
        progress: called with one line per graded notebook (default: silent).

    Raises:
        FileNotFoundError: ``submissions`` has no ``<student>/<exercise notebook>.ipynb``.
        ValueError: ``out_dir`` is a file, or a folder of other files; ``timeout`` is not positive.
        RuntimeError: bubblewrap is missing or cannot start, or an instructor's notebook fails.
    """
    start = time.perf_counter()
    limits = limits if limits is not None else sandbox.Limits()
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        raise ValueError(f"timeout must be a positive int (seconds), got {timeout!r}")
    submissions, out = Path(submissions), Path(out_dir)
    _check_out(out)
    missing = sandbox.available()
    if missing:
        raise RuntimeError(missing)
    for folder, what in ((Path(source_dir), "the source notebooks"), (submissions, "the submissions")):
        where = folder.resolve()
        inside = [r for r in sandbox.visible_roots() if r == where or r in where.parents]
        if inside:
            raise RuntimeError(f"{what} ({folder}) lie inside {inside[0]}, which every sandbox sees (the "
                               "Python installation or the tkmia package): move them elsewhere to grade")
    sources = {p.stem: p for p in classroom.exercise_notebooks(source_dir)}
    entries = sorted(submissions.iterdir(), key=lambda p: p.name) if submissions.is_dir() else []
    report = [f"{_shown(p.name)}: a link, not a folder: not graded" for p in entries if p.is_symlink()]
    students = [p.name for p in entries if p.is_dir() and not p.is_symlink()]
    report += [f"{_shown(s)}/{_shown(p.name)}: not an exercise notebook ({', '.join(sorted(sources))}): "
               "ignored" for s in students for p in sorted((submissions / s).glob("*.ipynb"))
               if p.stem not in sources]
    ids = sorted({p.stem for s in students for p in (submissions / s).glob("*.ipynb")} & set(sources))
    if not ids:
        raise FileNotFoundError(f"no <student>/<exercise notebook>.ipynb in {submissions.resolve()}; "
                                f"the exercise notebooks are {sorted(sources)}")
    columns: list[tuple[str, float]] = []
    points: dict[str, dict[str, float]] = {s: {} for s in students}
    pages: dict[tuple[str, str], str] = {}
    for name in ids:
        plan = plan_notebook(sources[name])
        columns += [(q.grade_id, q.points) for q in plan.questions]
        for student in students:
            who = f"{_shown(student)}/{name}.ipynb"
            path = submissions / student / f"{name}.ipynb"
            if not path.exists() and not path.is_symlink():
                report.append(f"{who}: missing: it scores 0")
                continue
            nb, problem = _read_notebook(path, who)
            if problem:
                report.append(problem)
                continue
            graded = _grade_one(nb, plan, who, student, timeout, limits)
            report += graded.lines
            points[student].update({v.grade_id: v.points for v in graded.verdicts})
            if graded.pages:
                pages[(student, name)] = graded.pages
            if progress is not None:
                got = sum(v.points for v in graded.verdicts)
                progress(f"{who}: {got:g} / {sum(v.max_points for v in graded.verdicts):g}")
    # the grader alone writes, now that every sandbox is gone
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["student", *[c for c, _ in columns], "total", "max_score"])
    for student in students:
        row = [min(max(points[student].get(c, 0.0), 0.0), top) for c, top in columns]
        writer.writerow([student, *[f"{p:g}" for p in row], f"{sum(row):g}",
                         f"{sum(t for _, t in columns):g}"])
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    for (student, name), page in pages.items():
        _atomic_write(out / "feedback" / student / f"{name}.html", page)
    (out / "feedback").mkdir(exist_ok=True)
    _atomic_write(out / "gradebook.csv", table.getvalue())
    _atomic_write(out / "report.txt", "".join(f"{line}\n" for line in report))
    return Grading(out / "gradebook.csv", out / "feedback", report, time.perf_counter() - start)
