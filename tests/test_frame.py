"""The project frame: layout, environment files that agree, notebooks committed clean and parameterised."""

from __future__ import annotations

import ast
import json
import tomllib
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tkmia.book.runner import check_parameters, parameter_specs, source_notebooks, tiny_parameters

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = source_notebooks(ROOT / "notebooks")


def _normalise(specs) -> dict[str, str]:
    """name -> sorted specifier string, with names canonicalised (PEP 503)."""
    out = {}
    for text in specs:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name not in out, f"{name} is named twice"
        out[name] = ",".join(sorted(str(s) for s in req.specifier))
    return out


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():  # what make install installs: every extra
        specs += [s for s in extra if not s.startswith("tkmia[")]  # an extra that includes another
    return _normalise(specs)


def _environment_requirements() -> tuple[dict[str, str], str | None]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_specs, python = [], None
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_specs += [s for s in dep["pip"] if not s.startswith("-")]
        elif dep.startswith("python"):
            python = dep[len("python"):]
    return _normalise(pip_specs), python


def test_environment_yml_names_the_dependencies_of_pyproject():
    conda, python = _environment_requirements()
    pip = _pyproject_requirements()
    assert conda == pip, (
        f"only in environment.yml: { {k: v for k, v in conda.items() if pip.get(k) != v} }; "
        f"only in pyproject.toml: { {k: v for k, v in pip.items() if conda.get(k) != v} }"
    )
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == requires


def test_torch_is_pinned():
    pip = _pyproject_requirements()
    assert pip["torch"] == "==2.14.1" and pip["torchvision"] == "==0.29.1"


@pytest.mark.parametrize(
    "path",
    ["book", "notebooks", "tkmia", "data", "tests", "benchmarks", "environment.yml", "_config.yml",
     "_toc.yml", "README.md", "pyproject.toml", "Makefile", ".ci/run", "book/intro.md",
     "book/references.bib", "data/README.md"],
)
def test_layout(path):
    assert (ROOT / path).exists(), f"{path} is missing from the repository root"


def test_ci_script_is_executable_and_strict():
    script = ROOT / ".ci" / "run"
    assert script.stat().st_mode & 0o111, ".ci/run must be executable"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "make test" in text


def _draft(notebook: Path) -> str | None:
    """Why a notebook is not in the book yet (``metadata.tkmia.draft``), or None."""
    return json.loads(notebook.read_text())["metadata"].get("tkmia", {}).get("draft")


def test_toc_lists_existing_pages_and_every_notebook():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    def entries(items):
        for item in items:
            yield item["file"]
            yield from entries(item.get("sections", []))

    files = [toc["root"], *(f for part in toc["parts"] for f in entries(part["chapters"]))]
    chapters = {Path(f).name for f in files if f.startswith("book/chapters/")}
    drafts = {nb.stem for nb in NOTEBOOKS if _draft(nb)}
    assert chapters == {nb.stem for nb in NOTEBOOKS} - drafts, (
        "every notebook but the drafts, and only they, in _toc.yml"
    )
    for f in files:
        if not f.startswith("book/chapters/"):
            assert (ROOT / f"{f}.md").exists(), f"_toc.yml lists {f}, which does not exist"


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {index} has outputs; strip them"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"


def _parameters_cells(nb):
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_one_plain_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    cells = _parameters_cells(nb)
    assert len(cells) == 1, f"{path.name} has {len(cells)} cells tagged `parameters`, not 1"
    assert cells[0].cell_type == "code"
    source = cells[0].source
    names = []
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, (
            f"{path.name}: the parameters cell may only hold `name = literal` lines, got "
            f"{ast.get_source_segment(source, node)!r}"
        )
        target = node.targets[0]
        assert isinstance(target, ast.Name)
        ast.literal_eval(node.value)  # raises on anything but a plain literal
        line = source.splitlines()[node.lineno - 1]
        assert node.end_lineno == node.lineno, f"{path.name}: keep {target.id} on one line"
        comment = line.partition("#")[2].strip()
        assert comment, f"{path.name}: parameter {target.id} needs a comment naming its allowed values"
        names.append(target.id)
    assert names, f"{path.name}: the parameters cell is empty"
    # papermill must see every parameter (it cannot parse a line with a second `=`, e.g. `>=`)
    assert list(papermill.inspect_notebook(str(path))) == names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tiny_parameters_are_declared(path):
    declared = set(papermill.inspect_notebook(str(path)))
    assert set(tiny_parameters(path)) <= declared


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_declare_their_type_and_defaults_obey_it(path):
    """Every parameter's comment follows tkmia.book.runner's convention (``TYPE[, CONSTRAINT]: meaning``),
    so `tkmia run` checks its values before a kernel starts; the defaults and the tiny parameters
    pass those checks."""
    specs = parameter_specs(path)
    undeclared = [name for name, spec in specs.items() if spec.kind is None]
    assert not undeclared, f"{path.name}: give {undeclared} a typed comment (see tkmia/book.py)"
    assert all(spec.help for spec in specs.values()), f"{path.name}: say what each parameter means"
    check_parameters(path, {name: spec.default for name, spec in specs.items()})
    check_parameters(path, tiny_parameters(path))
