"""Execute the book's notebooks with papermill (``make book`` runs this before Jupyter Book).

Source notebooks live in ``notebooks/`` without outputs; each is executed into
``book/chapters/<name>.ipynb`` (a build product), which ``_toc.yml`` lists. Beside each executed copy
a ``<name>.hash`` file records what it was executed from: the source notebook, the tkmia package
sources and the parameters, and a ``<name>.exec.json`` file records how the copy was made (seconds,
parameters, whether this build took it from the cache); the book's execution-statistics page is
generated from those records. A notebook is executed again only when one of its inputs changed, so a
second ``make book`` with nothing changed executes nothing.

**The parameters cell.** Each notebook has one code cell tagged ``parameters`` holding one
``name = literal`` line per parameter, with a comment that declares what the parameter accepts::

    k = 3  # int, in [1, num_classes - 2]: the top-k size
    num_classes = 8  # int, at least k + 2: number of labels C
    ks = None  # list of int or None, each at least 1: top-k sizes (None: the profile's grid)
    lrs = [2e-4, 5e-4]  # list of float, each positive: attack learning rates
    baseline = "tkml_ap_u"  # str, one of tkml_ap_u, ml_cw_u, kfool: the method beside TkMIA
    alpha = 0.05  # float, in [0, 1): the false-alarm budget

The comment is ``TYPE[, CONSTRAINT]...: what it means``. TYPE is ``int``, ``float``, ``str``,
``bool``, ``profile`` (a name of ``tkmia/profiles`` or a YAML file), ``device`` (``cpu``, ``cuda``,
``cuda:N``, ``mps``), ``path`` (an existing file or folder) or ``list of`` one of those, optionally
followed by ``or None``. CONSTRAINTs are ``at least E``, ``at most E``, ``positive``,
``non-negative``, ``in [E, E]`` (a round bracket excludes its end) and ``one of A, B, ...`` (last,
since its values run up to the colon); on a list, ``each`` may precede them and they apply to each
element. A bound E is a number or an arithmetic expression of other parameters (``num_classes - 2``),
checked when those are not None. :func:`parameter_specs` parses the convention (a comment it does not
understand declares nothing and leaves the parameter unchecked) and :func:`check_parameters` checks
``-p`` values against it before any kernel starts.

Command line::

    python -m tkmia.book execute [--profile P] [--data-root D] [--only NAME] [--tiny]
    python -m tkmia.book glued [--out FILE.json] [--compare BEFORE.json]

``--profile`` passes ``profile=P`` and ``--data-root`` passes ``data_root=D`` to the notebooks whose
``parameters`` cell declares them; ``--tiny`` runs each notebook with :func:`tiny_parameters` (what the
tests use). To rerun one notebook with other parameters, see ``tkmia run --help``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "glue",
    "BOOK_BUILD_ENV",
    "KERNEL_NAME",
    "RUNS",
    "ParameterSpec",
    "Rerun",
    "tiny_parameters",
    "parameter_specs",
    "notebook_parameters",
    "check_parameters",
    "ensure_kernel",
    "execute_notebook",
    "rerun_command",
    "rerun_name",
    "rerun",
    "lab_notebook",
    "build_report",
    "execution_records",
    "execute_book",
    "glued_values",
    "glued_changes",
    "toc_chapters",
    "source_notebooks",
    "main",
]

_REPO = Path(__file__).resolve().parents[2]
_PACKAGE = Path(__file__).resolve().parents[1]  # tkmia/
NOTEBOOKS = _REPO / "notebooks"
CHAPTERS = _REPO / "book" / "chapters"
TOC = _REPO / "_toc.yml"
#: where ``tkmia run`` writes its reruns, one folder per notebook and parameters
RUNS = _REPO / "_build" / "runs"

#: The kernel the notebooks run in: this interpreter, registered under this name (see ensure_kernel).
KERNEL_NAME = "tkmia"

Log = Callable[[str], Any]


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


# ----------------------------------------------------------------------------------------------
# The parameters cell and its typed comments

_KINDS = ("int", "float", "str", "bool", "profile", "device", "path")
_TYPE = re.compile(r"(?P<list>list of\s+)?(?P<kind>" + "|".join(_KINDS) + r")\b(?P<none>\s+or None\b)?")
_CLAUSES = [
    ("min", re.compile(r"at least\s+(?P<a>[^,:]+?)\s*(?=,|:|$)")),
    ("max", re.compile(r"at most\s+(?P<a>[^,:]+?)\s*(?=,|:|$)")),
    ("positive", re.compile(r"positive\b")),
    ("non-negative", re.compile(r"non-negative\b")),
    ("range", re.compile(r"in\s*(?P<lo>[\[(])\s*(?P<a>[^,\])]+?)\s*,\s*(?P<b>[^\])]+?)\s*(?P<hi>[\])])")),
    ("choices", re.compile(r"one of\s+(?P<a>[^:]+?)\s*(?=:|$)")),
]
_DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of a notebook's ``parameters`` cell and what its comment declares.

    ``kind`` is None when the comment does not follow the convention (the parameter is then not
    checked); ``constraints`` holds ``(op, a, b)`` with op ``"min"``/``"max"`` (a: bound text,
    b: inclusive) or ``"choices"`` (a: the allowed values as text).
    """

    name: str
    default: Any
    default_text: str
    kind: str | None = None
    is_list: bool = False
    optional: bool = False
    constraints: tuple = ()
    allowed: str = ""
    help: str = ""

    def describe(self) -> str:
        """What the parameter accepts, as declared (``"int, at least 1"``), or ``"(not declared)"``."""
        return self.allowed or "(not declared)"


