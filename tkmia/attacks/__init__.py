"""Attacks on top-k multi-label classifiers, sharing one batched engine.

``get(name)`` returns the class of a method by its name, e.g. ``get("tkmia")``; the methods are
:class:`TkMIA` (``"tkmia"``) and the paper's baselines :class:`TkMLAPU` (``"tkml_ap_u"``),
:class:`MLCWU` (``"ml_cw_u"``) and :class:`KFool` (``"kfool"``).
"""

from __future__ import annotations

from tkmia.attacks.engine import PARAMETRISATIONS, Attack, AttackResult
from tkmia.attacks.kfool import KFool
from tkmia.attacks.ml_cw_u import MLCWU
from tkmia.attacks.tkmia import LAMBDA_MODES, TkMIA
from tkmia.attacks.tkml_ap_u import TkMLAPU

__all__ = ["Attack", "AttackResult", "TkMIA", "TkMLAPU", "MLCWU", "KFool", "REGISTRY", "METHODS",
           "get", "LAMBDA_MODES", "PARAMETRISATIONS"]

#: method name -> attack class
REGISTRY: dict[str, type[Attack]] = {cls.name: cls for cls in (TkMIA, TkMLAPU, MLCWU, KFool)}
#: the method names, in the order of the paper's tables
METHODS: tuple[str, ...] = tuple(REGISTRY)


def get(name: str) -> type[Attack]:
    """The attack class registered under ``name`` (one of :data:`METHODS`)."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attack method {name!r}; known methods: {list(METHODS)}") from None
