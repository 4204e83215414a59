"""Shared helpers for reproductions: the results folder, Markdown tables and verdicts."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

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


@dataclasses.dataclass
class Report:
    """What a reproduction found: a Markdown body and whether each claim held."""

    name: str
    title: str
    markdown: str
    claims: list[tuple[str, bool]]  # (claim as the paper states it, did it hold here)
    figures: list[Path] = dataclasses.field(default_factory=list)

    @property
    def holds(self) -> bool:
        return all(ok for _, ok in self.claims)

    def verdict(self) -> str:
        lines = [f"- [{'holds' if ok else 'DOES NOT HOLD'}] {claim}" for claim, ok in self.claims]
        return "\n".join(lines)

    def write(self) -> Path:
        path = output_dir() / f"{self.name}.md"
        figs = "".join(f"\n![{p.stem}]({p.name})\n" for p in self.figures)
        path.write_text(f"# {self.title}\n\n{self.markdown}\n\n## Verdict\n\n{self.verdict()}\n"
                        f"{figs}", encoding="utf8")
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
