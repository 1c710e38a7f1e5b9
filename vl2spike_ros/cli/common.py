"""Shared pieces of the ``vl2spike`` subcommands: help, JSON output, matching options."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vl2spike_ros.vpr.acceptance import DEFAULT_MATCH_MARGIN
from vl2spike_ros.vpr.matching import (DEFAULT_MATCH_THRESHOLD, DEFAULT_SEQUENCE_VELOCITIES,
                                       VELOCITIES_HELP, parse_velocities)

STDOUT = "-"  # ``--json -``: the JSON goes to stdout (and the summary line to stderr)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help formatter that appends ``(default: X)`` to an argument's help text.

    Not when the default is unset (None, False for switches, an empty list) or the text already
    states it ("(default ...").
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS
        if unset or default == [] or "(default" in text or "%(default)" in text:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose help shows defaults; its subparsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def write_json_output(path: str | None, data: Any) -> None:
    """Write ``data`` to ``path`` atomically, or to stdout when ``path`` is ``-``."""
    from vl2spike_ros.atomic import write_json_atomic

    if path == STDOUT:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif path:
        write_json_atomic(path, data)


def print_summary(line: str, json_path: str | None) -> None:
    """Print the one-line summary: stdout, or stderr when stdout carries the JSON."""
    print(line, file=sys.stderr if json_path == STDOUT else sys.stdout)


def _velocities(text: str) -> tuple[float, ...]:
    try:
        return parse_velocities(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_matching_options(parser: argparse.ArgumentParser, threshold: bool = True) -> None:
    """Add ``--seq-velocities``, ``--margin`` (and ``--threshold``): the node's matching settings.

    The defaults are the node's (``sequence_velocities``, ``match_margin``,
    ``match_threshold``), so replay and eval accept exactly what the node accepts.
    """
    parser.add_argument("--seq-velocities", type=_velocities, metavar="V",
                        default=_velocities(DEFAULT_SEQUENCE_VELOCITIES),
                        help=VELOCITIES_HELP + " (the node's sequence_velocities)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MATCH_MARGIN,
                        help="acceptance margin (the node's match_margin; its default reached "
                             "95 %% precision on Nordland validation places)")
    if threshold:
        parser.add_argument("--threshold", type=float, default=DEFAULT_MATCH_THRESHOLD,
                            help="cosine floor for accepting a match (the node's "
                                 "match_threshold)")


def acceptance_summary(acc: dict) -> str:
    """``"K accepted, precision P% recall R%"`` from an ``acceptance`` metrics dict."""
    prec = "n/a" if acc.get("precision") is None else f"{acc['precision']:.1f}%"
    rec = "n/a" if acc.get("recall") is None else f"{acc['recall']:.1f}%"
    return f"{acc['accepted']} accepted, precision {prec} recall {rec}"
