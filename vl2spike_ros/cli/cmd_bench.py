"""``vl2spike bench <name>``: benchmarks (not tests).

Each benchmark is a module ``vl2spike_ros/bench/<name>.py`` defining ``register(subparsers)``.
"""
from __future__ import annotations

import importlib
import pkgutil


def register(subparsers) -> None:
    import vl2spike_ros.bench as bench_pkg

    parser = subparsers.add_parser("bench", help="run a benchmark and write its JSON/plots")
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(bench_pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"vl2spike_ros.bench.{info.name}").register(sub)