def _parse_comment(comment: str) -> dict[str, Any]:
    """The declaration in one parameter's comment; ``{"help": comment}`` when it follows no type."""
    text = comment.strip()
    match = _TYPE.match(text)
    if not match:
        return {"help": text}
    out: dict[str, Any] = {"kind": match["kind"], "is_list": bool(match["list"]),
                           "optional": bool(match["none"])}
    constraints, pos, help_text = [], match.end(), None
    while help_text is None:
        rest = text[pos:]
        if not rest.strip():
            help_text = ""
        elif rest.lstrip().startswith(":"):
            help_text = rest.lstrip()[1:].strip()
        elif (sep := re.match(r",\s*(each\s+)?", rest)) is None:
            help_text = rest.strip(" ,:")  # tolerant: an unknown tail is prose
        else:
            rest = rest[sep.end():]
            for op, pattern in _CLAUSES:
                if m := pattern.match(rest):
                    if op == "min" or op == "max":
                        constraints.append((op, m["a"], True))
                    elif op == "positive":
                        constraints.append(("min", "0", False))
                    elif op == "non-negative":
                        constraints.append(("min", "0", True))
                    elif op == "range":
                        constraints.append(("min", m["a"], m["lo"] == "["))
                        constraints.append(("max", m["b"], m["hi"] == "]"))
                    else:
                        values = [v.strip() for v in re.split(r",|\bor\b", m["a"]) if v.strip()]
                        constraints.append(("choices", tuple(values), None))
                    pos = len(text) - len(rest) + m.end()
                    break
            else:
                help_text = rest.strip(" ,:")
                pos = len(text)
    allowed = text[: len(text) - len(text[pos:])].strip(" ,") if help_text is not None else text
    out.update(constraints=tuple(constraints), help=help_text, allowed=allowed)
    return out


def _parameters_source(path: Path) -> str:
    # plain JSON, not nbformat: checking -p values must not wait for nbformat's imports
    try:
        cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read notebook {path}: {err}") from None
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            return "".join(source) if isinstance(source, list) else source
    return ""


def parameter_specs(path: str | Path) -> dict[str, ParameterSpec]:
    """The parameters declared by a notebook's ``parameters`` cell, by name, in cell order.

    papermill's parameter inspection (``PythonTranslator.inspect``, what ``papermill --help-notebook``
    shows) gives each ``name = literal  # comment`` line's name, default and comment; the comment
    follows the convention in this module's docstring. A cell that is not valid Python, or an
    assignment papermill cannot read, is refused with the line to fix.
    """
    from papermill.translators import PythonTranslator

    source = _parameters_source(Path(path))
    try:
        body = ast.parse(source).body
    except SyntaxError as err:
        raise ValueError(f"{Path(path).name}: the parameters cell is not valid Python: {err}") from None
    found = {p.name: p for p in PythonTranslator.inspect({"source": source})}
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id not in found:
            raise ValueError(f"{Path(path).name}: papermill cannot read the parameter on line {node.lineno} "
                             f"({node.targets[0].id}); write it as one `name = value  # comment` line "
                             "with no other '='")
    specs = {}
    for name, parameter in found.items():
        text = parameter.default
        try:
            default = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            default = text
        parsed = _parse_comment(parameter.help)
        specs[name] = ParameterSpec(name=name, default=default, default_text=text, **parsed)
    return specs


def notebook_parameters(path: str | Path) -> dict[str, dict[str, str]]:
    """The parameters a notebook declares: name -> ``{"default", "allowed", "help"}`` (as text)."""
    return {name: {"default": s.default_text, "allowed": s.describe(), "help": s.help}
            for name, s in parameter_specs(path).items()}


