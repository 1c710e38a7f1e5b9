"""Benchmarks: each module defines ``register(subparsers)`` for ``vl2spike bench <name>``."""
