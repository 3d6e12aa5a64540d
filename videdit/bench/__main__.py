"""Dispatch `python -m videdit.bench NAME ...` to videdit.bench.NAME.main(argv)."""
from __future__ import annotations

import importlib
import pkgutil
import sys

import videdit.bench as _pkg


def _available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(_pkg.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = _available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m videdit.bench NAME [options]\n\nbenchmarks: " + ", ".join(names))
        return 0
    name = argv.pop(0)
    if name not in names:
        print(f"unknown benchmark {name!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"videdit.bench.{name}")
    return int(module.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