def _bound(text: str, values: Mapping[str, Any]) -> float | None:
    """A bound: a number or an arithmetic expression of other parameters; None if one is None."""

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(
                node.value, bool):
            return node.value
        if isinstance(node, ast.Name):
            value = values.get(node.id)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return value
            raise LookupError(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
        raise LookupError(text)

    try:
        return ev(ast.parse(text.strip(), mode="eval").body)
    except (LookupError, SyntaxError):
        return None  # a bound on an unset (None) or unknown parameter is not checked


def _profiles() -> list[str]:
    return sorted(p.stem for p in (_PACKAGE / "profiles").glob("*.yaml"))


def _check_scalar(spec: ParameterSpec, value: Any, values: Mapping[str, Any]) -> Any:
    """``value`` converted to ``spec.kind`` and checked against its constraints; raise with the reason."""
    kind = spec.kind
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"not an int ({type(value).__name__})")
        if not -(2**63) <= value < 2**63:
            raise ValueError("too large for a 64-bit integer (torch.long), the type the code uses")
    elif kind == "float":
        if isinstance(value, str):  # YAML reads 5e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ValueError("not a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"not a number ({type(value).__name__})")
        try:
            value = float(value)
        except OverflowError:
            raise ValueError("too large for a float") from None
        if not math.isfinite(value):
            raise ValueError("not a finite number (NaN and infinity pass no bound)")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("not true or false")
    else:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"not a string ({type(value).__name__})")
        if kind == "profile" and value not in _profiles():
            if not (value.endswith((".yaml", ".yml")) and Path(value).expanduser().is_file()):
                raise ValueError(f"neither a profile of tkmia/profiles ({', '.join(_profiles())}) "
                                 "nor an existing .yaml file")
        elif kind == "device":
            if not _DEVICE.fullmatch(value):
                raise ValueError("not a torch device (cpu, cuda, cuda:N, mps)")
            if value.startswith("cuda"):
                import torch

                index = int(value.partition(":")[2] or 0)
                if not torch.cuda.is_available() or index >= torch.cuda.device_count():
                    raise ValueError(f"CUDA device {index} is not available on this machine "
                                     f"({torch.cuda.device_count()} visible); use cpu")
        elif kind == "path" and not Path(value).expanduser().exists():
            raise ValueError("no such file or folder")
    for op, a, inclusive in spec.constraints:
        if op == "choices":
            choices = [str(c) for c in a]
            if str(value) not in choices:
                raise ValueError(f"not one of {', '.join(choices)}")
            continue
        bound = _bound(a, values)
        if bound is None or isinstance(value, str):
            continue
        shown = a if a.strip() == str(bound) else f"{a} = {bound}"
        if op == "min" and (value < bound if inclusive else value <= bound):
            raise ValueError(f"below {shown}" if inclusive else f"not above {shown}")
        if op == "max" and (value > bound if inclusive else value >= bound):
            raise ValueError(f"above {shown}" if inclusive else f"not below {shown}")
    return value


