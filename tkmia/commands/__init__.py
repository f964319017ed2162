"""Sub-commands of the ``tkmia`` command line, one module each (see :mod:`tkmia.cli`)."""
