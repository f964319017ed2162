"""Grading as a security boundary: each kind of attempt a curious student might write is a real
submission graded by ``tkmia classroom grade``, in one run with honest students, and each test
asserts the gradebook row of the attempt and of an honest student graded beside it."""

from __future__ import annotations

import csv
import io
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from test_classroom import LOOP, ROOT, WRONG_AT_K5, _fill, _nbgrader

from tkmia.book import grading, sandbox
from tkmia.cli import main as cli_main

pytestmark = pytest.mark.skipif(sandbox.available() is not None,
                                reason="needs bubblewrap (make test installs it)")

NAME = "14a_exercise_measures"
FULL = ["2", "3", "1", "6", "6"]
MARKER = f"tkmia-survivor-{os.getpid()}"
ODD_NAMES = ["lee, ann", "o'brien \"ob\"", "zoë 学生", "-rf --out x", "new\nline", "..evil"]


def _with_cell(nb, after: str, code: str):
    """``nb`` with a code cell of the student's own inserted after the cell ``after`` (a grade_id)."""
    at = next(i for i, c in enumerate(nb.cells) if _nbgrader(c).get("grade_id") == after)
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(code))
    return nb


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


READS_SOURCE = """
import os, pathlib
from tkmia.book import classroom
tries = [pathlib.Path(p) for p in ("notebooks/{n}.ipynb", "../notebooks/{n}.ipynb",
                                   "../../notebooks/{n}.ipynb", "{root}/notebooks/{n}.ipynb")]
tries.append(pathlib.Path(classroom.__file__).resolve().parents[2] / "notebooks" / "{n}.ipynb")
for path in tries:
    try:
        print("READ", path, path.read_text()[:100000])
    except OSError as err:
        print("NOT FOUND", path, type(err).__name__)
print("ENV", sorted(os.environ))
for top in ("/tmp", "/work", "/root", "{root}"):
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != "site-packages"]  # the libraries' own files are there to read
        for f in files:
            if f in ("{n}.ipynb", "gradebook.csv", "report.txt"):
                print("SAW", folder, f)
print("WALKED")
"""

WRITES_GRADES = """
import os, subprocess, sys
targets = {targets!r}
for path in targets:
    try:
        with open(path, "w") as f:
            f.write("student,measures-precision\\ncheater,3000\\n")
        print("WROTE", path)
    except OSError as err:
        print("COULD NOT WRITE", path, type(err).__name__)
later = ("import time, sys\\ntime.sleep(2)\\nfor p in %r:\\n    try:\\n"
         "        open(p, 'w').write('forged')\\n    except OSError:\\n        pass\\n"
         "# {marker}" % (targets,))
subprocess.Popen([sys.executable, "-c", later], start_new_session=True)
"""

PATCHES_CHECKS = WRONG_AT_K5 + """
from tkmia.book import classroom
from tkmia import metrics
classroom.check_equal = lambda *args, **kwargs: 30
classroom.passed = lambda *args, **kwargs: None
metrics.map_at_k = map_at_k
"""

READS_FRAMES = """
import sys
def map_at_k(scores, labels, k):
    frame = sys._getframe(1)
    while frame is not None:
        if "expected" in frame.f_locals:
            return frame.f_locals["expected"]
        frame = frame.f_back
    return torch.zeros(len(scores))
"""

ALLOCATES = """
try:
    big = bytearray(3 << 30)
    print("ALLOCATED 3 GiB")
except MemoryError:
    print("REFUSED: MemoryError")
"""

DETACHES = """
import subprocess, sys
for _ in range(20):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)  # {marker}"],
                     start_new_session=True)
print("STARTED 20")
"""

FORKS = """
import os, time
n = 0
try:
    while n < 5000:
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        n += 1
except OSError as err:
    print("FORKS", n, type(err).__name__)
"""

