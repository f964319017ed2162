"""Open every page of the built book in headless Chromium and fail on what a reader would hit.

Serves ``_build/html`` on 127.0.0.1, visits each page and fails on: a JavaScript page error, an
internal request answered 4xx/5xx or failed, an image that does not load, an internal link to a
missing page or anchor, maths that MathJax did not typeset, or an experiment chapter without a figure
or a table. Saves screenshots of
two chapters under ``_build/screenshots/``. Needs Debian's chromium (``/usr/bin/chromium``) and the
``playwright`` package (no browser download: it drives the system Chromium).

Run: ``.venv/bin/python .ci/browser_check.py [--html _build/html]``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: experiment chapters and what each page must show: a figure, a table, or both
MUST_SHOW = {
    "07_victims": ("figure", "table"),
    "08_global": ("figure", "table"),
    "09_random": ("figure", "table"),
    "10_sensitivity": ("figure", "table"),
    "11_gallery": ("figure",),
    "12_monitoring": ("figure", "table"),
    "13_full_scale": ("table",),
}
SCREENSHOTS = ("08_global", "05_relaxation")
SKIP = {"genindex.html", "search.html", "py-modindex.html"}


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


def check(root: Path, screenshots: Path) -> list[str]:
    server, base = serve(root)
    problems: list[str] = []
    anchors: dict[str, set[str]] = {}
    links: list[tuple[str, str]] = []
    screenshots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        for rel in pages(root):
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(f"page error: {exc}"))
            page.on("requestfailed", lambda req, errors=errors: errors.append(
                f"request failed: {req.url}") if req.url.startswith(base) else None)
            page.on("response", lambda res, errors=errors: errors.append(
                f"HTTP {res.status}: {res.url}") if res.url.startswith(base) and res.status >= 400 else None)
            page.goto(base + rel, wait_until="load")
            page.wait_for_timeout(150)
            broken = page.evaluate(
                "Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0)"
                ".map(i => i.getAttribute('src'))")
            errors.extend(f"broken image: {src}" for src in broken)
            anchors[rel] = set(page.evaluate("Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
            for href in page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
                if href.startswith(base):
                    links.append((rel, href))
            stem = Path(rel).stem
            if page.evaluate("document.querySelectorAll('main .math').length"):
                try:  # MathJax (served from _static) typesets every formula
                    page.wait_for_selector("mjx-container", state="attached", timeout=15000)
                except PlaywrightTimeout:
                    errors.append("maths not rendered (MathJax did not run)")
            needs = MUST_SHOW.get(stem, ())
            if "figure" in needs and not page.evaluate("document.querySelectorAll('main img').length"):
                errors.append("no figure on an experiment chapter")
            if "table" in needs and not page.evaluate("document.querySelectorAll('main table').length"):
                errors.append("no table on an experiment chapter")
            if stem in SCREENSHOTS:
                page.screenshot(path=str(screenshots / f"{stem}.png"), full_page=False)
            problems.extend(f"{rel}: {e}" for e in errors)
            page.close()
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
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", default="_build/html", type=Path)
    parser.add_argument("--screenshots", default="_build/screenshots", type=Path)
    args = parser.parse_args(argv)
    if not (args.html / "index.html").is_file():
        print(f"no book at {args.html}: run `make book` first", file=sys.stderr)
        return 2
    checked = pages(args.html)
    problems = check(args.html.resolve(), args.screenshots)
    for line in problems:
        print(f"FAIL {line}")
    print(f"browser check: {len(checked)} pages, {len(problems)} problems; "
          f"screenshots in {args.screenshots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
