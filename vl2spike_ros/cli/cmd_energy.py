"""``vl2spike energy``: student vs teacher energy per image (firing rates, SOPs, MACs)."""
from __future__ import annotations

from vl2spike_ros.bench import energy


def register(subparsers) -> None:
    """Add ``vl2spike energy`` (the report lives in :mod:`vl2spike_ros.bench.energy_report`)."""
    energy.add_parser(subparsers)
