"""tkmia.book.runner and `tkmia run`: the typed parameters convention, checks before any kernel starts,
reruns named by parameters that never overwrite a notebook or a good run, readable reports."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tkmia.book import runner as book
from tkmia.book.runner import (
    check_parameters,
    execute_book,
    execute_notebook,
    lab_notebook,
    parameter_specs,
    rerun,
    rerun_name,
)
from tkmia.cli import build_parser
from tkmia.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent

PARAMETERS = "\n".join([
    'k = 3  # int, in [1, num_classes - 2]: the top-k size',
    'num_classes = 8  # int, at least k + 2: number of labels C',
    'ks = None  # list of int or None, each at least 1: top-k sizes (None: the profile\'s grid)',
    'lrs = [2e-4, 5e-4]  # list of float, each positive: learning rates',
    'baseline = "kfool"  # str, one of tkml_ap_u, ml_cw_u, kfool: the method beside TkMIA',
    'alpha = 0.05  # float, in [0, 1): false-alarm budget',
    'profile = "default"  # profile: a profile of tkmia/profiles',
    'device = "cpu"  # device: cpu, cuda, ...',
    'free = 1  # anything at all, in prose',
])


def _notebook(folder: Path, parameters: str = PARAMETERS, body: str = "print(k)", name="toy") -> Path:
    nb = new_notebook(cells=[new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                             new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def test_the_comment_convention_is_parsed(tmp_path):
    specs = parameter_specs(_notebook(tmp_path))
    assert list(specs) == ["k", "num_classes", "ks", "lrs", "baseline", "alpha", "profile", "device", "free"]
    k = specs["k"]
    assert (k.kind, k.is_list, k.optional, k.default) == ("int", False, False, 3)
    assert k.constraints == (("min", "1", True), ("max", "num_classes - 2", True))
    assert (k.allowed, k.help) == ("int, in [1, num_classes - 2]", "the top-k size")
    assert (specs["ks"].kind, specs["ks"].is_list, specs["ks"].optional) == ("int", True, True)
    assert specs["ks"].help == "top-k sizes (None: the profile's grid)"
    assert specs["lrs"].constraints == (("min", "0", False),)
    assert specs["baseline"].constraints == (("choices", ("tkml_ap_u", "ml_cw_u", "kfool"), None),)
    assert specs["alpha"].constraints == (("min", "0", True), ("max", "1", False))
    assert specs["profile"].kind == "profile" and specs["device"].kind == "device"
    # tolerant: prose without a type declares nothing, and the parameter is not checked
    assert specs["free"].kind is None and specs["free"].help == "anything at all, in prose"
    assert check_parameters(tmp_path / "toy.ipynb", {"free": "x"}) == {"free": "x"}


def test_a_parameter_papermill_cannot_read_or_invalid_python_is_refused(tmp_path):
    """papermill reads each parameter line (one '=' a line); one it would skip is named, not dropped."""
    with pytest.raises(ValueError, match=r"line 2 \(title\).*one `name = value  # comment` line"):
        parameter_specs(_notebook(tmp_path, 'k = 3  # int\ntitle = "a=b"  # str: a title'))
    with pytest.raises(ValueError, match="not valid Python"):
        parameter_specs(_notebook(tmp_path, "k = (3  # int", name="broken"))


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("k", "abc", r"k = 'abc' is not allowed \(not an int \(str\)\).*int, in \[1, num_classes - 2\]"),
        ("k", 2.5, r"k = 2.5 is not allowed \(not an int"),
        ("k", 0, r"k = 0 is not allowed \(below 1\)"),
        ("k", 7, r"k = 7 is not allowed \(above num_classes - 2 = 6\)"),
        ("k", None, r"k = None is not allowed \(None is not allowed\)"),
        ("k", [2], r"k = \[2\] is not allowed \(a list, not a single value\)"),
        ("ks", 3, r"ks = 3 is not allowed \(not a list"),
        ("ks", [2, 0], r"ks = \[2, 0\] is not allowed \(below 1\)"),
        ("lrs", [0.1, 0], r"lrs = \[0.1, 0\] is not allowed \(not above 0\)"),
        ("baseline", "pgd", r"baseline = 'pgd' is not allowed \(not one of tkml_ap_u, ml_cw_u, kfool\)"),
        ("alpha", 1, r"alpha = 1 is not allowed \(not below 1\)"),
        ("profile", "nope", r"profile = 'nope' is not allowed \(neither a profile of tkmia/profiles"),
        ("device", "gpu", r"device = 'gpu' is not allowed \(not a torch device"),
    ],
)
def test_values_are_checked_against_the_declarations(tmp_path, name, value, reason):
    with pytest.raises(ValueError, match=reason):
        check_parameters(_notebook(tmp_path), {name: value})


def test_values_are_converted_and_bounds_follow_other_parameters(tmp_path):
    path = _notebook(tmp_path)
    assert check_parameters(path, {"lrs": ["5e-4", 1], "ks": "None", "alpha": 0}) == {
        "lrs": [5e-4, 1.0], "ks": None, "alpha": 0.0}
    assert check_parameters(path, {"k": 7, "num_classes": 9}) == {"k": 7, "num_classes": 9}
    with pytest.raises(ValueError, match=r"num_classes = 4 is not allowed \(below k \+ 2 = 5\)"):
        check_parameters(path, {"num_classes": 4})


def test_a_wrong_value_is_refused_at_once_before_any_kernel_starts(tmp_path, monkeypatch, capsys):
    import papermill

    def no_kernel(*args, **kwargs):
        raise AssertionError("a kernel was started")

    monkeypatch.setattr(papermill, "execute_notebook", no_kernel)
    source = ROOT / "notebooks" / "02_measures.ipynb"
    build_parser()  # the command modules are imported once per process; time the check itself
    start = time.perf_counter()
    assert cli_main(["run", str(source), "-p", "k", "abc", "--out", str(tmp_path)]) == 2
    assert time.perf_counter() - start < 1.0  # about 0.01 s; a kernel start alone takes seconds
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "k = 'abc'" in err and "int, in [1, num_classes - 2]" in err
    assert cli_main(["run", str(source), "-p", "k", "9", "--out", str(tmp_path)]) == 2
    assert "above num_classes - 2 = 6" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing is written for a refused run"


def test_out_notebooks_is_refused(tmp_path, capsys):
    source = ROOT / "notebooks" / "02_measures.ipynb"
    before = source.read_bytes()
    for out in (ROOT / "notebooks", ROOT / "notebooks" / "runs"):
        assert cli_main(["run", str(source), "-p", "k", "2", "--out", str(out)]) == 2
        assert "source notebooks' folder" in capsys.readouterr().err
    toy = _notebook(tmp_path / "src", body="print(k)")
    with pytest.raises(ValueError, match="source notebooks' folder"):
        rerun(toy, {}, tmp_path / "src", report=False)
    assert source.read_bytes() == before
    assert not (ROOT / "notebooks" / "runs").exists()
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["toy.ipynb"]


def test_rerun_names_follow_notebook_and_parameters():
    name = rerun_name("notebooks/08_global.ipynb", {"n_samples": 50, "k": 2})
    assert name == "08_global--k=2--n_samples=50"
    assert rerun_name("x/08_global.ipynb", {}) == "08_global"
    assert rerun_name("a.ipynb", {"ks": [2, 3], "profile": "a/b.yaml"}) == "a--ks=_2,3_--profile=a_b.yaml"
    long = rerun_name("a.ipynb", {"lrs": list(range(100))})
    assert len(long) <= 150 and long != rerun_name("a.ipynb", {"lrs": list(range(101))})


def test_two_reruns_with_different_parameters_both_remain(tmp_path, capsys):
    source = _notebook(tmp_path / "src", body="print('k is', k)")
    out = tmp_path / "runs"
    for k in ("2", "4"):
        assert cli_main(["run", str(source), "-p", "k", k, "--out", str(out), "--no-report"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["toy--k=2", "toy--k=4"]
    for k in (2, 4):
        nb = nbformat.read(out / f"toy--k={k}" / "toy.ipynb", as_version=4)
        assert f"k is {k}" in "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                                      for o in c.outputs)
        assert f"notebook: {out / f'toy--k={k}' / 'toy.ipynb'}" in printed
    assert "cell 1 of 3" in printed and "cell 3 of 3" in printed  # progress while it runs


def test_a_failed_run_never_replaces_a_good_one(tmp_path, capsys):
    flag = tmp_path / "fail"
    source = _notebook(tmp_path / "src", body=(
        f"from pathlib import Path\nif Path({str(flag)!r}).exists():\n    raise RuntimeError('boom')\n"
        "print('good run')"))
    out = tmp_path / "runs"
    args = ["run", str(source), "-p", "k", "2", "--out", str(out), "--no-report"]
    assert cli_main(args) == 0
    good = out / "toy--k=2" / "toy.ipynb"
    content = good.read_bytes()
    flag.touch()
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err and str(out / "toy--k=2--failed") in err
    assert good.read_bytes() == content
    failed = nbformat.read(out / "toy--k=2--failed" / "book" / "toy.ipynb", as_version=4)
    assert any(o.output_type == "error" for c in failed.cells if c.cell_type == "code" for o in c.outputs)
    assert sorted(p.name for p in out.iterdir()) == ["toy--k=2", "toy--k=2--failed"]
    flag.unlink()  # a later good run replaces the good one and clears the failed one
    assert cli_main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["toy--k=2"]


GLUE_BODY = """import matplotlib.pyplot as plt
from myst_nb import glue
fig, ax = plt.subplots(figsize=(3, 2))
ax.plot([0, 1], [0, k])
glue("toy_fig", fig, display=False)
plt.close(fig)
glue("toy_value", 0.123456 * k, display=False)
"""


def test_a_rerun_is_readable_html_page_and_lab_notebook(tmp_path, capsys):
    source = _notebook(tmp_path / "src", body=GLUE_BODY, name="glued")
    nb = nbformat.read(source, as_version=4)
    nb.cells.append(new_markdown_cell(
        "# Toy\n\nThe value is {glue:text}`toy_value:.3f`.\n\n```{glue:figure} toy_fig\n:name: toy-fig\n\n"
        "The toy figure.\n```\n"))
    nbformat.write(nb, source)
    assert cli_main(["run", str(source), "-p", "k", "2", "--out", str(tmp_path / "runs")]) == 0
    folder = tmp_path / "runs" / "glued--k=2"
    printed = capsys.readouterr().out
    assert f"page:     {folder / 'html' / 'glued.html'}" in printed
    html = (folder / "html" / "glued.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)
    assert "{glue" not in text and "The value is 0.247." in text
    assert "<img" in html and "Rerun this chapter" in html
    assert "tkmia run" in text and "-p k 2" in text
    # the site's fixes apply to the report too: no Binder/thebe config, a favicon, a colour mode
    assert "binder-examples" not in html and "THEBE_JS_URL" not in html and "kernelName" not in html
    assert 'rel="icon"' in html and 'data-theme="auto"' in html
    # the notebook for JupyterLab: the glued figure is displayed, numbers are filled in
    lab = nbformat.read(folder / "glued.ipynb", as_version=4)
    shown = [o for c in lab.cells if c.cell_type == "code" for o in c.outputs
             if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(shown) == 1
    prose = "".join(c.source for c in lab.cells if c.cell_type == "markdown")
    assert "The value is 0.247" in prose and "{glue" not in prose
    assert "*Figure (shown above):* The toy figure." in prose


def test_lab_notebook_leaves_the_book_copy_alone():
    nb = new_notebook(cells=[new_markdown_cell("x {glue:text}`missing` y")])
    assert lab_notebook(nb).cells[0].source == "x {glue:text}`missing` y"


def test_executed_notebook_ends_with_its_rerun_box_and_prints_no_tcp_warning(tmp_path, capfd):
    source = _notebook(tmp_path / "src")
    logs: list[str] = []
    output = execute_notebook(source, tmp_path / "out.ipynb", {"k": 2, "lrs": [1e-3]}, log=logs.append)
    box = nbformat.read(output, as_version=4).cells[-1]
    assert box.cell_type == "markdown" and "rerun" in box.metadata["tags"]
    assert "Rerun this chapter" in box.source
    assert "tkmia run " in box.source and " -p k 2 -p lrs '[0.001]'" in box.source
    row = "| `baseline` | `kfool` | str, one of tkml_ap_u, ml_cw_u, kfool | the method beside TkMIA |"
    assert row in box.source
    # three code cells: parameters, papermill's injected parameters, the body
    assert [line.split(",")[0] for line in logs] == [f"toy: cell {i} of 3" for i in (1, 2, 3)]
    assert all(line.endswith(" s elapsed") for line in logs)
    captured = capfd.readouterr()
    assert "without encryption" not in captured.err + captured.out
    assert sorted(p.name for p in source.parent.iterdir()) == ["toy.ipynb"], "no socket files left"


def test_book_records_execution_and_cache(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _notebook(src)
    execute_book(source_dir=src, out_dir=out, log=lambda line: None)
    first = json.loads((out / "toy.exec.json").read_text())
    assert first["notebook"] == "toy" and first["cached"] is False and first["seconds"] > 0
    execute_book(source_dir=src, out_dir=out, log=lambda line: None)
    again = book.execution_records(out)
    assert len(again) == 1 and again[0]["cached"] is True and again[0]["seconds"] == first["seconds"]


def test_glue_shows_figures_outside_a_book_build_only(monkeypatch):
    """In JupyterLab a chapter's glued figures show; in a book build myst-nb alone places them."""
    import matplotlib.pyplot as plt
    import myst_nb

    from tkmia.book import runner as book
    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: calls.append((name, display)))
    fig = plt.figure()
    monkeypatch.delenv(book.BOOK_BUILD_ENV, raising=False)
    book.glue("fig", fig, display=False)
    book.glue("number", 0.5, display=False)
    monkeypatch.setenv(book.BOOK_BUILD_ENV, "1")
    book.glue("fig", fig, display=False)
    plt.close(fig)
    assert calls == [("fig", True), ("number", False), ("fig", False)]


