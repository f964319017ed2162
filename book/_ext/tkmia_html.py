"""Sphinx extension: drop duplicate <script> entries from every HTML page.

With Jupyter Book 1.0 and sphinx-book-theme 1.x, sphinx-thebe's and sphinx-togglebutton's inline
scripts are registered twice, so each page declares ``const THEBE_JS_URL`` twice and the browser
raises "Identifier 'THEBE_JS_URL' has already been declared". Keeping the first of identical
entries fixes the page error without changing anything else.
"""

from __future__ import annotations


def _key(script) -> tuple:
    attributes = tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items()))
    filename = getattr(script, "filename", script) or ""  # None and "" both mean "inline"
    return (str(filename), attributes)


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: later handlers (MathJax's) append to this very list


def setup(app):
    # early: Sphinx stops this event at the first handler that returns a template name
    app.connect("html-page-context", dedupe_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
