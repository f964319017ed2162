"""The ``tkmia`` command line: ``tkmia COMMAND --help`` for each command.

Each command lives in :mod:`tkmia.commands` as a module with ``register(subparsers)``; the
handler it sets with ``set_defaults(func=...)`` receives the parsed arguments and returns an
exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules of tkmia.commands, each adding one or more sub-commands.
COMMAND_MODULES = ("data", "train", "attack", "experiment", "report", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tkmia",
        description="Imperceptible top-k multi-label attacks: data, victims, attacks, experiments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"tkmia.commands.{name}")
        except ModuleNotFoundError as err:  # a command not written yet
            if err.name != f"tkmia.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"tkmia {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
