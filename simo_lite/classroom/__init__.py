"""Course tooling, apart from the library: exercise checks, student and release copies, grading.

- :mod:`~simo_lite.classroom.checks`: the public auto-checks of the exercises, one module per
  notebook (``simo_lite.checks`` re-exports them for the notebooks);
- :mod:`~simo_lite.classroom.questions`: the concept questions, read from ``notebooks/questions.yaml``
  (no answers: those live in the source notebooks' hidden tests);
- :mod:`~simo_lite.classroom.cells`: nbgrader cell metadata, solution and hidden-test regions;
- :mod:`~simo_lite.classroom.student`: student copies (``python -m simo_lite.student``);
- :mod:`~simo_lite.classroom.assign`: release copies in nbgrader's format, validated both ways
  (``python -m simo_lite.assign``, ``make assignment``);
- :mod:`~simo_lite.classroom.grade`: the offline autograder (``python -m simo_lite.grade``).

Nothing here is imported by ``import simo_lite``.
"""
