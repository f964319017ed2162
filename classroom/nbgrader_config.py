"""nbgrader configuration of the tkmia course (book/exercises.md, "Grading with nbgrader").

Run nbgrader from this folder, with the project's environment active (``source ../.venv/bin/activate``):
``source/<id>/<id>.ipynb`` are links to ``../notebooks/<id>.ipynb``, the notebooks the book renders.
"""

from tkmia.book.classroom import configure_course

configure_course(get_config(), timeout=30)  # noqa: F821 (get_config: provided by nbgrader)
