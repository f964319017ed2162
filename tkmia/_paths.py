"""Where tkmia keeps generated data, trained victims and experiment results."""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def home() -> Path:
    """The folder for generated datasets, victims and results.

    ``$TKMIA_HOME`` when set; else ``data/`` of the source checkout when tkmia runs from one
    (an editable install); else ``~/.cache/tkmia``.
    """
    env = os.environ.get("TKMIA_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if (_REPO / "_config.yml").exists() and (_REPO / "tkmia").is_dir():
        return _REPO / "data"
    return Path.home() / ".cache" / "tkmia"
