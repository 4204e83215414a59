"""``python -m benchmarks [NAME ...] [--quick]``: run the named benchmarks (all by default)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import benchmarks
from benchmarks._common import machine


def available() -> list[str]:
    return sorted(i.name for i in pkgutil.iter_modules(benchmarks.__path__)
                  if not i.name.startswith("_"))


def main(argv=None) -> int:
    names = available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {names})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {names}")
    print(f"# machine: {machine()}\n", flush=True)
    for name in args.names or names:
        print(f"## {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main(quick=args.quick)
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
