"""``vl2spike`` help and output conventions.

Every argument of every subcommand has help text that shows its default, errors name CLI flags,
``eval`` prints a summary (JSON only with ``--json``, to stdout with ``--json -``), and replay's
threshold default is the node's.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from vl2spike_ros.cli import build_parser, main
from vl2spike_ros.cli.common import DefaultsHelpFormatter
from vl2spike_ros.ros.params import SPEC_BY_NAME
from vl2spike_ros.vpr.matching import DEFAULT_MATCH_THRESHOLD


def _walk(parser: argparse.ArgumentParser, path: str = "vl2spike"):
    """(command path, parser) for the parser and all its subparsers."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


def _arguments(parser: argparse.ArgumentParser):
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return [a for a in parser._actions if not isinstance(a, skip)]


def test_every_argument_has_help_that_shows_its_default():
    missing, no_default = [], []
    for path, parser in _walk(build_parser()):
        fmt = DefaultsHelpFormatter(path)
        for action in _arguments(parser):
            name = action.option_strings[-1] if action.option_strings else action.dest
            if not (action.help or "").strip():
                missing.append(f"{path} {name}")
                continue
            default = action.default
            if default is None or isinstance(default, bool) or default == []:
                continue
            text = fmt._expand_help(action)
            if str(default) not in text and "(default" not in text:  # value, or in words
                no_default.append(f"{path} {name} (default {default!r}): {text!r}")
    assert not missing, "arguments without help text:\n" + "\n".join(missing)
    assert not no_default, "help text does not show the default:\n" + "\n".join(no_default)


def test_subcommands_use_the_defaults_formatter():
    for path, parser in _walk(build_parser()):
        assert issubclass(parser.formatter_class, DefaultsHelpFormatter), path


def test_replay_threshold_default_is_the_nodes_match_threshold(capsys):
    assert SPEC_BY_NAME["match_threshold"].default == DEFAULT_MATCH_THRESHOLD
    replay = dict(_walk(build_parser()))["vl2spike replay"]
    action = next(a for a in replay._actions if "--threshold" in a.option_strings)
    assert action.default == DEFAULT_MATCH_THRESHOLD
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    default = re.escape(str(DEFAULT_MATCH_THRESHOLD))
    assert re.search(rf"--threshold THRESHOLD .*\(default: {default}\)", text), text
    for cmd in ("vl2spike replay", "vl2spike eval"):  # the acceptance margin: the node's too
        parser = dict(_walk(build_parser()))[cmd]
        margin = next(a for a in parser._actions if "--margin" in a.option_strings)
        assert margin.default == SPEC_BY_NAME["match_margin"].default


def test_existing_bag_error_names_the_cli_flag(tmp_path, capsys):
    import numpy as np
    import cv2

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    cv2.imwrite(str(imgs / "a.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "bag").mkdir()
    rc = main(["bag", "write", "--images", str(imgs), "--out", str(tmp_path / "bag")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "--overwrite" in err[0] and "overwrite=True" not in err[0], err


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory) -> tuple[Path, Path]:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("eval_sets")
    for side in ("db", "q"):
        (root / side).mkdir()
        for i in range(4):
            img = rng.integers(0, 255, (32, 64), dtype=np.uint8)
            cv2.imwrite(str(root / side / f"{i:03d}.png"), img)
    return root / "db", root / "q"


def _eval(capsys, db: Path, q: Path, *extra: str) -> tuple[int, str, str]:
    rc = main(["eval", "--db", str(db), "--queries", str(q), "--method", "sad", *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_eval_prints_a_summary_and_json_only_when_asked(tiny_sets, tmp_path, capsys,
                                                        monkeypatch):
    import json

    db, q = tiny_sets
    monkeypatch.chdir(tmp_path)
    rc, out, err = _eval(capsys, db, q)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("4 queries vs 4 places"), out
    rc, out, err = _eval(capsys, db, q, "--json", "-")
    assert rc == 0, err
    data = json.loads(out)  # stdout is only the JSON
    assert data["n_queries"] == 4 and "4 queries vs 4 places" in err
    assert not (tmp_path / "-").exists()
    path = tmp_path / "m.json"
    rc, out, err = _eval(capsys, db, q, "--json", str(path))
    assert rc == 0 and json.loads(path.read_text())["n_db"] == 4
    assert len(out.strip().splitlines()) == 1
