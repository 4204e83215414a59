"""Reproductions of the papers jaxfact implements, our figures beside the published ones.

Each reproduction is a module of this package with a module docstring (its first line is the
title) and ``run(quick: bool) -> Report``; it writes ``results/NAME.md`` and PNG figures under
``paper_repro/results/``. Run ``python -m paper_repro list | run NAME [--quick] | all [--quick]``.
"""
