"""The book layer's sub-commands of ``tkmia`` (``run``, ``classroom``), registered as the
``tkmia.commands`` entry points of ``pyproject.toml`` (see :mod:`tkmia.cli`)."""
