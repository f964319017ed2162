"""Sphinx extension: the bibliography labelled the way the text cites, by author and year.

With ``bibtex_reference_style: author_year`` the text reads "Sun et al. (2023)", but pybtex's
default label style would still label the list "[SXWH23]". This registers the pybtex formatting
style ``tkmia_author_year`` (set as ``bibtex_default_style`` in ``_config.yml``): the unsrt entry
format, labels such as "Sun et al., 2023" (one author: "Sun, 2023"; two: "Hu and Ke, 2021"; the
same author names as sphinxcontrib-bibtex's in-text citations), "a", "b" added to tell apart equal
labels, and the list sorted by author, year and title.
"""

from __future__ import annotations

import pybtex.plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle

STYLE = "tkmia_author_year"


def _last_name(person) -> str:
    """A person's last name as printed (prelast "van", last "Gogh"; braces removed)."""
    parts = [*person.prelast_names, *person.last_names]
    return " ".join(parts).replace("{", "").replace("}", "")


def author_year_label(entry) -> str:
    """"Sun et al., 2023" for ``entry`` (a pybtex Entry): the authors' (or editors') last names as
    the text cites them, a comma, the year; "n.d." without a year, the key without persons."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in persons]
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """pybtex label style: :func:`author_year_label`, with a, b, ... where labels repeat."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year_label(e) for e in entries]
        counts = {label: labels.count(label) for label in labels}
        seen: dict[str, int] = {}
        for label in labels:
            if counts[label] == 1:
                yield label
            else:
                seen[label] = seen.get(label, 0) + 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]


class AuthorYearStyle(UnsrtStyle):
    """pybtex formatting style ``tkmia_author_year``: unsrt entries, author-year labels, sorted by
    author, year and title."""

    default_label_style = AuthorYearLabelStyle
    default_sorting_style = "author_year_title"


pybtex.plugin.register_plugin("pybtex.style.formatting", STYLE, AuthorYearStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
