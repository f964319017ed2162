"""Attacks on top-k multi-label classifiers, sharing one batched engine.

``get(name)`` returns the class of a method by its name, e.g. ``get("tkmia")``.
"""

from __future__ import annotations

from tkmia.attacks.engine import PARAMETRISATIONS, Attack, AttackResult
from tkmia.attacks.tkmia import LAMBDA_MODES, TkMIA

__all__ = ["Attack", "AttackResult", "TkMIA", "REGISTRY", "METHODS", "get", "LAMBDA_MODES",
           "PARAMETRISATIONS"]

#: method name -> attack class
REGISTRY: dict[str, type[Attack]] = {cls.name: cls for cls in (TkMIA,)}
#: the method names, in the order of the paper's tables
METHODS: tuple[str, ...] = tuple(REGISTRY)


def get(name: str) -> type[Attack]:
    """The attack class registered under ``name`` (one of :data:`METHODS`)."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attack method {name!r}; known methods: {list(METHODS)}") from None
