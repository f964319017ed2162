"""Execute the book's notebooks with papermill (``make book`` runs this before Jupyter Book).

Source notebooks live in ``notebooks/`` without outputs; each is executed into
``book/chapters/<name>.ipynb`` (a build product), which ``_toc.yml`` lists. Beside each executed copy
a ``<name>.hash`` file records what it was executed from: the source notebook, the tkmia package
sources and the parameters. A notebook is executed again only when one of them changed, so a second
``make book`` with nothing changed executes nothing.

Command line::

    python -m tkmia.book execute [--profile P] [--data-root D] [--only NAME] [--tiny]

``--profile`` passes ``profile=P`` and ``--data-root`` passes ``data_root=D`` to the notebooks whose
``parameters`` cell declares them; ``--tiny`` runs each notebook with :func:`tiny_parameters` (what the
tests use). To rerun one notebook with other parameters, see ``tkmia run --help``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "KERNEL_NAME",
    "tiny_parameters",
    "notebook_parameters",
    "check_parameters",
    "ensure_kernel",
    "execute_notebook",
    "execute_book",
    "source_notebooks",
    "main",
]

_REPO = Path(__file__).resolve().parent.parent
_PACKAGE = Path(__file__).resolve().parent
NOTEBOOKS = _REPO / "notebooks"
CHAPTERS = _REPO / "book" / "chapters"

#: The kernel the notebooks run in: this interpreter, registered under this name (see ensure_kernel).
KERNEL_NAME = "tkmia"



def tiny_parameters(path: str | Path) -> dict[str, Any]:
    """Small parameters under which the notebook runs in seconds (``--tiny`` and the tests).

    Each notebook keeps them in its own metadata, ``metadata["tkmia"]["tiny"]``; none means its
    defaults are already small.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return dict(nb.metadata.get("tkmia", {}).get("tiny", {}))


def source_notebooks(folder: str | Path = NOTEBOOKS) -> list[Path]:
    """The source notebooks of the book, sorted by name (``notebooks/*.ipynb``)."""
    return sorted(Path(folder).glob("*.ipynb"))


def notebook_parameters(path: str | Path) -> dict[str, dict[str, str]]:
    """The parameters a notebook declares: name -> papermill's description (default, type, help)."""
    import papermill

    return dict(papermill.inspect_notebook(str(path)))


