"""tkmia: imperceptible adversarial perturbations toward top-k multi-label learning.

The reproducible companion to Sun, Xu, Wang, Huang, *When Measures are Unreliable* (ACM MM 2023).
Floors, from the ground up (nothing imports a higher floor):

1. :mod:`tkmia.metrics`, :mod:`tkmia.relaxation` -- pure functions of score tensors.
2. :mod:`tkmia.selection`, :mod:`tkmia.attacks` -- who is attacked, and how.
3. :mod:`tkmia.data`, :mod:`tkmia.models`, :mod:`tkmia.training`, :mod:`tkmia.profiles`.
4. :mod:`tkmia.experiments`, :mod:`tkmia.report`, :mod:`tkmia.plots`.
5. :mod:`tkmia.cli` and the notebooks.
"""

__version__ = "0.1.0"