def test_execute_notebook_marks_the_kernel_as_a_book_build(tmp_path, monkeypatch):
    import os

    import nbformat

    from tkmia.book import runner as book
    monkeypatch.delenv(book.BOOK_BUILD_ENV, raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.environ.get('TKMIA_BOOK_BUILD'))")]
    source = tmp_path / "flag.ipynb"
    nbformat.write(nb, str(source))
    out = book.execute_notebook(source, tmp_path / "out" / "flag.ipynb")
    text = nbformat.read(str(out), as_version=4).cells[0].outputs[0]["text"]
    assert text.strip() == "1"
    assert not os.environ.get(book.BOOK_BUILD_ENV)


def test_make_book_executes_the_chapters_the_toc_lists(tmp_path):
    """A notebook not (yet) in the table of contents is not executed by ``make book``."""
    import nbformat

    from tkmia.book.runner import TOC, execute_book, source_notebooks, toc_chapters

    chapters = toc_chapters(TOC)
    assert "02_measures" in chapters and "14a_exercise_measures" in chapters
    assert set(chapters) <= {s.stem for s in source_notebooks()}
    src = tmp_path / "nb"
    src.mkdir()
    for name in ("a_in", "b_out"):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("x = 1")]
        nbformat.write(nb, str(src / f"{name}.ipynb"))
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: intro\nchapters:\n  - file: book/chapters/a_in\n")
    logs: list[str] = []
    written = execute_book(source_dir=src, out_dir=tmp_path / "out", toc=toc, log=logs.append)
    assert [p.stem for p in written] == ["a_in"]
    assert any("not executed: b_out" in line for line in logs)


