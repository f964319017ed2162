"""``tkmia run NOTEBOOK -p NAME VALUE ...``: rerun one book notebook with other parameters.

Each value is parsed as a YAML literal (``-p k 5`` gives the int 5, ``-p ks '[2, 3]'`` a list) and
checked against what the notebook's ``parameters`` cell declares (type, bounds, allowed values)
before any kernel starts. The run goes to its own folder, named by notebook and parameters
(``_build/runs/08_global--k=2--n_samples=50/``): ``08_global.ipynb`` (executed; open it in
JupyterLab, ``make lab``) and ``html/08_global.html`` (the chapter rendered, numbers and figures in
place). A failed run never replaces an earlier good one; it is kept in ``<folder>--failed/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from tkmia.book.commands import require
from tkmia.book.runner import RUNS

DEFAULT_OUT = RUNS


def parse_value(text: str):
    """A command-line value as a YAML literal: ``5`` -> 5, ``0.1`` -> 0.1, ``[0, 1]`` -> [0, 1]."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"cannot parse parameter value {text!r} as a YAML literal: {err}") from None


def register(subparsers) -> None:
    require("book", "papermill", "nbformat", "ipykernel")
    parser = subparsers.add_parser(
        "run",
        help="rerun one notebook with other parameters (papermill), with a rendered report",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", type=Path, help="the source notebook, e.g. notebooks/02_measures.ipynb")
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="set a parameter (repeatable); VALUE is a YAML literal",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT,
        help="folder that receives one sub-folder per run (default _build/runs; never notebooks/)",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the rendered HTML page")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tkmia.book.runner import rerun

    parameters = {name: parse_value(value) for name, value in args.parameter}

    def progress(line: str) -> None:
        print(line, flush=True)

    try:  # bad values are refused (ValueError) before papermill is even imported
        result = rerun(args.notebook, parameters, args.out, report=not args.no_report, log=progress)
    except Exception as err:
        if not hasattr(err, "failed_folder"):  # refused before any work: the CLI prints one line
            raise
        from papermill.exceptions import PapermillExecutionError

        if isinstance(err, PapermillExecutionError):
            print(f"tkmia run: {args.notebook} failed in cell {err.exec_count}: {err.ename}: "
                  f"{err.evalue}", file=sys.stderr)
        else:  # the notebook ran, its page did not render
            print(f"tkmia run: {err}", file=sys.stderr)
        print(f"the failed run is kept in {err.failed_folder}; earlier good runs are untouched",
              file=sys.stderr)
        return 1
    print(f"executed {args.notebook} with {parameters or 'its default parameters'}")
    print(f"  notebook: {result.notebook}")
    if result.html is not None:
        print(f"  page:     {result.html}")
    return 0