def check_parameters(path: str | Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``parameters`` against the notebook's declarations; return them converted.

    Runs before any kernel starts. Raises ``ValueError`` naming the parameter, the value and what
    the notebook allows, for an undeclared name, a value of the wrong type (``"abc"`` for an int), a
    value outside its bounds or choices, or a list given for a scalar (and the reverse). Floats may be
    given as ints or as strings such as ``5e-4``; the string ``None`` is None where None is allowed.
    """
    name_of = Path(path).name
    specs = parameter_specs(path)
    unknown = sorted(set(parameters) - set(specs))
    if unknown:
        raise ValueError(
            f"{name_of} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(specs) or '(none)'}"
        )
    values = {name: spec.default for name, spec in specs.items()}
    values.update(parameters)
    out = {}
    for name, value in parameters.items():
        spec = specs[name]
        if spec.kind is None:
            out[name] = value
            continue
        try:
            if value is None or (spec.optional and value == "None"):
                if not spec.optional:
                    raise ValueError("None is not allowed")
                value = None
            elif spec.is_list:
                if not isinstance(value, list | tuple):
                    raise ValueError(f"not a list (write it as [{value}])")
                value = [_check_scalar(spec, v, values) for v in value]
            else:
                if isinstance(value, list | tuple | dict):
                    raise ValueError(f"a {type(value).__name__}, not a single value")
                value = _check_scalar(spec, value, values)
        except ValueError as err:
            raise ValueError(
                f"parameter {name} = {value!r} is not allowed ({err}): {name_of} declares "
                f"{name} as {spec.describe()}" + (f" ({spec.help})" if spec.help else "")
            ) from None
        out[name] = value
    return out


# ----------------------------------------------------------------------------------------------
# Execution

def ensure_kernel() -> str:
    """Register this interpreter as the Jupyter kernel :data:`KERNEL_NAME` and return that name.

    ipykernel writes the spec (``ipykernel install --prefix sys.prefix``, as a function call) into
    ``sys.prefix/share/jupyter/kernels``, the virtual environment, with the absolute path of
    ``sys.executable``; so notebooks never run in another Python found on the PATH or in a user-level
    ``python3`` kernel. A spec that already names this interpreter is left as it is (a notebook
    running beside may be reading it). Where ``sys.prefix`` is not writable, the spec goes under a
    temporary folder put first on ``JUPYTER_PATH``.
    """
    from ipykernel.kernelspec import install

    display = f"Python (tkmia, {Path(sys.prefix).name})"
    for prefix in (Path(sys.prefix), Path(tempfile.gettempdir()) / f"tkmia-jupyter-{os.getuid()}"):
        target = prefix / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
        try:
            spec = json.loads(target.read_text())
            current = spec["argv"][0] == sys.executable and spec["display_name"] == display
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            current = False
        paths = os.environ.get("JUPYTER_PATH")
        if prefix != Path(sys.prefix):  # first on the path, so the spec is found and is this one
            rest = [p for p in (paths or "").split(os.pathsep) if p and p != str(target.parents[2])]
            os.environ["JUPYTER_PATH"] = os.pathsep.join([str(target.parents[2]), *rest])
        try:
            if not current:
                install(kernel_name=KERNEL_NAME, display_name=display, prefix=str(prefix))
        except OSError:
            if paths is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = paths
            continue
        return KERNEL_NAME
    raise OSError(f"could not register the Jupyter kernel {KERNEL_NAME!r} under {sys.prefix} or "
                  f"{tempfile.gettempdir()}: make one of them writable")


def _progress_engine(label: str, log: Log | None) -> str:
    """Register a papermill engine that logs "cell i of n, elapsed" as each code cell starts."""
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            code = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
            order = {index: n for n, index in enumerate(code, 1)}
            start, cell_start = time.perf_counter(), nb_man.cell_start

            def on_cell_start(cell, cell_index=None, **kw):
                if log is not None and cell_index in order:
                    log(f"{label}: cell {order[cell_index]} of {len(code)}, "
                        f"{time.perf_counter() - start:.0f} s elapsed")
                return cell_start(cell, cell_index, **kw)

            nb_man.cell_start = on_cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("tkmia", ProgressEngine)
    return "tkmia"


def _display_path(source: Path) -> str:
    source = source.resolve()
    try:
        return source.relative_to(_REPO).as_posix()
    except ValueError:
        return str(source)


def _yaml_literal(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...")


def rerun_command(source: str | Path, parameters: Mapping[str, Any]) -> str:
    """The ``tkmia run`` command line that reruns ``source`` with ``parameters`` (shell-quoted)."""
    parts = ["tkmia", "run", _display_path(Path(source))]
    for name, value in parameters.items():
        parts += ["-p", name, _yaml_literal(value)]
    return shlex.join(parts)


def _rerun_box(source: Path, parameters: Mapping[str, Any], specs: Mapping[str, ParameterSpec]) -> str:
    """The "Rerun this chapter" box (MyST markdown) appended to every executed notebook."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = []
    for name, spec in specs.items():
        value = parameters[name] if name in parameters else spec.default
        rows.append(f"| `{name}` | `{cell(_yaml_literal(value))}` | {cell(spec.describe())} | "
                    f"{cell(spec.help)} |")
    table = "\n".join(["| parameter | this run | allowed | meaning |", "|---|---|---|---|", *rows])
    return "\n".join([
        "````{admonition} Rerun this chapter",
        ":class: tip rerun-box",
        "",
        "This page was computed by the command below; change any `-p NAME VALUE` (values are YAML",
        "literals) within the allowed values and run it from the repository's root. `tkmia run`",
        "checks the values before it starts, then writes a rendered page and the executed notebook",
        "to `_build/runs/`.",
        "",
        "```bash",
        rerun_command(source, parameters),
        "```",
        "",
        table,
        "````",
    ])


def execute_notebook(
    source: str | Path,
    output: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    log: Log | None = None,
) -> Path:
    """Execute ``source`` with papermill into ``output``, injecting ``parameters``.

    The notebook runs in the :data:`KERNEL_NAME` kernel (this interpreter) over IPC sockets (in a
    temporary folder), with the source's folder as working directory. Parameters are checked first
    (:func:`check_parameters`, a ``ValueError`` before any kernel starts); ``log`` receives "cell i
    of n" progress lines. A cell that raises makes papermill raise ``PapermillExecutionError`` (the
    output keeps the traceback).
    On success a "Rerun this chapter" box is appended to the output.
    """
    import nbformat
    import papermill
    from traitlets.config import Config

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise FileNotFoundError(f"notebook {source} does not exist")
    parameters = check_parameters(source, dict(parameters or {}))
    output.parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.KernelManager.transport = "ipc"  # local sockets: no "running over TCP without encryption"
    with tempfile.TemporaryDirectory(prefix="tkmia-ipc-") as sockets, _book_build():
        config.KernelManager.ip = str(Path(sockets) / "kernel")  # not in the notebook's folder
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name=ensure_kernel(),
            engine_name=_progress_engine(source.stem, log),
            cwd=str(source.parent),
            progress_bar=False,
            config=config,
        )
    nb = nbformat.read(str(output), as_version=4)
    box = nbformat.v4.new_markdown_cell(_rerun_box(source, parameters, parameter_specs(source)),
                                        metadata={"tags": ["rerun"]})
    nb.cells.append(box)
    nbformat.write(nb, str(output))
    return output


