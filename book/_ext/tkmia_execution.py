"""Sphinx extension: the execution-statistics page, generated from tkmia.book.runner's own records.

``python -m tkmia.book execute`` (run by ``make book``) writes ``book/chapters/<name>.exec.json``
beside each executed notebook: its parameters, how long its execution took and whether the last
build reused it from the cache (its ``.hash`` matched). The directive::

    ```{tkmia-execution-table}
    ```

renders them as one table (like Jupyter Book's ``{nb-exec-table}``, which sees only its own
cache). The page holding it is read again on every build, so the table is never stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

HEADER = ("chapter", "executed (UTC)", "time (s)", "parameters", "from the cache")


def _cell(content) -> nodes.entry:
    entry = nodes.entry()
    entry += content if isinstance(content, nodes.Node) else nodes.paragraph(text=str(content))
    return entry


class ExecutionTable(SphinxDirective):
    has_content = False

    def run(self):
        env = self.env
        pages = getattr(env, "tkmia_execution_pages", set())
        pages.add(env.docname)
        env.tkmia_execution_pages = pages
        folder = Path(env.srcdir) / "book" / "chapters"
        records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.exec.json"))]
        if not records:
            return [nodes.paragraph(text="No chapter has been executed yet: run make book.")]
        table = nodes.table(classes=["tkmia-execution-table"])
        group = nodes.tgroup(cols=len(HEADER))
        table += group
        for width in (24, 18, 8, 38, 12):
            group += nodes.colspec(colwidth=width)
        head, body = nodes.thead(), nodes.tbody()
        row = nodes.row()
        for title in HEADER:
            row += _cell(title)
        head += row
        group += head
        total = 0.0
        for record in records:
            docname = f"book/chapters/{record['notebook']}"
            para = nodes.paragraph()
            if docname in env.found_docs:
                ref = nodes.reference("", "", internal=True,
                                      refuri=self.env.app.builder.get_relative_uri(env.docname, docname))
                ref += nodes.literal(text=record["notebook"])
                para += ref
            else:
                para += nodes.literal(text=record["notebook"])
            params = record.get("parameters") or {}
            shown = nodes.paragraph()
            if params:  # as literals: no smart quotes on string values
                shown += nodes.literal(text=", ".join(f"{k}={json.dumps(v)}" for k, v in params.items()))
            else:
                shown += nodes.Text("its defaults")
            total += float(record.get("seconds", 0.0))
            row = nodes.row()
            for content in (para, record.get("executed_at", "").replace("T", " ").replace("+00:00", ""),
                            f"{float(record.get('seconds', 0.0)):.1f}", shown,
                            "yes" if record.get("cached") else "no (executed in this build)"):
                row += _cell(content)
            body += row
        group += body
        summary = nodes.paragraph(text=(
            f"{len(records)} chapters; {sum(1 for r in records if r.get('cached'))} from the cache; "
            f"{total:.0f} s of execution in all (each chapter's last execution)."))
        return [table, summary]


def _always_outdated(app, env, added, changed, removed):
    return sorted(getattr(env, "tkmia_execution_pages", set()) - set(removed))


def _purge(app, env, docname):
    getattr(env, "tkmia_execution_pages", set()).discard(docname)


def _merge(app, env, docnames, other):
    pages = getattr(env, "tkmia_execution_pages", set())
    pages |= getattr(other, "tkmia_execution_pages", set())
    env.tkmia_execution_pages = pages


def setup(app):
    app.add_directive("tkmia-execution-table", ExecutionTable)
    app.connect("env-get-outdated", _always_outdated)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
