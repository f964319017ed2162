"""Open every page of the built book, and a rerun report, in headless Chromium; fail on what a reader
would hit.

Serves ``_build/html`` on 127.0.0.1, visits each page and fails on:

- a JavaScript page error or **any console message** (the theme's debug lines are filtered by
  ``book/_ext/tkmia_html.py``; the favicon is ours, so no 404 is logged);
- an internal request answered 4xx/5xx or failed, an image that does not load, an internal link to a
  missing page or anchor, maths that MathJax did not typeset;
- raw ``{glue`` or ``{exercise`` text outside code (a role or directive that did not render);
- an experiment chapter without a figure or a table; a chapter without its "Rerun this chapter" box
  or without download links to both its source notebook and its executed notebook;
- a figure scaled below the legibility bound. For each figure (``main img``) the check reads its
  natural width and its resolution (the dpi matplotlib writes in the PNG's pHYs chunk) and the width
  it is displayed at; the smallest text of the figure renders at about
  ``FIGURE_MIN_PT × dpi / 72 × displayed / natural`` pixels, which must be at least ``MIN_TEXT_PX``
  (9 px). ``FIGURE_MIN_PT`` (9 pt) is the smallest text size the book's figure style uses
  (:mod:`tkmia.plots.theme`: ticks and legends 9.9 pt, annotations 9 pt), so the bound amounts to
  "a 100-dpi figure is displayed at no less than 72 % of its natural width". A figure without a dpi
  (not from matplotlib) is only checked for loading.

Then it opens each rerun report found under ``--runs`` (``<run>/html/<name>.html``, written by
``tkmia run``; ``make report`` makes one with tiny parameters), with the same checks plus: at least
one figure shown, and the "Rerun this chapter" box. Screenshots of a chapter and of the rerun report
go to ``_build/screenshots/``. Needs Debian's chromium (``/usr/bin/chromium``) and the ``playwright``
package (no browser download: it drives the system Chromium).

Run: ``.venv/bin/python .ci/browser_check.py [--html _build/html] [--runs _build/runs]``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: experiment and open-question chapters and what each page must show: a figure, a table, or both
MUST_SHOW = {
    "07_victims": ("figure", "table"),
    "08_global": ("figure", "table"),
    "09_random": ("figure", "table"),
    "10_sensitivity": ("figure", "table"),
    "11_gallery": ("figure",),
    "12_monitoring": ("figure", "table"),
    "13_full_scale": ("table",),
    "13b_photos": ("figure", "table"),
    "15_relaxation_cost": ("figure", "table"),
    "16_box": ("figure", "table"),
    "17_arms_race": ("figure", "table"),
    "18_architectures": ("figure", "table"),
    "19_cardinality": ("figure", "table"),
    "20_no_ground_truth": ("figure", "table"),
    "21_victim_quality": ("figure", "table"),
}
#: chapters that must show at least this many figures (``main img``) and tables: "Real photographs"
#: has its scenes, per-class AP, selection tables, gallery, main claim and mechanism.
AT_LEAST = {"13b_photos": {"figure": 6, "table": 6}}
SCREENSHOTS = ("08_global", "05_relaxation", "13b_photos")
_SELECTOR = {"figure": "img", "table": "table"}
SKIP = {"genindex.html", "search.html", "py-modindex.html"}
RAW = ("{glue", "{exercise")
#: the smallest text size (pt) of the book's figure style, tkmia.plots.theme
FIGURE_MIN_PT = 9.0
#: no figure text may render smaller than this (CSS pixels)
MIN_TEXT_PX = 9.0
VIEWPORT = {"width": 1280, "height": 900}

_FIGURES = """Array.from(document.querySelectorAll('main img')).map(i => ({
  src: i.getAttribute('src'), url: i.src, natural: i.naturalWidth, shown: i.getBoundingClientRect().width,
  loaded: i.complete && i.naturalWidth > 0}))"""
# the page's prose, without code and pre blocks (which may quote the syntax on purpose)
_PROSE = """(() => { const main = document.querySelector('main') || document.body;
  const copy = main.cloneNode(true);
  copy.querySelectorAll('code, pre, script, style').forEach(e => e.remove());
  return copy.textContent; })()"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the CI log readable
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def pages(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("_static/", "_sources/", "_images/")) or path.name in SKIP:
            continue
        out.append(rel)
    return out


