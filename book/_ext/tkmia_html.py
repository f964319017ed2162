"""Sphinx extension: the HTML pages as tkmia wants them, with nothing a reader's console reports.

- Duplicate ``<script>`` entries are dropped (with Jupyter Book 1.0 and sphinx-book-theme 1.x some
  inline scripts are registered twice, and the browser raises "Identifier ... already declared").
- sphinx-thebe, which Jupyter Book always loads, is taken out of every page: its scripts, its
  stylesheet and the ``x-thebe-config`` block that names a Binder repository unrelated to tkmia
  (the book has no launch buttons; ``make lab`` runs the notebooks locally).
- The theme's colour mode has a default (``auto``: the reader's system setting; pydata-sphinx-theme
  takes ``default_mode`` from the page context): without one, every
  page logged "Got invalid theme mode: . Resetting to auto." as a console error.
- The theme's own debug chatter (``console.log("[PST]: Changed to auto mode ...")``, ``[SBT]`` and
  ``[togglebutton]`` lines) is filtered by a small script that runs before the theme's; warnings
  and errors pass.
- Each chapter's download menu offers both notebooks: the executed one (what the page shows) and the
  source one from ``notebooks/`` (no outputs, with its ``parameters`` cell), copied to
  ``_notebooks/`` in the HTML output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from docutils import nodes

_CHATTER = """(function () {
  // pydata-sphinx-theme, sphinx-book-theme and sphinx-togglebutton debug lines
  const chatter = /^\\[(PST|SBT|togglebutton)\\]/;
  for (const level of ["log", "info", "debug"]) {
    const original = console[level].bind(console);
    console[level] = (...args) => {
      if (!(typeof args[0] === "string" && chatter.test(args[0]))) original(...args);
    };
  }
})();"""


def _key(script) -> tuple:
    attributes = tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items()))
    filename = getattr(script, "filename", script) or ""  # None and "" both mean "inline"
    return (str(filename), attributes)


def _is_thebe(asset) -> bool:
    filename = str(getattr(asset, "filename", asset) or "")
    body = str(getattr(asset, "attributes", {}).get("body", ""))
    return "thebe" in filename or "THEBE_JS_URL" in body


def clean_scripts(app, pagename, templatename, context, doctree):
    context.setdefault("default_mode", "auto")  # pydata-sphinx-theme reads it from the context
    scripts = context.get("script_files")
    if scripts:
        seen, unique = set(), []
        for script in scripts:
            key = _key(script)
            if key not in seen and not _is_thebe(script):
                seen.add(key)
                unique.append(script)
        scripts[:] = unique  # in place: later handlers (MathJax's) append to this very list
    css = context.get("css_files")
    if css:
        css[:] = [c for c in css if not _is_thebe(c)]


def drop_thebe_config(app, doctree, docname):
    for node in list(doctree.findall(nodes.raw)):
        if "x-thebe-config" in node.astext() or "<script>kernelName =" in node.astext():
            node.parent.remove(node)


def _source_notebook(app, pagename: str) -> Path | None:
    if not pagename.startswith("book/chapters/"):
        return None
    path = Path(app.srcdir) / "notebooks" / f"{Path(pagename).name}.ipynb"
    return path if path.is_file() else None


def download_buttons(app, pagename, templatename, context, doctree):
    source = _source_notebook(app, pagename)
    for group in context.get("header_buttons", []):
        if group.get("label") != "download-buttons":
            continue
        for button in group["buttons"]:
            if button.get("label") == "download-source-button" and button.get("text") == ".ipynb":
                button["text"] = ".ipynb (executed)"
                button["tooltip"] = "Download the executed notebook (with its outputs)"
        if source is not None:
            group["buttons"].insert(0, {
                "type": "link",
                "url": context["pathto"](f"_notebooks/{source.name}", 1),
                "text": ".ipynb (source)",
                "tooltip": "Download the source notebook (no outputs; rerun it with tkmia run)",
                "icon": "fas fa-code",
                "label": "download-source-notebook-button",
            })


def copy_source_notebooks(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_notebooks"
    for docname in app.env.found_docs:
        if (source := _source_notebook(app, docname)) is not None:
            target.mkdir(exist_ok=True)
            shutil.copy2(source, target / source.name)


def setup(app):
    # early: Sphinx stops this event at the first handler that returns a template name
    app.connect("html-page-context", clean_scripts, priority=100)
    # late: after sphinx-book-theme has built its header buttons
    app.connect("html-page-context", download_buttons, priority=900)
    app.connect("doctree-resolved", drop_thebe_config, priority=900)
    app.connect("build-finished", copy_source_notebooks)
    app.add_js_file(None, body=_CHATTER, priority=1)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