#: Set in the kernel's environment while :func:`execute_notebook` runs: the notebook is being
#: executed for a page, where myst-nb places the glued figures (see :func:`glue`).
BOOK_BUILD_ENV = "TKMIA_BOOK_BUILD"


class _book_build:
    """Context: :data:`BOOK_BUILD_ENV` is set for the kernels started inside it."""

    def __enter__(self):
        self.old = os.environ.get(BOOK_BUILD_ENV)
        os.environ[BOOK_BUILD_ENV] = "1"

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop(BOOK_BUILD_ENV, None)
        else:
            os.environ[BOOK_BUILD_ENV] = self.old


def glue(name: str, variable: Any, display: bool = True) -> None:
    """myst-nb's ``glue``, as the chapters use it, that also reads in JupyterLab.

    In a book build (:func:`execute_notebook`) this is ``myst_nb.glue`` itself: a figure glued
    with ``display=False`` appears only where the page places it. Run anywhere else (JupyterLab,
    plain Jupyter), a glued matplotlib figure is shown in its cell as well, so a chapter run top to
    bottom shows its figures; numbers and tables glued with ``display=False`` stay silent. Without
    myst-nb installed (a student without the ``book`` extra) it only displays.

    Example:
        >>> glue("summary_figure", fig, display=False)   # placed by {glue:figure} in the book
    """
    from matplotlib.figure import Figure

    if not display and isinstance(variable, Figure) and not os.environ.get(BOOK_BUILD_ENV):
        display = True
    try:
        from myst_nb import glue as myst_glue
    except ModuleNotFoundError:
        if display:
            from IPython.display import display as show

            show(variable)
        return
    myst_glue(name, variable, display=display)


# ----------------------------------------------------------------------------------------------
# Reruns: `tkmia run`

_GLUE_ROLE = re.compile(r"\{glue(?::text|:md)?\}`(?P<name>[^`:]+)(?::(?P<fmt>[^`]+))?`")
_GLUE_FIGURE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{glue:figure\}[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                          re.M | re.S)
_IMAGES = ("image/png", "image/svg+xml", "image/jpeg")
_RECORD = "application/papermill.record/"


def lab_notebook(nb):
    """A copy of an executed notebook that reads in JupyterLab: glued figures shown, numbers filled.

    The book glues its figures with ``display=False`` (myst-nb places them); here each glued image is
    also displayed in the cell that made it, its ``{glue:figure}`` block becomes a plain caption, and
    the ``{glue:text}`name`` roles of the markdown cells are replaced by the glued text (formatted as
    myst-nb would).
    """
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    texts: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        shown = []
        for out in cell.get("outputs", []):
            scrap = out.get("metadata", {}).get("scrapbook", {})
            data = out.get("data", {})
            if not scrap:
                continue
            plain = {k.removeprefix(_RECORD): v for k, v in data.items()}
            if any(k in plain for k in _IMAGES):
                keep = {k: v for k, v in plain.items() if k in _IMAGES or k == "text/plain"}
                shown.append(nbformat.v4.new_output("display_data", data=keep))
            elif "text/plain" in plain:
                text = plain["text/plain"]
                texts[scrap["name"]] = text[1:-1] if text[:1] == text[-1:] and text[:1] in "'\"" else text
        cell["outputs"] = list(cell.get("outputs", [])) + shown

    def fill(match: re.Match) -> str:
        text = texts.get(match["name"])
        if text is None:
            return match[0]
        if match["fmt"]:
            try:
                return format(float(text), match["fmt"])
            except ValueError:
                return text
        return text

    def caption(match: re.Match) -> str:
        lines = [line for line in match["body"].splitlines() if not line.startswith(":")]
        return "*Figure (shown above):* " + " ".join(line.strip() for line in lines if line.strip())

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _GLUE_ROLE.sub(fill, _GLUE_FIGURE.sub(caption, cell.source))
    return nb


