"""Shared pieces of the ``vl2spike`` subcommands: help formatting and JSON output."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

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
