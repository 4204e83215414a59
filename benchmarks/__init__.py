"""Speed and accuracy against the tools users would otherwise pick, as ratios from one run.

Each benchmark is a module of this package with ``main(quick: bool) -> None`` that prints its table.
Run ``python -m benchmarks [NAME ...] [--quick]``.
"""