IGNORES_ALARM = """
import time
def map_at_k(scores, labels, k):
    while True:
        try:
            time.sleep(1)
        except BaseException:
            pass
"""


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One run of ``tkmia classroom grade`` over every attempt and several honest students."""
    tmp = tmp_path_factory.mktemp("grading")
    assert cli_main(["classroom", "assign", "--out", str(tmp / "assignments")]) == 0
    student = tmp / "assignments" / f"{NAME}.ipynb"
    subs, out = tmp / "submissions", tmp / "graded"
    honest_copy = subs / "honest" / f"{NAME}.ipynb"
    targets = [str(out / "gradebook.csv"), str(out / "report.txt"), str(honest_copy),
               str(out / "feedback" / "honest" / f"{NAME}.html"), str(tmp / "forged.txt")]
    edits_points = _fill(student)
    for cell in edits_points.cells:
        if _nbgrader(cell).get("grade_id") == "measures-precision":
            cell.metadata["nbgrader"]["points"] = 3000
            cell.source = "pass"
    fake = {
        "honest": _fill(student),
        "reads_source": _with_cell(_fill(student), "measures-precision-solution",
                                   READS_SOURCE.format(n=NAME, root=ROOT)),
        "writes_grades": _with_cell(_fill(student, {"measures-map-solution": WRONG_AT_K5}),
                                    "measures-precision-solution",
                                    WRITES_GRADES.format(targets=targets, marker=MARKER)),
        "patches_checks": _fill(student, {"measures-map-solution": PATCHES_CHECKS}),
        "reads_frames": _fill(student, {"measures-map-solution": READS_FRAMES}),
        "edits_points": edits_points,
        "allocates": _with_cell(_fill(student), "measures-precision-solution", ALLOCATES),
        "detaches": _with_cell(_fill(student), "measures-precision-solution", DETACHES.format(marker=MARKER)),
        "forks": _with_cell(_fill(student), "measures-precision-solution", FORKS),
        "kills_itself": _with_cell(_fill(student), "measures-precision-solution",
                                   "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
        "kills_all": _with_cell(_fill(student), "measures-precision-solution",
                                "import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('STILL HERE')"),
        "ignores_alarm": _fill(student, {"measures-map-solution": IGNORES_ALARM}),
        "loops": _fill(student, {"measures-map-solution": LOOP}),
        "floods": _with_cell(_fill(student), "measures-precision-solution",
                             "for i in range(10**6):\n    print('flood', i)"),
        "zz_honest_last": _fill(student),
        **{name: _fill(student) for name in ODD_NAMES},
    }
    for who, nb in fake.items():
        (subs / who).mkdir(parents=True)
        nbformat.write(nb, subs / who / f"{NAME}.ipynb")
    (subs / "symlinked").mkdir()
    (subs / "symlinked" / f"{NAME}.ipynb").symlink_to(ROOT / "notebooks" / f"{NAME}.ipynb")
    honest_bytes = honest_copy.read_bytes()
    start = time.perf_counter()
    assert cli_main(["classroom", "grade", str(subs), "--out", str(out), "--timeout", "5"]) == 0
    seconds = time.perf_counter() - start
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    time.sleep(4)  # a detached process of a submission would write now
    rows = {row[0]: row[1:] for row in csv.reader(io.StringIO((out / "gradebook.csv").read_text()))}
    report = (out / "report.txt").read_text().splitlines()
    feedback = {who: (out / "feedback" / who / f"{NAME}.html").read_text()
                for who in fake if (out / "feedback" / who / f"{NAME}.html").exists()}
    print(f"graded {len(fake) + 1} submissions in {seconds:.1f} s")
    return {"rows": rows, "report": report, "feedback": feedback, "out": out, "files": files, "tmp": tmp,
            "honest_copy": honest_copy, "honest_bytes": honest_bytes}


def _row(graded, who: str) -> list[str]:
    assert graded["rows"]["honest"] == FULL and graded["rows"]["zz_honest_last"] == FULL
    return graded["rows"][who]


def _lines(graded, who: str) -> list[str]:
    return [line for line in graded["report"] if line.startswith(f"{who}/")]


@pytest.mark.slow
def test_the_gradebook_has_one_row_per_student(graded):
    assert graded["rows"]["student"] == ["measures-precision", "measures-map", "measures-ndcg", "total",
                                         "max_score"]
    assert len(graded["rows"]) == 1 + 16 + len(ODD_NAMES)


@pytest.mark.slow
def test_a_submission_cannot_read_the_source_notebook_or_see_grading(graded):
    assert _row(graded, "reads_source") == FULL
    page = graded["feedback"]["reads_source"]
    assert page.count("NOT FOUND ") == 5 and "READ " not in page  # printed lines (the code has "NOT FOUND",)
    assert "BEGIN HIDDEN" not in page and "hidden_cases" not in page and "SAW " not in page
    assert "WALKED" in page, "the walk over the visible folders did not finish within the cell's time-out"
    env = page.split("ENV [")[1].split("]")[0]
    assert {name.strip(" '&#x27;") for name in env.split(",")} <= {
        "HOME", "LANG", "MPLBACKEND", "MPLCONFIGDIR", "OMP_NUM_THREADS", "PATH", "PWD"}


@pytest.mark.slow
def test_a_linked_notebook_is_not_graded(graded):
    """A "submission" that is a link to the instructor's notebook (solutions included) scores 0."""
    assert graded["rows"]["symlinked"] == ["0", "0", "0", "0", "6"]
    assert _lines(graded, "symlinked") == [
        f"symlinked/{NAME}.ipynb: not a regular file (a link?): not graded, it scores 0"]


