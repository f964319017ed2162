"""The layers of tkmia: the core works without the book stack, the import-linter contracts of
pyproject.toml catch what they promise to catch, and no private name crosses a module boundary."""

from __future__ import annotations

import ast
import os
import shutil
import site
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tkmia"

#: The book stack: what the core must neither require nor import.
BOOK_STACK = ("papermill", "nbformat", "nbclient", "nbgrader", "ipykernel", "jupyter_book", "jupyter_client",
              "myst_nb", "IPython", "sphinx")
#: The same, as PyPI names in pyproject's requirements.
BOOK_REQUIREMENTS = ("papermill", "nbformat", "nbclient", "nbgrader", "ipykernel", "jupyter-book",
                     "jupyterlab", "myst-nb", "ipython", "sphinx")


def _requirement_name(requirement: str) -> str:
    for stop in "<>=!~[ ;":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower()


def test_the_core_requirements_hold_none_of_the_book_stack():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    assert core, "pyproject.toml lists no core requirement"
    assert not core & {r.lower() for r in BOOK_REQUIREMENTS}, core
    assert "torch" in core and "numpy" in core
    extras = project["optional-dependencies"]
    book = {_requirement_name(r) for r in extras["book"]}
    assert {"papermill", "nbformat", "ipykernel", "jupyter-book"} <= book
    assert "nbgrader" in {_requirement_name(r) for r in extras["classroom"]}


#: Run in a fresh interpreter where every module of BOOK_STACK fails to import, as in a core-only
#: install: an attack on a small nn.Module, then `tkmia attack --profile tiny`, then `tkmia run`.
_CORE_ONLY = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))

    class NoBookStack(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: core only)", name=name)
            return None

    sys.meta_path.insert(0, NoBookStack())
    import torch
    from torch import nn
    from tkmia.attacks import TkMIA
    from tkmia.selection import GlobalSelection

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6)).eval()
    images = torch.rand(2, 3, 8, 8)
    labels = torch.zeros(2, 6)
    labels[:, :2] = 1
    result = TkMIA(model, k=2, max_iter=5)(images, labels, GlobalSelection([0]))
    assert result.adv_images.shape == images.shape
    assert torch.isfinite(result.adv_scores).all()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED or m.startswith("tkmia.book"))
    assert not loaded, f"the core imported {loaded}"
    print("attack ok")

    from tkmia.cli import main
    code = main(["attack", "--profile", "tiny", "--method", "tkmia", "--k", "2", "--n-samples", "2",
                 "--max-iter", "3", "--no-progress"])
    print("tkmia attack ->", code)
    assert code == 0
    code = main(["run", "notebooks/02_measures.ipynb"])
    print("tkmia run ->", code)
    assert code == 2
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, f"the command line imported {loaded}"  # it found the book's commands, no more
    print("core only ok")
""")


@pytest.mark.slow
def test_the_core_runs_an_attack_and_the_cli_without_the_book_stack(tiny_home, tmp_path):
    out = subprocess.run([sys.executable, "-c", _CORE_ONLY, ",".join(BOOK_STACK)], capture_output=True,
                         text=True, cwd=REPO, timeout=600, env={**os.environ, "TKMIA_HOME": str(tiny_home)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "attack ok" in out.stdout and "core only ok" in out.stdout
    # the book layer's command is listed, and says which extra it needs
    assert "tkmia run` needs the book extra" in out.stderr, out.stderr
    assert "pip install 'tkmia[book]'" in out.stderr, out.stderr


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the tkmia package under ``root`` (not the installed one): ``python -S`` keeps
    the editable install's path hook out, the site-packages come in on PYTHONPATH."""
    paths = [str(root), *site.getsitepackages()]
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-S", "-c", code, "--config", "pyproject.toml", "--no-cache"],
                          capture_output=True, text=True, cwd=root, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    def make(name: str) -> Path:
        root = tmp_path_factory.mktemp(name)
        shutil.copytree(PACKAGE, root / "tkmia", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
        return root

    return make


def test_the_contracts_hold_on_the_package_as_it_is(package_copy):
    out = _lint_imports(package_copy("as-is"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("metrics.py", "import tkmia.book.runner", "The core never imports the book layer"),
    ("data/__init__.py", "from tkmia.profiles import load_profile", "The core never imports the book layer"),
    ("book/chapters/analysis.py", "from tkmia.book import classroom", "The book layer"),
    ("attacks/engine.py", "import tkmia.attacks.kfool", "No import cycle"),
    ("models.py", "from tkmia.data._images import open_image", "A private module"),
], ids=["core-imports-book", "data-imports-profiles", "chapter-imports-classroom", "cycle", "private-module"])
def test_a_planted_import_breaks_its_contract(package_copy, module, line, broken):
    root = package_copy(module.replace("/", "-").replace(".py", ""))
    target = root / "tkmia" / module
    target.write_text(target.read_text() + f"\n{line}  # planted\n")
    out = _lint_imports(root)
    assert out.returncode != 0, out.stdout
    report = out.stdout
    assert f"{broken}" in report and "BROKEN" in report, report
    contract = next(text for text in report.split("\n") if text.startswith(broken))
    assert contract.endswith("BROKEN"), contract


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def _private_imports(path: Path) -> list[str]:
    """``from M import _x`` (``_x`` not a submodule of M), ``import M._x`` and ``M._x`` on a name
    bound by ``import`` where M is another module; private modules of other packages count too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found, module_names = [], {}

    def private(part: str) -> bool:
        return part.startswith("_") and not part.startswith("__")

    def is_submodule(parent: str, name: str) -> bool:
        if not parent.startswith("tkmia"):
            return False
        base = REPO.joinpath(*parent.split("."), name)
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if not node.module.startswith("tkmia") and any(private(p) for p in parts):
                found.append(f"{_shown(path)}:{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                if private(alias.name) and not is_submodule(node.module, alias.name):
                    found.append(f"{_shown(path)}:{node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if not alias.name.startswith("tkmia") and any(private(p) for p in parts):
                    found.append(f"{_shown(path)}:{node.lineno}: import {alias.name}")
                module_names[alias.asname or parts[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in module_names
                and not is_submodule(module_names[node.value.id], node.attr)
                and f"{module_names[node.value.id]}.{node.attr}" not in DOCUMENTED):
            found.append(f"{_shown(path)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


# standard-library names that start with an underscore and are documented API, not private
DOCUMENTED = {"os._exit"}


def test_no_private_name_is_imported_from_another_module():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_imports(path)]
    assert not found, "private names used across modules (make them public, or move them):\n" + "\n".join(
        found)


def test_the_private_name_check_sees_each_kind(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from tkmia.metrics import _as_int\nfrom torch._tensor_str import printoptions\n"
                       "import torch\nx = torch._C\nfrom tkmia import _paths\n"
                       "from tkmia.attacks import engine\n")
    found = _private_imports(planted)
    assert len(found) == 3, found  # _paths is a private module (the import-linter contract's business)
    assert any("_as_int" in f for f in found) and any("_tensor_str" in f for f in found)
    assert any("torch._C" in f for f in found)
