"""Progress bars only on a terminal.

A tqdm bar written to a log file or pipe (launch, CI, ``make demo > log``) floods it with
carriage-return updates (~1,400 in one demo log). tqdm's ``disable=None`` means "off unless the
output is a TTY"; every tqdm call of the package must pass it (or an expression choosing between
it and ``True``).
"""
from __future__ import annotations

import ast
import io
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "vl2spike_ros").rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py"))


def _tqdm_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == "tqdm"]


def _allows_tty_check(call: ast.Call) -> bool:
    """``disable=`` is given and can evaluate to None (tqdm's TTY check)."""
    kw = next((k for k in call.keywords if k.arg == "disable"), None)
    return kw is not None and any(isinstance(n, ast.Constant) and n.value is None
                                  for n in ast.walk(kw.value))


def test_every_tqdm_bar_is_off_when_not_a_terminal():
    bad, n = [], 0
    for path in SOURCES:
        for call in _tqdm_calls(ast.parse(path.read_text())):
            n += 1
            if not _allows_tty_check(call):
                bad.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert n >= 5, "tqdm calls not found: did the scan break?"
    assert not bad, "tqdm without disable=None (bars flood non-terminal logs): " + ", ".join(bad)


def test_the_check_catches_a_bar_without_it():
    tree = ast.parse("tqdm(x, desc='a')\ntqdm(x, disable=not show)\ntqdm(x, disable=None)\n"
                     "tqdm(x, disable=None if show else True)\n")
    assert [_allows_tty_check(c) for c in _tqdm_calls(tree)] == [False, False, True, True]


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_disable_none_writes_only_to_a_terminal():
    for tty, expect_output in ((False, False), (True, True)):
        out = _Stream(tty)
        for _ in tqdm(range(100), file=out, disable=None, mininterval=0):
            pass
        assert bool(out.getvalue()) == expect_output, tty