def check_parameters(path: str | Path, parameters: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` when ``parameters`` names a parameter the notebook does not declare."""
    declared = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(
            f"{Path(path).name} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(declared) or '(none)'}"
        )


def ensure_kernel() -> str:
    """Register this interpreter as the Jupyter kernel :data:`KERNEL_NAME` and return that name.

    The spec is written into ``sys.prefix/share/jupyter/kernels`` (the virtual environment) with the
    absolute path of ``sys.executable``, so notebooks never run in another Python found on the PATH
    or in a user-level ``python3`` kernel. Where ``sys.prefix`` is not writable, the spec goes into a
    temporary folder put first on ``JUPYTER_PATH``.
    """
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python (tkmia, {Path(sys.prefix).name})",
        "language": "python",
    }
    text = json.dumps(spec, indent=1) + "\n"
    target = Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
    try:
        if not target.exists() or target.read_text() != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    except OSError:
        root = Path(tempfile.gettempdir()) / f"tkmia-jupyter-{os.getuid()}"
        target = root / "kernels" / KERNEL_NAME / "kernel.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        paths = os.environ.get("JUPYTER_PATH", "")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(root), paths) if p)
    return KERNEL_NAME


def execute_notebook(
    source: str | Path, output: str | Path, parameters: Mapping[str, Any] | None = None
) -> Path:
    """Execute ``source`` with papermill into ``output``, injecting ``parameters``.

    The notebook runs in the :data:`KERNEL_NAME` kernel (this interpreter), with the source's folder
    as working directory. Unknown parameter names raise ``ValueError`` before anything runs; a cell
    that raises makes papermill raise ``PapermillExecutionError`` (the output keeps the traceback).
    """
    import papermill

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise FileNotFoundError(f"notebook {source} does not exist")
    parameters = dict(parameters or {})
    check_parameters(source, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(source),
        str(output),
        parameters=parameters,
        kernel_name=ensure_kernel(),
        cwd=str(source.parent),
        progress_bar=False,
    )
    return output


def _package_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*")):
        if path.suffix in {".py", ".yaml", ".yml", ".json"} and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(_PACKAGE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _run_digest(source: Path, parameters: Mapping[str, Any], package: str) -> str:
    digest = hashlib.sha256()
    digest.update(source.read_bytes())
    digest.update(package.encode())
    digest.update(json.dumps(dict(parameters), sort_keys=True, default=str).encode())
    digest.update(sys.executable.encode())
    return digest.hexdigest()


def _book_parameters(source: Path, profile: str | None, data_root: str | None, tiny: bool) -> dict:
    declared = notebook_parameters(source)
    params: dict[str, Any] = tiny_parameters(source) if tiny else {}
    if profile is not None and "profile" in declared:
        params["profile"] = profile
    # a value equal to the notebook's own default is not injected: the page then shows no
    # "injected parameters" cell unless the build really changed something
    for name in list(params):
        try:
            same = ast.literal_eval(declared[name]["default"]) == params[name]
        except (KeyError, ValueError, SyntaxError):
            same = False
        if same:
            del params[name]
    if data_root is not None and "data_root" in declared:
        params["data_root"] = str(Path(data_root).expanduser().resolve())
    return params


def execute_book(
    *,
    profile: str | None = None,
    data_root: str | None = None,
    only: Iterable[str] | None = None,
    tiny: bool = False,
    source_dir: str | Path = NOTEBOOKS,
    out_dir: str | Path = CHAPTERS,
    log=print,
) -> list[Path]:
    """Execute every source notebook whose inputs changed; return the executed copies' paths.

    Args:
        profile: passed as ``profile`` to notebooks that declare that parameter.
        data_root: passed (absolute) as ``data_root`` to notebooks that declare it.
        only: notebook names (file stems, e.g. ``"02_measures"``) to execute; default all.
        tiny: use each notebook's :func:`tiny_parameters`.
        source_dir, out_dir: where the source notebooks are and where executed copies go.
    """
    sources = source_notebooks(source_dir)
    if only:
        wanted = {Path(name).stem for name in only}
        missing = sorted(wanted - {s.stem for s in sources})
        if missing:
            raise ValueError(
                f"only names unknown notebooks {missing}; known: {[s.stem for s in sources]}"
            )
        sources = [s for s in sources if s.stem in wanted]
    package = _package_digest()
    out_dir = Path(out_dir)
    written = []
    for source in sources:
        params = _book_parameters(source, profile, data_root, tiny)
        output = out_dir / source.name
        stamp = out_dir / f"{source.stem}.hash"
        digest = _run_digest(source, params, package)
        if output.exists() and stamp.exists() and stamp.read_text().strip() == digest:
            log(f"{source.name}: unchanged, keeping {output}")
        else:
            log(f"{source.name}: executing with {params or 'its default parameters'} ...")
            start = time.perf_counter()
            stamp.unlink(missing_ok=True)
            execute_notebook(source, output, params)
            stamp.write_text(digest + "\n")
            log(f"{source.name}: done in {time.perf_counter() - start:.1f} s -> {output}")
        written.append(output)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tkmia.book", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ex = sub.add_parser("execute", help="execute the notebooks into book/chapters (when changed)")
    ex.add_argument("--profile", help="profile name passed to notebooks with a `profile` parameter")
    ex.add_argument("--data-root", help="dataset folder passed to notebooks with a `data_root` parameter")
    ex.add_argument("--only", action="append", metavar="NAME", help="execute only this notebook")
    ex.add_argument("--tiny", action="store_true", help="use the tiny parameters of the tests")
    args = parser.parse_args(argv)
    try:
        execute_book(profile=args.profile, data_root=args.data_root, only=args.only, tiny=args.tiny)
    except (ValueError, FileNotFoundError) as err:
        print(f"tkmia.book: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
