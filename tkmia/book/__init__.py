"""The book layer: what turns the core library into the Jupyter Book and its classroom.

It sits on the core (:mod:`tkmia.metrics` up to :mod:`tkmia.plots`) and nothing in the core imports
it (the ``import-linter`` contracts of ``pyproject.toml``, checked by ``make test``). It needs the
``book`` extra (``pip install -e ".[book]"``; papermill, nbformat, ipykernel, nbgrader).

- :mod:`tkmia.book.runner`: the notebook runner (typed parameters, execution and its cache,
  ``tkmia run`` reruns, :func:`~tkmia.book.runner.glue`); ``python -m tkmia.book execute``.
- :mod:`tkmia.book.classroom`: the exercises as an nbgrader course (``tkmia classroom``).
- :mod:`tkmia.book.chapters`: the logic and figures of single chapters.
- :mod:`tkmia.book.commands`: the ``tkmia run`` and ``tkmia classroom`` commands, found by the core
  command line through the ``tkmia.commands`` entry points.
"""