def reports(runs: Path) -> list[Path]:
    """The rendered pages of the reruns under ``runs`` (``<run>/html/<notebook>.html``)."""
    found = []
    for folder in sorted(p for p in runs.glob("*/html") if not p.parent.name.endswith("--failed")):
        page = folder / f"{folder.parent.name.split('--')[0]}.html"
        if page.is_file():
            found.append(page)
    return found


def _dpi(path: Path) -> float | None:
    try:
        with Image.open(path) as image:
            dpi = image.info.get("dpi")
    except OSError:
        return None
    return float(dpi[0]) if dpi and dpi[0] > 1 else None


def legibility(page, root: Path, base: str, rel: str) -> tuple[list[str], float | None]:
    """Problems with the page's figures (scale against MIN_TEXT_PX) and its smallest text estimate."""
    problems, smallest = [], None
    page_dir = (root / rel).parent
    for fig in page.evaluate(_FIGURES):
        if not fig["loaded"] or not fig["src"] or fig["src"].startswith(("data:", "http")):
            continue
        dpi = _dpi((page_dir / unquote(fig["src"])).resolve())
        if dpi is None or not fig["natural"]:
            continue
        text_px = FIGURE_MIN_PT * dpi / 72 * fig["shown"] / fig["natural"]
        smallest = text_px if smallest is None else min(smallest, text_px)
        if text_px < MIN_TEXT_PX - 1e-6:
            problems.append(
                f"figure {fig['src']} shown at {fig['shown']:.0f} of {fig['natural']} px "
                f"({fig['shown'] / fig['natural']:.0%}): its {FIGURE_MIN_PT:g} pt text renders at "
                f"{text_px:.1f} px < {MIN_TEXT_PX:g} px; make it narrower or put fewer panels a row")
    return problems, smallest


