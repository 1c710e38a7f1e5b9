"""The `vl2spike` command: every subcommand registers, user errors give one line and exit 2."""
from __future__ import annotations

import pytest

from vl2spike_ros.cli import build_parser, main

COMMANDS = {"bag", "bench", "demo", "distill", "energy", "eval", "map", "replay", "teacher", "vpr"}
BENCHES = {"distill", "map", "speed", "vpr"}


def _choices(parser, dest):
    for action in parser._actions:
        if getattr(action, "dest", None) == dest and action.choices:
            return action.choices
    raise AssertionError(f"no subcommands under {dest!r}")


def test_every_subcommand_and_benchmark_is_registered():
    parser = build_parser()
    cmds = _choices(parser, "command")
    assert COMMANDS <= set(cmds)
    assert BENCHES <= set(_choices(cmds["bench"], "bench"))


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_subcommand_help_exits_zero(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: vl2spike" in capsys.readouterr().out


def test_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    rc = main(["eval", "--db", str(tmp_path / "missing_db"), "--queries", str(tmp_path / "q"),
               "--json", str(tmp_path / "out.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("vl2spike eval: error:"), err
    assert "missing_db" in err[0]
    assert not (tmp_path / "out.json").exists()


def test_map_build_refuses_to_overwrite_an_existing_map(tmp_path, capsys):
    out = tmp_path / "map"
    out.mkdir()
    (out / "map.json").write_text("{}")
    rc = main(["map", "build", str(tmp_path / "frames"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--overwrite" in err[0], err
    assert (out / "map.json").read_text() == "{}"  # nothing lost
