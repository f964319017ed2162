"""Attacks on top-k multi-label classifiers, sharing one batched engine.

``get(name)`` returns the class of a method by its name, e.g. ``get("tkmia")``; the paper's methods
(:data:`METHODS`) are :class:`TkMIA` (``"tkmia"``) and its baselines :class:`TkMLAPU`
(``"tkml_ap_u"``), :class:`MLCWU` (``"ml_cw_u"``) and :class:`KFool` (``"kfool"``); the book's
variants (:data:`VARIANTS`, part "Open questions") are :class:`TkMIAExact` (``"tkmia_exact"``, the
unrelaxed loss) and :class:`TkMIAMargin` (``"tkmia_margin"``, adaptive to a margin monitor).
"""

from __future__ import annotations

from tkmia.attacks.engine import PARAMETRISATIONS, Attack, AttackResult
from tkmia.attacks.kfool import KFool
from tkmia.attacks.ml_cw_u import MLCWU
from tkmia.attacks.tkmia import LAMBDA_MODES, TkMIA
from tkmia.attacks.tkmia_exact import TkMIAExact
from tkmia.attacks.tkmia_margin import TkMIAMargin
from tkmia.attacks.tkml_ap_u import TkMLAPU

__all__ = ["Attack", "AttackResult", "TkMIA", "TkMLAPU", "MLCWU", "KFool", "TkMIAExact", "TkMIAMargin",
           "REGISTRY", "METHODS", "VARIANTS", "get", "LAMBDA_MODES", "PARAMETRISATIONS"]

#: method name -> attack class (the paper's methods, then the book's variants)
REGISTRY: dict[str, type[Attack]] = {
    cls.name: cls for cls in (TkMIA, TkMLAPU, MLCWU, KFool, TkMIAExact, TkMIAMargin)
}
#: the paper's method names, in the order of its tables
METHODS: tuple[str, ...] = ("tkmia", "tkml_ap_u", "ml_cw_u", "kfool")
#: the variants the book adds (not in the paper's tables); every name of REGISTRY is runnable
VARIANTS: tuple[str, ...] = tuple(name for name in REGISTRY if name not in METHODS)


def get(name: str) -> type[Attack]:
    """The attack class registered under ``name`` (one of :data:`REGISTRY`)."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attack method {name!r}; known methods: {list(REGISTRY)}") from None