@pytest.mark.slow
def test_a_submission_cannot_write_grades_now_or_later(graded):
    assert _row(graded, "writes_grades") == ["2", "0", "1", "3", "6"]
    assert graded["feedback"]["writes_grades"].count("COULD NOT WRITE /") == 5
    after = {p: p.read_bytes() for p in graded["out"].rglob("*") if p.is_file()}
    assert after == graded["files"]
    assert graded["honest_copy"].read_bytes() == graded["honest_bytes"]
    assert not (graded["tmp"] / "forged.txt").exists()


@pytest.mark.slow
def test_patching_the_checks_or_the_library_changes_nothing(graded):
    assert _row(graded, "patches_checks") == ["2", "0", "1", "3", "6"]
    assert "map_at_k disagrees with tkmia.metrics.map_at_k" in graded["feedback"]["patches_checks"]


@pytest.mark.slow
def test_reading_the_callers_frames_finds_no_expected_value(graded):
    assert _row(graded, "reads_frames") == ["2", "0", "1", "3", "6"]


@pytest.mark.slow
def test_points_come_from_the_source_notebook(graded):
    """A submission that gives its test cell 3000 points and empties it gets at most 2 there."""
    assert _row(graded, "edits_points") == FULL
    assert any("locked cell 'measures-precision' edited" in line for line in _lines(graded, "edits_points"))


@pytest.mark.slow
def test_a_large_allocation_is_refused(graded):
    assert _row(graded, "allocates") == FULL
    assert "REFUSED: MemoryError" in graded["feedback"]["allocates"]


@pytest.mark.slow
def test_detached_processes_end_with_the_sandbox(graded):
    assert _row(graded, "detaches") == FULL
    assert "STARTED 20" in graded["feedback"]["detaches"]
    assert _processes_with(MARKER) == []


@pytest.mark.slow
def test_a_fork_loop_meets_the_process_limit(graded):
    assert _row(graded, "forks") == FULL
    forks = int(graded["feedback"]["forks"].split("FORKS ")[1].split()[0])
    assert forks < sandbox.Limits().processes


@pytest.mark.slow
def test_a_submission_that_kills_itself_is_stopped_and_the_others_go_on(graded):
    assert _row(graded, "kills_itself") == ["0", "0", "0", "0", "6"]
    assert _lines(graded, "kills_itself") == [
        f"kills_itself/{NAME}.ipynb: stopped: its process was killed by signal 9 (SIGKILL); "
        "measures-precision, measures-map, measures-ndcg score 0"]


@pytest.mark.slow
def test_killing_every_process_it_can_see_kills_only_its_own(graded):
    assert _row(graded, "kills_all") == FULL
    assert "STILL HERE" in graded["feedback"]["kills_all"]


@pytest.mark.slow
def test_a_cell_that_ignores_its_time_out_is_killed(graded):
    assert _row(graded, "ignores_alarm") == ["2", "0", "0", "2", "6"]
    [line] = _lines(graded, "ignores_alarm")
    assert "stopped: a cell ran past its 5 s time-out" in line and line.endswith("measures-ndcg score 0")
    assert _row(graded, "loops") == ["2", "0", "1", "3", "6"]  # an honest infinite loop: its cell only
    assert "map_at_k ran longer than 5 s" in graded["feedback"]["loops"]


@pytest.mark.slow
def test_a_flood_of_output_is_cut(graded):
    assert _row(graded, "floods") == FULL
    page = graded["feedback"]["floods"]
    assert "[... output cut]" in page and len(page) < 200_000


@pytest.mark.slow
def test_names_are_data(graded):
    for name in ODD_NAMES:
        assert _row(graded, name) == FULL, name
    assert not [line for line in graded["report"] if "lee" in line or "zo" in line or "line" in line]
    for name in ODD_NAMES:
        assert (graded["out"] / "feedback" / name / f"{NAME}.html").is_file()


# ---------------------------------------------------------------------------------------- interruptions
def _grade_process(subs: Path, out: Path, env: dict, log: Path, parent: bool = False) -> subprocess.Popen:
    command = [sys.executable, "-m", "tkmia", "classroom", "grade", str(subs), "--out", str(out),
               "--timeout", "5"]
    if parent:  # a shell that starts the grader and waits for it
        line = " ".join(f"'{part}'" for part in command) + f" > '{log}' 2>&1 & wait"
        return subprocess.Popen(["bash", "-c", line], env=env)
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _submissions(tmp: Path, count: int) -> Path:
    assert cli_main(["classroom", "assign", "--out", str(tmp / "assignments")]) == 0
    subs = tmp / "submissions"
    for i in range(count):
        (subs / f"s{i}").mkdir(parents=True)
        nbformat.write(_fill(tmp / "assignments" / f"{NAME}.ipynb"), subs / f"s{i}" / f"{NAME}.ipynb")
    return subs


