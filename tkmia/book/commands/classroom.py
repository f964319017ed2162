"""``tkmia classroom assign|grade``: the exercise notebooks as an nbgrader course.

``tkmia classroom assign --out assignments`` writes the student versions (``nbgrader
generate_assignment``: solutions and hidden tests removed, MyST turned into plain Markdown).
``tkmia classroom grade SUBMISSIONS --out DIR`` grades a plain folder of
``<student>/<notebook>.ipynb``, each submission in its own bubblewrap sandbox, the verdicts decided
outside it, into ``DIR/gradebook.csv`` (one row per student, one column per question),
``DIR/feedback/<student>/<notebook>.html`` and ``DIR/report.txt`` (missing, unreadable or tampered
notebooks, stopped sandboxes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tkmia.book.commands import require
from tkmia.book.runner import NOTEBOOKS


def register(subparsers) -> None:
    require("classroom", "nbgrader", "papermill", "nbformat", "ipykernel")
    parser = subparsers.add_parser(
        "classroom", help="student versions of the exercises and their grading (nbgrader)",
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    assign = sub.add_parser("assign", help="write the student version of every exercise notebook")
    assign.add_argument("--out", type=Path, default=Path("assignments"), help="folder (default assignments)")
    assign.add_argument("--source", type=Path, default=NOTEBOOKS,
                        help="folder of the exercise notebooks 14*_exercise_*.ipynb (default notebooks/)")
    assign.set_defaults(func=run_assign)
    grade = sub.add_parser("grade", help="grade SUBMISSIONS/<student>/<notebook>.ipynb into a gradebook")
    grade.add_argument("submissions", type=Path, help="folder with one sub-folder per student")
    grade.add_argument("--out", type=Path, required=True,
                       help="folder for gradebook.csv, feedback/ and report.txt")
    grade.add_argument("--timeout", type=int, default=30,
                       help="seconds a cell may run before it is stopped and its check scores 0 (default 30)")
    grade.add_argument("--memory", type=int, default=2048,
                       help="MiB each submission's process may allocate (default 2048)")
    grade.add_argument("--source", type=Path, default=NOTEBOOKS,
                       help="folder of the exercise notebooks (default notebooks/)")
    grade.set_defaults(func=run_grade)


def run_assign(args: argparse.Namespace) -> int:
    from tkmia.book.classroom import assign

    try:
        written = assign(args.out, args.source)
    except RuntimeError as err:  # nbgrader failed: its log is in the message
        print(f"tkmia classroom assign: error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def run_grade(args: argparse.Namespace) -> int:
    from tkmia.book.grading import grade
    from tkmia.book.sandbox import Limits

    if args.timeout < 1:
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.memory < 512:
        raise ValueError(f"--memory must be at least 512 (MiB; torch alone takes ~800), got {args.memory}")
    try:
        result = grade(args.submissions, args.out, source_dir=args.source, timeout=args.timeout,
                       limits=Limits(memory_mb=args.memory), progress=lambda line: print(line, flush=True))
    except RuntimeError as err:
        print(f"tkmia classroom grade: error: {err}", file=sys.stderr)
        return 1
    for line in result.report:
        print(f"note: {line}")
    print(f"wrote {result.gradebook}, {result.feedback}/ and {args.out / 'report.txt'} "
          f"in {result.seconds:.0f} s")
    return 0
