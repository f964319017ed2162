"""Sphinx extension: let autodoc render tkmia's plain-text maths in docstrings.

tkmia's docstrings write formulas in plain Unicode (``|T_k ∩ Y| / k``), readable in ``help()``.
reStructuredText reads ``|...|`` as a substitution reference, so this hook escapes ``|`` outside
inline literals and doctest lines before autodoc parses the docstring.
"""

from __future__ import annotations

import re

_LITERAL = re.compile(r"(``.*?``)")


def _escape(line: str) -> str:
    if line.lstrip().startswith((">>>", "...")):
        return line
    parts = _LITERAL.split(line)
    return "".join(p if p.startswith("``") else p.replace("|", r"\|") for p in parts)


def escape_bars(app, what, name, obj, options, lines):
    lines[:] = [_escape(line) for line in lines]


def setup(app):
    # priority below napoleon's (500) so the escaping applies to its output too
    app.connect("autodoc-process-docstring", escape_bars, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
