"""Every ``tkmia`` command the README, the book's pages and the notebooks' prose show is one the
command line accepts (argparse parses it; nothing runs)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from tkmia.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _texts() -> dict[str, str]:
    texts = {"README.md": (ROOT / "README.md").read_text()}
    texts.update({str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "book").glob("*.md"))})
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        texts[str(path.relative_to(ROOT))] = "\n".join(
            "".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return texts


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for each ``tkmia …`` in inline code or on a line of a shell block; a mere
    name of a command (only words, no argument) and a command with placeholders (``...``) are left out."""
    found = set()
    for name, text in _texts().items():
        lines = [m.group(1) for m in re.finditer(r"`(tkmia [^`\n]+)`", text)]
        for block in re.findall(r"```(?:bash|sh|console|shell)?\n(.*?)```", text, re.S):
            lines += [line.split("  #")[0].strip() for line in block.splitlines()]
        for line in lines:
            words = shlex.split(line) if line.startswith("tkmia ") else []
            if words and "..." not in line and not all(re.fullmatch(r"[a-z]+", w) for w in words):
                found.add((name, line))
    return sorted(found)


def test_the_documents_show_commands():
    assert len(documented_commands()) >= 10


@pytest.mark.parametrize(("where", "command"), documented_commands())
def test_a_documented_command_is_accepted(where, command):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as stop:
        assert stop.code == 0, f"{where}: `{command}` is refused: {stderr.getvalue().strip()}"
