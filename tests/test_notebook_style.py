"""The book's notebooks as a reader sees them: no code line overflows its cell on the page."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The longest code line that fits a code cell of the book's content column (characters).
MAX_CODE_LINE = 88
#: Chapters checked: every notebook except the exercise notebooks (14*, the classroom's).
CHAPTERS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if not p.name.startswith("14"))


def long_code_lines(path: Path, limit: int = MAX_CODE_LINE) -> list[str]:
    """``"cell N, line M (L chars): text"`` for each code line of ``path`` longer than ``limit``,
    outside the cell tagged ``parameters`` (whose typed comments the runner reads)."""
    nb = nbformat.read(path, as_version=4)
    out = []
    for n, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        for m, line in enumerate(cell.source.splitlines(), start=1):
            if len(line) > limit:
                out.append(f"cell {n}, line {m} ({len(line)} chars): {line.strip()[:60]}")
    return out


def test_chapters_are_found():
    assert len(CHAPTERS) >= 10, CHAPTERS


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_code_line_overflows_its_cell(path):
    long = long_code_lines(path)
    assert not long, (f"{path.name}: wrap these code lines to at most {MAX_CODE_LINE} characters "
                      "(a longer line overflows its cell on the book page):\n" + "\n".join(long))


def test_the_check_sees_a_long_line_and_spares_the_parameters_cell(tmp_path):
    long = "x = " + "1 + " * 30 + "1"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(long, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("y = 1\n" + long),
    ])
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    assert [line.split(":")[0] for line in long_code_lines(path)] == ["cell 1, line 2 (125 chars)"]
