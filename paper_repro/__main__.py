"""``python -m paper_repro list | run NAME [--quick] | all [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time

import paper_repro
from paper_repro import _common


def available() -> dict[str, str]:
    """Reproduction names and titles (first docstring line), discovered from this package."""
    out = {}
    for info in pkgutil.iter_modules(paper_repro.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"paper_repro.{info.name}")
        if hasattr(mod, "run"):
            out[info.name] = (mod.__doc__ or info.name).strip().splitlines()[0]
    return dict(sorted(out.items()))


def run_one(name: str, quick: bool) -> bool:
    mod = importlib.import_module(f"paper_repro.{name}")
    _common.set_quick(quick)
    print(f"=== {name}{' (quick)' if quick else ''}", flush=True)
    t0 = time.perf_counter()
    report = mod.run(quick=quick)
    path = report.write()
    print(report.markdown)
    print("\nVerdict:")
    print(report.verdict())
    print(f"\nwrote {path}" + "".join(f"\nwrote {p}" for p in report.figures))
    print(f"({time.perf_counter() - t0:.1f} s)\n", flush=True)
    return report.holds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_repro", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the reproductions")
    p_run = sub.add_parser("run", help="run one reproduction")
    p_run.add_argument("name")
    p_run.add_argument("--quick", action="store_true", help="smaller problems, about a minute")
    p_all = sub.add_parser("all", help="run every reproduction")
    p_all.add_argument("--quick", action="store_true", help="smaller problems, about a minute each")
    args = parser.parse_args(argv)

    names = available()
    if args.cmd == "list":
        width = max(map(len, names), default=0)
        for name, title in names.items():
            print(f"{name:<{width}}  {title}")
        return 0
    if args.cmd == "run":
        if args.name not in names:
            parser.error(f"unknown reproduction {args.name!r}; choose from: {', '.join(names)}")
        run_one(args.name, args.quick)
        return 0
    summary = {name: run_one(name, args.quick) for name in names}
    print("=== summary")
    for name, ok in summary.items():
        status = "all claims hold" if ok else "some claims do not hold or are inconclusive"
        print(f"{name:<28} {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
