"""Dispatch `python -m benchmarks NAME ...` to benchmarks.NAME.main(argv)."""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

NOT_BENCHMARKS = {"common"}  # shared helpers, not runnable


def available() -> list[str]:
    names = (m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]))
    return sorted(n for n in names if not n.startswith("_") and n not in NOT_BENCHMARKS)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m benchmarks NAME [options]   (or: python benchmarks/NAME.py [options])\n\n"
              "benchmarks: " + ", ".join(names))
        return 0
    name = argv.pop(0)
    if name not in names:
        print(f"unknown benchmark {name!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    return int(module.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