def _refuse_output_folder(out: Path, source: Path) -> None:
    out_r, src = out.resolve(), source.resolve()
    for folder in (src.parent, NOTEBOOKS.resolve()):
        if out_r == folder or folder in out_r.parents:
            raise ValueError(
                f"--out {out} is the source notebooks' folder {folder}: a rerun never writes beside or "
                f"over the notebooks it runs; use the default {_display_path(RUNS)} or another folder"
            )


def rerun_name(source: str | Path, parameters: Mapping[str, Any]) -> str:
    """The folder name of a rerun: the notebook's name, then ``--name=value`` per parameter (sorted).

    ``08_global`` with ``{"k": 2, "n_samples": 50}`` gives ``08_global--k=2--n_samples=50``.
    Characters unsafe in a file name become ``_``; a name over 150 characters is shortened and ends
    with a digest of the parameters, so different parameters never share a folder.
    """
    parts = [Path(source).stem]
    for name in sorted(parameters):
        value = re.sub(r"[^A-Za-z0-9._,+=-]", "_", _yaml_literal(parameters[name]).replace(", ", ","))
        parts.append(f"{name}={value}")
    name = "--".join(parts)
    if len(name) > 150:
        digest = hashlib.sha256(json.dumps(dict(parameters), sort_keys=True, default=str).encode())
        name = name[:130] + "--" + digest.hexdigest()[:12]
    return name


@dataclass(frozen=True)
class Rerun:
    """Where a rerun's products are: its folder, the executed notebook and the rendered page."""

    folder: Path
    notebook: Path
    html: Path | None


def build_report(notebook: str | Path, out: str | Path) -> Path:
    """Render one executed notebook as an HTML page (Jupyter Book's single-page build) into ``out``.

    Uses the book's extensions and bibliography (a "References" section is added to a page that
    cites), with glue rendered and no execution. Returns the page's path (``out/<name>.html``).
    Raises ``RuntimeError`` with the build's last lines on failure.
    """
    import nbformat

    notebook, out = Path(notebook).resolve(), Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="tkmia-report-") as tmp:
        config = _report_config(Path(tmp))
        nb = nbformat.read(str(notebook), as_version=4)
        if any("{cite" in c.source for c in nb.cells if c.cell_type == "markdown"):
            # the book resolves citations on its bibliography page; a lone page lists its own
            nb.cells.append(nbformat.v4.new_markdown_cell(
                "## References\n\n```{bibliography}\n:filter: docname in docnames\n```"))
        notebook = Path(tmp) / "page" / notebook.name
        notebook.parent.mkdir()
        nbformat.write(nb, str(notebook))
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "jupyter-book"), "build", str(notebook), "--config",
             str(config), "--path-output", tmp, "--quiet"],
            capture_output=True, text=True, env=env,
        )
        pages = sorted((Path(tmp) / "_build" / "_page").glob(f"*/html/{notebook.stem}.html"))
        html = pages[0].parent if pages else None
        if proc.returncode or html is None:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"the report of {notebook.name} did not build:\n{tail}")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(html, out)
    return out / f"{notebook.stem}.html"


def _report_config(folder: Path) -> Path:
    """The book's ``_config.yml`` with its relative paths made absolute (for a single-page build)."""
    import yaml

    config = yaml.safe_load((_REPO / "_config.yml").read_text())
    config["bibtex_bibfiles"] = [str(_REPO / p) for p in config.get("bibtex_bibfiles", [])]
    sphinx = config.setdefault("sphinx", {})
    local = sphinx.get("local_extensions") or {}
    sphinx["local_extensions"] = {k: str(_REPO / v) for k, v in local.items()}
    html = config.setdefault("html", {})
    if html.get("favicon"):
        html["favicon"] = str(_REPO / html["favicon"])
    config["only_build_toc_files"] = False
    config["exclude_patterns"] = []
    path = folder / "_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


#: the file that marks a folder as a rerun's (:func:`rerun` replaces no folder without it)
RUN_MARKER = ".tkmia-run"