def test_glued_values_are_read_back_and_compared(tmp_path, capsys):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from tkmia.book.runner import glued_changes, glued_values, main

    def record(name, data):
        return new_output("display_data", data=data, metadata={
            "scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}})

    cell = new_code_cell("glue(...)")
    cell.outputs = [record("rate", {"application/papermill.record/text/plain": "0.25"}),
                    record("table", {"application/papermill.record/text/plain": "   a\n0  1",
                                     "application/papermill.record/text/html": "<table></table>"}),
                    record("figure", {"application/papermill.record/image/png": "iVBOR",
                                      "application/papermill.record/text/plain": "<Figure>"}),
                    new_output("stream", name="stdout", text="not glued\n")]
    folder = tmp_path / "chapters"
    folder.mkdir()
    nbformat.write(new_notebook(cells=[cell]), str(folder / "01_a.ipynb"))
    values = glued_values(folder)
    assert values == {"01_a": {"rate": "0.25", "table": "   a\n0  1"}}
    after = {"01_a": {"rate": "0.5", "table": "   a\n0  1", "new": "x"}, "02_b": {}}
    assert glued_changes(values, after) == [("01_a", "new", None, "x"), ("01_a", "rate", "0.25", "0.5")]
    out = tmp_path / "before.json"
    assert main(["glued", "--chapters", str(folder), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == values
    assert main(["glued", "--chapters", str(folder), "--out", str(out)]) == 2  # never over a file
    assert "exists" in capsys.readouterr().err
    assert main(["glued", "--chapters", str(folder), "--compare", str(out)]) == 0
    assert "0 of 2 glued values changed" in capsys.readouterr().err


def test_the_kernel_is_this_interpreter_registered_by_ipykernel(tmp_path, monkeypatch):
    """ensure_kernel has ipykernel write the spec into sys.prefix, leaves a current spec alone, and
    falls back to a temporary folder on JUPYTER_PATH where sys.prefix cannot hold it."""
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    assert book.ensure_kernel() == book.KERNEL_NAME
    spec = tmp_path / "venv" / "share" / "jupyter" / "kernels" / book.KERNEL_NAME / "kernel.json"
    text = json.loads(spec.read_text())
    assert text["argv"][0] == sys.executable and "ipykernel_launcher" in text["argv"]
    assert "{connection_file}" in text["argv"]
    assert text["display_name"] == "Python (tkmia, venv)"
    stamp = spec.stat().st_mtime_ns
    time.sleep(0.01)
    book.ensure_kernel()
    assert spec.stat().st_mtime_ns == stamp  # a current spec is not rewritten under a running notebook

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "file"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("JUPYTER_PATH", "/elsewhere")
    (tmp_path / "tmp").mkdir()
    assert book.ensure_kernel() == book.KERNEL_NAME
    fallback = tmp_path / "tmp" / f"tkmia-jupyter-{os.getuid()}" / "share" / "jupyter"
    written = json.loads((fallback / "kernels" / book.KERNEL_NAME / "kernel.json").read_text())
    assert written["argv"][0] == sys.executable
    assert os.environ["JUPYTER_PATH"] == f"{fallback}{os.pathsep}/elsewhere"
