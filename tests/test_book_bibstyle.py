"""The bibliography is labelled the way the text cites it: author and year (book/_ext/tkmia_bibstyle)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pybtex.plugin
import yaml
from pybtex.database import parse_file, parse_string

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import tkmia_bibstyle  # noqa: E402


def _labels(entries) -> list[str]:
    style = pybtex.plugin.find_plugin("pybtex.style.formatting", tkmia_bibstyle.STYLE)()
    return [e.label for e in style.format_entries(entries)]


def test_config_uses_the_author_year_labels_with_author_year_citations():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]
    assert config["local_extensions"]["tkmia_bibstyle"] == "book/_ext"
    assert config["config"]["bibtex_reference_style"] == "author_year"
    assert config["config"]["bibtex_default_style"] == tkmia_bibstyle.STYLE


def test_every_reference_is_labelled_by_author_and_year_sorted_by_author():
    db = parse_file(ROOT / "book" / "references.bib")
    labels = _labels(db.entries.values())
    assert len(labels) == len(db.entries) >= 4
    pattern = r"[A-Z][\w-]+( et al\.| and [A-Z][\w-]+)?, \d{4}[a-z]?"
    assert all(re.fullmatch(pattern, label) for label in labels), labels
    assert "Sun et al., 2023" in labels and labels == sorted(labels)


def test_labels_for_one_two_and_equal_authors_years():
    db = parse_string("""
        @misc{a, author = {Doe, Jane}, title = {One}, year = {2020}}
        @misc{b, author = {Doe, Jane and Roe, Rick}, title = {Two}, year = {2021}}
        @misc{c, author = {Doe, Jane and Roe, Rick}, title = {Three}, year = {2021}}
        @misc{d, author = {van Gogh, Vincent}, title = {Four}}
    """, "bibtex")
    assert _labels(db.entries.values()) == ["Doe, 2020", "Doe and Roe, 2021a", "Doe and Roe, 2021b",
                                            "van Gogh, n.d."]
