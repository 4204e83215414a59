"""Reproductions of the papers jaxfact implements, our figures beside the published ones.

Each reproduction is a module of this package with a module docstring (its first line is the
title) and ``run(quick: bool) -> Report``; it writes ``NAME.md`` and PNG figures under
``paper_repro/results/`` (full runs, kept in the repository) or ``paper_repro/results/quick/``
(``--quick``). Run ``python -m paper_repro list | run NAME [--quick] | all [--quick]``.
"""