def _wait_for(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_an_interrupted_grading_writes_nothing_and_leaves_nothing(tmp_path):
    subs = _submissions(tmp_path, 4)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    log = tmp_path / "log.txt"
    process = _grade_process(subs, tmp_path / "out", env, log)
    assert _wait_for(lambda: "s0/" in log.read_text(), 120), log.read_text()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert not (tmp_path / "out" / "gradebook.csv").exists()
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_killing_the_graders_parent_does_not_change_the_grades(tmp_path):
    subs = _submissions(tmp_path, 3)
    log = tmp_path / "log.txt"
    shell = _grade_process(subs, tmp_path / "out", dict(os.environ), log, parent=True)
    assert _wait_for(lambda: log.exists() and "s0/" in log.read_text(), 120)
    shell.kill()
    shell.wait()
    assert _wait_for(lambda: (tmp_path / "out" / "gradebook.csv").exists(), 180), log.read_text()
    rows = list(csv.reader((tmp_path / "out" / "gradebook.csv").open()))
    assert rows[1:] == [[f"s{i}", *FULL] for i in range(3)]


# ---------------------------------------------------------------------------------------- the pieces
def test_a_forged_reply_cannot_run_code_in_the_grader(tmp_path):
    """A reply whose pickle calls os.system is refused, and the command never runs."""
    flag = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    body = pickle.dumps(("answers", 0, [("ok", Evil())]))
    buffer = io.BytesIO()
    torch.save(("cell", 0, {"stdout": "x"}), buffer)
    good = buffer.getvalue()
    stream = sandbox._FRAME.pack(len(good)) + good + sandbox._FRAME.pack(len(body)) + body
    messages, problem = sandbox._unpack(stream)
    assert messages == [("cell", 0, {"stdout": "x"})]
    assert problem and "not plain" in problem
    assert not flag.exists()
    assert sandbox._unpack(stream[:-3])[1] is not None  # cut short


def test_encode_decode_round_trip():
    from tkmia import metrics
    from tkmia.selection import Specification

    spec = Specification(torch.tensor([[True, False]]), torch.tensor([True]), torch.tensor([1]))
    value = (torch.arange(3.0).requires_grad_(), [1, 2.5, "x", None, True], {"k": metrics.precision_at_k},
             spec, {1, 2})
    buffer = io.BytesIO()
    torch.save(sandbox.encode(value), buffer)
    back = sandbox.decode(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert torch.equal(back[0], torch.arange(3.0)) and not back[0].requires_grad
    assert back[1] == [1, 2.5, "x", None, True] and back[2]["k"] is metrics.precision_at_k
    assert isinstance(back[3], Specification) and torch.equal(back[3].specified, spec.specified)
    assert type(back[4]).__name__ == "set" and repr(back[4]) == "{1, 2}"
    with pytest.raises(ValueError, match="not a tkmia object"):
        sandbox.decode(("__tkmia_callable__", "os", "system"))
    forged = sandbox.decode((("__tkmia_callable__", "tkmia.book.grading", "grade"),
                             ("__tkmia_dataclass__", "tkmia.book.sandbox", "Limits", {"memory_mb": 1})),
                            untrusted=True)  # what a sandbox sends back rebuilds no function, no config
    assert type(forged[0]).__name__ == "function" and not callable(forged[0])
    assert type(forged[1]).__name__ == "Limits" and not isinstance(forged[1], sandbox.Limits)
    assert isinstance(sandbox.decode(sandbox.encode(spec), untrusted=True), Specification)


def test_grade_refuses_an_out_folder_it_did_not_make(tmp_path, capsys):
    subs = tmp_path / "subs" / "ann"
    subs.mkdir(parents=True)
    (subs / f"{NAME}.ipynb").write_text("{}")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    assert cli_main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(mine)]) == 2
    assert "is not an earlier grading's" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    assert cli_main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(mine / "thesis.tex")]) == 2
    assert "is an existing file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Limits.memory_mb must be a positive int"):
        sandbox.Limits(memory_mb=0)
    assert grading.MARKER == ".tkmia-grading"


def test_grade_refuses_folders_the_sandbox_would_see(tmp_path, monkeypatch):
    """Source notebooks or submissions inside a folder every sandbox binds would be readable there."""
    subs = tmp_path / "subs" / "ann"
    subs.mkdir(parents=True)
    (subs / f"{NAME}.ipynb").write_text("{}")
    monkeypatch.setattr(sandbox, "visible_roots", lambda: [tmp_path])
    with pytest.raises(RuntimeError, match="the submissions .* lie inside .* which every sandbox sees"):
        grading.grade(tmp_path / "subs", tmp_path / "out")
    assert not (tmp_path / "out").exists()
