"""``tkmia run NOTEBOOK -p NAME VALUE ...``: rerun one book notebook with other parameters.

The notebook is executed with papermill (see :mod:`tkmia.book`) into ``--out`` (default
``_build/runs/``) under its own name; values are parsed as YAML literals (``-p k 5`` gives the int 5,
``-p profile coco2014`` the string). A parameter the notebook does not declare is an error that
lists the ones it does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

DEFAULT_OUT = Path("_build") / "runs"


def parse_value(text: str):
    """A command-line value as a YAML literal: ``5`` -> 5, ``0.1`` -> 0.1, ``[0, 1]`` -> [0, 1]."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"cannot parse parameter value {text!r} as a YAML literal: {err}") from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="rerun one notebook with other parameters (papermill)",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", type=Path, help="the source notebook, e.g. notebooks/02_measures.ipynb")
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="set a parameter (repeatable); VALUE is a YAML literal",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from papermill.exceptions import PapermillExecutionError

    from tkmia.book import execute_notebook

    parameters = {name: parse_value(value) for name, value in args.parameter}
    output = Path(args.out) / Path(args.notebook).name
    try:
        execute_notebook(args.notebook, output, parameters)
    except PapermillExecutionError as err:
        print(f"tkmia run: {args.notebook} failed in cell {err.exec_count}: {err.ename}: {err.evalue}")
        print(f"the partly executed notebook is {output}")
        return 1
    print(f"executed {args.notebook} with {parameters or 'its default parameters'} -> {output}")
    return 0
