"""The ``vl2spike`` command line.

Subcommands live in modules of this package named ``cmd_<name>.py``; each defines
``register(subparsers) -> None`` that adds its parser and sets ``func`` (a callable taking the
parsed namespace and returning an exit code). Heavy imports happen inside the handlers so that
``vl2spike --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from vl2spike_ros import __version__
from vl2spike_ros.cli.common import Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(  # help texts show defaults, in every subcommand too
        prog="vl2spike",
        description="Spikformer place recognition distilled from a vision-language model.",
    )
    parser.add_argument("--version", action="version", version=f"vl2spike_ros {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(ns.func(ns) or 0)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        # User-facing errors: one clear line, non-zero exit, no traceback.
        logging.getLogger("vl2spike").debug("error", exc_info=True)
        print(f"vl2spike {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
