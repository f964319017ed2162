"""The book layer's sub-commands of ``tkmia`` (``run``, ``classroom``), registered as the
``tkmia.commands`` entry points of ``pyproject.toml`` (see :mod:`tkmia.cli`).

Each module first calls :func:`require` with what it needs, so that in a core-only install the
command still shows and names the extra to install instead of failing half-way.
"""

from __future__ import annotations

import importlib.util


def require(extra: str, *modules: str) -> None:
    """Raise ``ModuleNotFoundError`` naming ``pip install 'tkmia[extra]'`` when one of ``modules``
    cannot be found (found, not imported: cheap enough for every ``tkmia`` start)."""
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ModuleNotFoundError, ValueError):  # a finder that refuses it, a broken parent
            found = False
        if not found:
            raise ModuleNotFoundError(
                f"needs the {extra} extra, which is not installed (no module {name!r}); install it with: "
                f"pip install 'tkmia[{extra}]'", name=name)