def _is_run_folder(folder: Path, notebook: str) -> bool:
    """Whether ``folder`` is a real folder (no link) that :func:`rerun` made for ``notebook`` (a
    file name): it has the marker, or (a run from before the marker) exactly a run's entries."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    if (folder / RUN_MARKER).is_file():
        return True
    entries = {p.name for p in folder.iterdir()}
    return notebook in entries and entries <= {notebook, "html", "book"}


def rerun(
    source: str | Path,
    parameters: Mapping[str, Any] | None = None,
    out: str | Path = RUNS,
    *,
    report: bool = True,
    log: Log = print,
) -> Rerun:
    """Rerun one notebook into its own folder ``out/<rerun_name>/`` (what ``tkmia run`` does).

    The folder holds ``<name>.ipynb`` (executed, figures displayed and numbers filled for JupyterLab)
    and, with ``report``, ``html/<name>.html`` (the chapter rendered by Jupyter Book). Parameters are
    checked before any kernel starts; an ``out`` that is the notebooks' folder is refused. Work happens
    in a temporary folder moved into place on success, so a failed run never replaces a good one: it
    is kept as ``out/<rerun_name>--failed/`` and the error (``PapermillExecutionError`` or
    ``RuntimeError``) carries its path in ``failed_folder``.
    """
    source, out = Path(source), Path(out)
    if not source.is_file():
        raise FileNotFoundError(f"notebook {source} does not exist")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a folder; name a folder for the runs")
    _refuse_output_folder(out, source)
    parameters = check_parameters(source, dict(parameters or {}))
    import nbformat  # after the checks, which must answer at once
    name = rerun_name(source, parameters)
    final, failed = out / name, out / f"{name}--failed"
    for folder in (final, failed):  # only a folder that a rerun made is ever replaced
        if (folder.exists() or folder.is_symlink()) and not _is_run_folder(folder, source.name):
            raise ValueError(
                f"{folder} exists and is not a tkmia run folder (it has no {RUN_MARKER} file): a "
                "rerun replaces only its own folders; move it away or choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name[:60]}.", suffix=".partial", dir=out))
    (work / RUN_MARKER).write_text(f"{source.name}\n")
    executed = work / "book" / source.name
    try:
        execute_notebook(source, executed, parameters, log=log)
        nbformat.write(lab_notebook(nbformat.read(str(executed), as_version=4)), str(work / source.name))
        if report:
            log(f"{source.stem}: rendering the page ...")
            build_report(executed, work / "html")
    except BaseException as err:
        if failed.exists():
            shutil.rmtree(failed)
        work.rename(failed)
        err.failed_folder = failed  # type: ignore[attr-defined]
        raise
    shutil.rmtree(work / "book")
    if final.exists():  # replace the previous run of the same parameters only now
        old = out / f".{name[:60]}.{os.getpid()}.old"
        final.rename(old)
        work.rename(final)
        shutil.rmtree(old)
    else:
        work.rename(final)
    if failed.exists():
        shutil.rmtree(failed)
    return Rerun(folder=final, notebook=final / source.name,
                 html=final / "html" / f"{source.stem}.html" if report else None)


# ----------------------------------------------------------------------------------------------
# The book

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
    declared = parameter_specs(source)
    params: dict[str, Any] = tiny_parameters(source) if tiny else {}
    if profile is not None and "profile" in declared:
        params["profile"] = profile
    # a value equal to the notebook's own default is not injected: the page then shows no
    # "injected parameters" cell unless the build really changed something
    for name in list(params):
        if name in declared and declared[name].default == params[name]:
            del params[name]
    if data_root is not None and "data_root" in declared:
        params["data_root"] = str(Path(data_root).expanduser().resolve())
    return params


def execution_records(folder: str | Path = CHAPTERS) -> list[dict[str, Any]]:
    """The ``<name>.exec.json`` records of ``folder``, sorted by notebook: what each copy came from.

    Each holds ``notebook``, ``parameters``, ``seconds`` (of the execution that made the copy),
    ``executed_at`` (ISO 8601, UTC) and ``cached`` (whether the last ``execute_book`` reused it).
    """
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.exec.json"))]


def glued_values(folder: str | Path = CHAPTERS) -> dict[str, dict[str, str]]:
    """Every glued value of the executed chapters in ``folder`` as the text the page shows
    (``text/plain``; figures, glued as images, are left out): ``{chapter: {name: text}}``.

    What ``python -m tkmia.book glued`` writes, so that a change can be checked against the numbers
    of the book before it (``--compare``).
    """
    out: dict[str, dict[str, str]] = {}
    for path in sorted(Path(folder).glob("*.ipynb")):
        values: dict[str, str] = {}
        for cell in json.loads(path.read_text()).get("cells", []):
            for output in cell.get("outputs", []):
                name = output.get("metadata", {}).get("scrapbook", {}).get("name")
                text = output.get("data", {}).get(_RECORD + "text/plain")
                if name is None or text is None or any(_RECORD + i in output["data"] for i in _IMAGES):
                    continue
                values[name] = "".join(text) if isinstance(text, list) else str(text)
        out[path.stem] = values
    return out


def glued_changes(before: Mapping[str, Mapping[str, str]],
                  after: Mapping[str, Mapping[str, str]]) -> list[tuple[str, str, str | None, str | None]]:
    """``(chapter, name, before, after)`` for every glued value that differs, appeared (before is
    None) or went away (after is None), sorted by chapter and name."""
    rows = []
    for chapter in sorted(set(before) | set(after)):
        old, new = before.get(chapter, {}), after.get(chapter, {})
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                rows.append((chapter, name, old.get(name), new.get(name)))
    return rows


def toc_chapters(toc: str | Path = TOC) -> list[str]:
    """The notebook names (stems) the table of contents lists as ``book/chapters/<name>`` pages."""
    import yaml

    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            name = node.get("file")
            if isinstance(name, str) and name.startswith("book/chapters/"):
                found.append(Path(name).stem)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(Path(toc).read_text()))
    return found


def execute_book(
    *,
    profile: str | None = None,
    data_root: str | None = None,
    only: Iterable[str] | None = None,
    tiny: bool = False,
    source_dir: str | Path = NOTEBOOKS,
    out_dir: str | Path = CHAPTERS,
    toc: str | Path | None = None,
    log: Log = print,
) -> list[Path]:
    """Execute the book's notebooks whose inputs changed; return the executed copies' paths.

    Args:
        profile: passed as ``profile`` to notebooks that declare that parameter.
        data_root: passed (absolute) as ``data_root`` to notebooks that declare it.
        only: notebook names (file stems, e.g. ``"02_measures"``) to execute; default all of
            ``source_dir``, or, with ``toc``, those the table of contents lists (a notebook not
            yet in the book is not executed by ``make book``; ``tkmia run`` still runs it).
        tiny: use each notebook's :func:`tiny_parameters`.
        source_dir, out_dir: where the source notebooks are and where executed copies go.
        toc: a ``_toc.yml`` whose chapters are the default selection (``make book`` passes the
            repository's).
    """
    sources = source_notebooks(source_dir)
    if toc is not None and not only:
        listed = set(toc_chapters(toc))
        skipped = [s.stem for s in sources if s.stem not in listed]
        if skipped:
            log(f"not in {Path(toc).name}, not executed: {', '.join(skipped)}")
        sources = [s for s in sources if s.stem in listed]
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
        record_path = out_dir / f"{source.stem}.exec.json"
        digest = _run_digest(source, params, package)
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        if output.exists() and stamp.exists() and stamp.read_text().strip() == digest and record:
            log(f"{source.name}: unchanged, keeping {output}")
            record["cached"] = True
        else:
            log(f"{source.name}: executing with {params or 'its default parameters'} ...")
            start = time.perf_counter()
            stamp.unlink(missing_ok=True)
            execute_notebook(source, output, params, log=log)
            stamp.write_text(digest + "\n")
            seconds = time.perf_counter() - start
            log(f"{source.name}: done in {seconds:.1f} s -> {output}")
            record = {"notebook": source.stem, "parameters": params, "seconds": round(seconds, 1),
                      "executed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                      "cached": False}
        record_path.write_text(json.dumps(record, indent=1, default=str) + "\n")
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
    gl = sub.add_parser("glued", help="the glued values of book/chapters as JSON, or their changes")
    gl.add_argument("--chapters", type=Path, default=CHAPTERS,
                    help="executed chapters (default book/chapters)")
    gl.add_argument("--out", type=Path, help="write the JSON here (a new file) instead of printing it")
    gl.add_argument("--compare", type=Path, metavar="BEFORE.json",
                    help="print every value that differs from an earlier --out file")
    args = parser.parse_args(argv)
    if args.command == "glued":
        return _glued_command(args)
    try:
        execute_book(profile=args.profile, data_root=args.data_root, only=args.only, tiny=args.tiny,
                     toc=TOC)
    except (ValueError, FileNotFoundError) as err:
        print(f"tkmia.book: error: {err}", file=sys.stderr)
        return 2
    return 0


def _glued_command(args: argparse.Namespace) -> int:
    if not Path(args.chapters).is_dir():
        print(f"tkmia.book: error: --chapters {args.chapters} is not a folder (run make book first)",
              file=sys.stderr)
        return 2
    values = glued_values(args.chapters)
    if args.compare is not None:
        try:
            before = json.loads(Path(args.compare).read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"tkmia.book: error: --compare {args.compare}: {err}", file=sys.stderr)
            return 2
        changes = glued_changes(before, values)
        for chapter, name, old, new in changes:
            print(f"{chapter}: {name}: {old!r} -> {new!r}")
        total = sum(len(v) for v in values.values())
        print(f"{len(changes)} of {total} glued values changed", file=sys.stderr)
        return 0
    text = json.dumps(values, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if args.out is None:
        print(text, end="")
        return 0
    if Path(args.out).exists():
        print(f"tkmia.book: error: --out {args.out} exists; give a new file name", file=sys.stderr)
        return 2
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