def visit(context, base: str, root: Path, rel: str) -> tuple[object, list[str], float | None]:
    """Open one page; return it (still open) with the problems found and its smallest text estimate."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}"))
    page.on("requestfailed", lambda req: errors.append(
        f"request failed: {req.url}") if req.url.startswith(base) else None)
    page.on("response", lambda res: errors.append(
        f"HTTP {res.status}: {res.url}") if res.url.startswith(base) and res.status >= 400 else None)
    page.goto(base + rel, wait_until="load")
    page.wait_for_timeout(150)
    broken = page.evaluate(
        "Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0)"
        ".map(i => i.getAttribute('src'))")
    errors.extend(f"broken image: {src}" for src in broken)
    if page.evaluate("document.querySelectorAll('main .math').length"):
        try:  # MathJax (served from _static) typesets every formula
            page.wait_for_selector("mjx-container", state="attached", timeout=15000)
        except PlaywrightTimeout:
            errors.append("maths not rendered (MathJax did not run)")
    prose = page.evaluate(_PROSE)
    for raw in RAW:
        if raw in prose:
            at = prose.index(raw)
            errors.append(f"raw {raw} text on the page: {prose[at:at + 60]!r}")
    figure_problems, smallest = legibility(page, root, base, rel)
    errors.extend(figure_problems)
    return page, errors, smallest


def check(root: Path, screenshots: Path, runs: Path | None = None) -> list[str]:
    server, base = serve(root)
    problems: list[str] = []
    anchors: dict[str, set[str]] = {}
    links: list[tuple[str, str]] = []
    smallest: list[tuple[float, str]] = []
    screenshots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport=VIEWPORT)
        for rel in pages(root):
            page, errors, small = visit(context, base, root, rel)
            if small is not None:
                smallest.append((small, rel))
            anchors[rel] = set(page.evaluate("Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
            for href in page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
                if href.startswith(base):
                    links.append((rel, href))
            stem = Path(rel).stem
            needs = MUST_SHOW.get(stem, ())
            if "figure" in needs and not page.evaluate("document.querySelectorAll('main img').length"):
                errors.append("no figure on an experiment chapter")
            if "table" in needs and not page.evaluate("document.querySelectorAll('main table').length"):
                errors.append("no table on an experiment chapter")
            for kind, least in AT_LEAST.get(stem, {}).items():
                shown = page.evaluate(f"document.querySelectorAll('main {_SELECTOR[kind]}').length")
                if shown < least:
                    errors.append(f"{shown} {kind}s shown, this chapter has at least {least}")
            if rel.startswith("book/chapters/") and not page.evaluate(
                    "document.querySelectorAll('main .rerun-box').length"):
                errors.append("no 'Rerun this chapter' box")
            if rel.startswith("book/chapters/"):
                downloads = page.evaluate(
                    "Array.from(document.querySelectorAll('a[href$=\".ipynb\"]')).map(a => a.href)")
                kinds = {kind for kind in ("/_notebooks/", "/_sources/") for h in downloads if kind in h}
                if len(kinds) < 2:
                    errors.append(f"no download of both the source and the executed notebook: {downloads}")
            if stem in SCREENSHOTS:
                _screenshot(page, screenshots / f"chapter_{stem}.png")
            problems.extend(f"{rel}: {e}" for e in errors)
            page.close()
        if runs is not None:
            found = reports(runs)
            if not found:
                problems.append(f"{runs}: no rerun report (make report writes one)")
            for report in found:
                problems.extend(_check_report(context, report, screenshots, smallest))
        browser.close()
    server.shutdown()
    for source, href in links:
        target, fragment = urldefrag(href)
        path = unquote(urlparse(target).path).lstrip("/") or "index.html"
        if path.endswith("/"):
            path += "index.html"
        if not (root / path).is_file():
            problems.append(f"{source}: broken link to {path}")
        elif fragment and path in anchors and fragment not in anchors[path]:
            problems.append(f"{source}: broken anchor {path}#{fragment}")
    if smallest:
        size, where = min(smallest)
        print(f"figures measured on {len(smallest)} pages; smallest figure text (estimate): "
              f"{size:.1f} px on {where}; bound {MIN_TEXT_PX:g} px")
    return problems


def _check_report(context, report: Path, screenshots: Path, smallest: list) -> list[str]:
    root = report.parent
    server, base = serve(root)
    try:
        page, errors, small = visit(context, base, root, report.name)
        if small is not None:
            smallest.append((small, str(report)))
        shown = page.evaluate(f"({_FIGURES}).filter(f => f.loaded).length")
        if not shown:
            errors.append("the rerun report shows no figure")
        if not page.evaluate("document.querySelectorAll('main .rerun-box').length"):
            errors.append("the rerun report has no 'Rerun this chapter' box")
        _screenshot(page, screenshots / f"rerun_report_{report.stem}.png")
        page.close()
    finally:
        server.shutdown()
    return [f"{report}: {e}" for e in errors]


def _screenshot(page, path: Path) -> None:
    """The viewport with the page's first figure in view (or its top, when it has none)."""
    if page.evaluate("document.querySelectorAll('main img').length"):
        page.evaluate("document.querySelector('main img').scrollIntoView({block: 'center'})")
        page.wait_for_timeout(100)
    page.screenshot(path=str(path), full_page=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", default="_build/html", type=Path)
    parser.add_argument("--runs", default=None, type=Path,
                        help="folder of tkmia run outputs; its reports are checked (at least one required)")
    parser.add_argument("--screenshots", default="_build/screenshots", type=Path)
    args = parser.parse_args(argv)
    if not (args.html / "index.html").is_file():
        print(f"no book at {args.html}: run `make book` first", file=sys.stderr)
        return 2
    checked = pages(args.html)
    problems = check(args.html.resolve(), args.screenshots, args.runs)
    for line in problems:
        print(f"FAIL {line}")
    print(f"browser check: {len(checked)} pages"
          + (f" and {len(reports(args.runs))} rerun report(s)" if args.runs else "")
          + f", {len(problems)} problems; screenshots in {args.screenshots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
