"""The ``tkmia`` command line: ``tkmia COMMAND --help`` for each command.

Each command lives in a module with ``register(subparsers)``; the handler it sets with
``set_defaults(func=...)`` receives the parsed arguments and returns an exit status. The core's
commands are the modules of :mod:`tkmia.commands`; other layers add theirs as ``tkmia.commands``
entry points (the book layer's ``run`` and ``classroom``), so the core never imports them. An entry
point whose extra is not installed still shows, and says which extra it needs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from importlib.metadata import entry_points

# Modules of tkmia.commands, each adding one or more sub-commands.
COMMAND_MODULES = ("data", "train", "attack", "experiment", "report")
#: The entry-point group through which other layers add commands.
ENTRY_POINTS = "tkmia.commands"


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
    for point in sorted(entry_points(group=ENTRY_POINTS), key=lambda p: p.name):
        try:
            point.load().register(sub)
        except ModuleNotFoundError as err:  # its extra is not installed
            if (err.name or "").split(".")[0] == "tkmia":
                raise
            _register_missing(sub, point.name, err)
    return parser


def _register_missing(sub, name: str, err: ModuleNotFoundError) -> None:
    """A command whose layer cannot be imported: it still runs, and says what to install."""
    message = str(err) if "pip install" in str(err) else f"needs a module that is not installed: {err}"
    parser = sub.add_parser(name, help=f"(not installed: {message})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def refuse(args) -> int:
        raise ValueError(f"`tkmia {name}` {message}")

    parser.set_defaults(func=refuse)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each: ``tkmia: warning: ...``."""
    print(f"tkmia: warning: {_one_line(message)}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command; an expected failure prints one line ``tkmia COMMAND: error: ...`` and
    returns 2 (no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as err:
        print(f"tkmia {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
