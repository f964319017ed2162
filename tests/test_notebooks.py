"""Every book notebook runs under papermill with tiny parameters; the runner's contracts."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tkmia.book.runner import (
    check_parameters,
    execute_book,
    execute_notebook,
    source_notebooks,
    tiny_parameters,
)
from tkmia.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = source_notebooks(ROOT / "notebooks")

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_tiny_parameters(path, tmp_path, tiny_home):
    """Notebooks (and their kernels, which inherit the environment) cache data, victims and results
    in the test session's TKMIA_HOME: the tiny victim is trained once."""
    output = execute_notebook(path, tmp_path / path.name, tiny_parameters(path))
    nb = nbformat.read(output, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == (1 if tiny_parameters(path) else 0)


def _toy_notebook(folder: Path, body: str = "print(sys.executable, n)") -> Path:
    nb = new_notebook(
        cells=[
            new_code_cell("n = 1  # an int", metadata={"tags": ["parameters"]}),
            new_code_cell(f"import sys\n{body}"),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "toy.ipynb"
    nbformat.write(nb, path)
    return path


def _stdout(path: Path) -> str:
    """The printed output of the last code cell (the executed copy ends with its rerun box)."""
    nb = nbformat.read(path, as_version=4)
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    return "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")


def test_runner_uses_this_interpreter_and_injects_parameters(tmp_path):
    source = _toy_notebook(tmp_path / "src")
    out = execute_notebook(source, tmp_path / "out" / "toy.ipynb", {"n": 7})
    assert _stdout(out).split() == [sys.executable, "7"]


def test_unknown_parameter_is_an_error_listing_the_valid_ones(tmp_path):
    source = _toy_notebook(tmp_path)
    with pytest.raises(ValueError, match=r"no parameter 'm'.*parameters are: n"):
        check_parameters(source, {"m": 2})
    with pytest.raises(ValueError, match=r"no parameter 'kk'; its parameters are: k, num_classes, seed"):
        execute_notebook(ROOT / "notebooks" / "02_measures.ipynb", tmp_path / "x.ipynb", {"kk": 5})
    assert not (tmp_path / "x.ipynb").exists()


def test_book_executes_only_what_changed(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    source = _toy_notebook(src)
    logs: list[str] = []
    execute_book(source_dir=src, out_dir=out, log=logs.append)
    assert (out / "toy.ipynb").exists() and (out / "toy.hash").exists()
    first = (out / "toy.ipynb").stat().st_mtime_ns
    execute_book(source_dir=src, out_dir=out, log=logs.append)
    assert (out / "toy.ipynb").stat().st_mtime_ns == first
    assert "unchanged" in logs[-1]
    _toy_notebook(src, body="print(n + 1)")  # the source changed: executed again
    execute_book(source_dir=src, out_dir=out, log=logs.append)
    assert _stdout(out / "toy.ipynb").strip() == "2"
    with pytest.raises(ValueError, match="unknown notebooks"):
        execute_book(source_dir=src, out_dir=out, only=["nope"], log=logs.append)
    assert source.exists()


def test_tkmia_run_parses_yaml_values_and_rejects_unknown_names(tmp_path, capsys):
    source = _toy_notebook(tmp_path / "src")
    out = ["--out", str(tmp_path / "runs"), "--no-report"]
    assert cli_main(["run", str(source), "-p", "n", "41", *out]) == 0
    assert _stdout(tmp_path / "runs" / "toy--n=41" / "toy.ipynb").split()[-1] == "41"
    assert cli_main(["run", str(source), "-p", "m", "1", "--out", str(tmp_path / "runs")]) == 2
    assert "its parameters are: n" in capsys.readouterr().err
