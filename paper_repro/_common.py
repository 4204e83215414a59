"""Shared helpers for reproductions: the results folder, Markdown tables and verdicts."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
_output = RESULTS


def set_quick(quick: bool) -> None:
    """Quick runs write under ``results/quick/`` so they never overwrite the full-run results."""
    global _output
    _output = RESULTS / "quick" if quick else RESULTS


def output_dir() -> Path:
    """Where tables and figures of the current run go (created on first use)."""
    _output.mkdir(parents=True, exist_ok=True)
    return _output


HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"
Verdict = Union[bool, str]  # True / False, or one of HOLDS, FAILS, INCONCLUSIVE


def _as_verdict(v: Verdict) -> str:
    if isinstance(v, str):
        if v not in (HOLDS, FAILS, INCONCLUSIVE):
            raise ValueError(f"a verdict is a bool or one of {HOLDS!r}, {FAILS!r}, {INCONCLUSIVE!r}; got {v!r}")
        return v
    return HOLDS if bool(v) else FAILS


def decide(difference: float, margin: float) -> str:
    """A verdict on ``difference > 0`` that noise cannot decide.

    ``difference`` is signed so that positive means the claim holds (e.g. ``ours_error - peer_error``
    negated when lower is better); ``margin`` is the run-to-run spread it must clear (a bootstrap or
    seed-to-seed half-width, or the spread of repeated timings). Beyond ``+margin`` the claim holds,
    below ``-margin`` it does not, in between the run cannot tell.
    """
    if not np.isfinite(difference) or not np.isfinite(margin) or margin < 0:
        return INCONCLUSIVE
    if difference > margin:
        return HOLDS
    if difference < -margin:
        return FAILS
    return INCONCLUSIVE


def bootstrap_interval(samples: Any, statistic=np.mean, *, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over the first axis of ``samples``.

    Paired comparisons pass per-item differences (e.g. per-user error of A minus B), so the interval is
    that of the difference itself.
    """
    x = np.asarray(samples)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    stats = np.array([statistic(x[i]) for i in idx])
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def provenance() -> str:
    """The library version and git commit that produced a result (``+dirty`` when the tree had edits)."""
    from importlib import metadata
    try:
        version = metadata.version("jaxfact")
    except metadata.PackageNotFoundError:  # run from a checkout without installing
        version = "unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        # The results folder is what a run writes (its figures are saved before this stamp), not
        # code that could change a result, so edits there do not make the tree dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)paper_repro/results"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return f"jaxfact {version}, commit {commit}"


@dataclasses.dataclass
class Report:
    """What a reproduction found: a Markdown body and a verdict on each claim.

    A claim's verdict is ``True``/``False`` for a check that has no noise (a count, a formula), or the
    string returned by :func:`decide` for one that compares measured numbers.
    """

    name: str
    title: str
    markdown: str
    claims: list[tuple[str, Verdict]]  # (claim as the paper states it, what this run found)
    figures: list[Path] = dataclasses.field(default_factory=list)

    @property
    def holds(self) -> bool:
        return all(_as_verdict(v) == HOLDS for _, v in self.claims)

    def verdicts(self) -> list[str]:
        return [_as_verdict(v) for _, v in self.claims]

    def verdict(self) -> str:
        label = {HOLDS: "holds", FAILS: "DOES NOT HOLD", INCONCLUSIVE: "inconclusive"}
        return "\n".join(f"- [{label[_as_verdict(v)]}] {claim}" for claim, v in self.claims)

    def write(self) -> Path:
        path = output_dir() / f"{self.name}.md"
        figs = "".join(f"\n![{p.stem}]({p.name})\n" for p in self.figures)
        path.write_text(f"# {self.title}\n\n{self.markdown}\n\n## Verdict\n\n{self.verdict()}\n"
                        f"{figs}\n_Produced by {provenance()}._\n", encoding="utf8")
        return path


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats are printed with 4 significant digits."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def figure_path(name: str) -> Path:
    return output_dir() / f"{name}.png"


def pyplot():
    """Matplotlib's pyplot with a non-interactive backend (the reproductions run headless)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("paper_repro draws figures with matplotlib: "
                          "`pip install 'jaxfact[repro]'`") from e
    return plt


def all_hold(verdicts: Sequence[Verdict]) -> str:
    """One verdict for a claim made of several comparisons (every window, every method): it holds
    if each part holds, does not hold if any part does not, and is inconclusive otherwise."""
    found = [_as_verdict(v) for v in verdicts]
    if all(v == HOLDS for v in found):
        return HOLDS
    if any(v == FAILS for v in found):
        return FAILS
    return INCONCLUSIVE


def mean_se(samples: Any) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN with fewer than two samples): the spread of a
    mean over folds or seeds."""
    x = np.asarray(samples, np.float64)
    se = float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
    return float(np.mean(x)), se
