"""``vl2spike bench <name>``: benchmarks (not tests).

Each benchmark named in :data:`BENCHES` is a module ``vl2spike_ros/bench/<name>.py`` defining
``register(subparsers)``; the other modules of ``vl2spike_ros.bench`` are their helpers.
"""
from __future__ import annotations

import importlib

BENCHES = ("accept", "distill", "energy", "map", "neuromorphic", "own_route", "speed", "vpr")


def register(subparsers) -> None:
    """Add ``vl2spike bench`` and one sub-command per benchmark."""
    parser = subparsers.add_parser("bench", help="run a benchmark and write its JSON/plots")
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    sub.required = True
    for name in BENCHES:
        importlib.import_module(f"vl2spike_ros.bench.{name}").register(sub)
