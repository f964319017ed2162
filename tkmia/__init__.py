"""tkmia: imperceptible adversarial perturbations toward top-k multi-label learning.

The reproducible companion to Sun, Xu, Wang, Huang, *When Measures are Unreliable* (ACM MM 2023).
Floors of the core, from the ground up (nothing imports a higher floor; the import-linter contracts
of ``pyproject.toml`` check it):

1. :mod:`tkmia.metrics`, then :mod:`tkmia.relaxation` and :mod:`tkmia.selection`: pure functions of
   score tensors.
2. :mod:`tkmia.attacks`, :mod:`tkmia.data`, :mod:`tkmia.monitoring`; then :mod:`tkmia.profiles`.
3. :mod:`tkmia.training`, :mod:`tkmia.models`, :mod:`tkmia.finetune`, :mod:`tkmia.victims`;
   then :mod:`tkmia.defences`.
4. :mod:`tkmia.experiments`; then :mod:`tkmia.report`, :mod:`tkmia.paper`, :mod:`tkmia.plots`.
5. :mod:`tkmia.commands` and :mod:`tkmia.cli`.

On top sits the book layer, :mod:`tkmia.book` (the ``book`` extra), which the core never imports.
"""

__version__ = "0.1.0"
