"""``vpr_node`` start-up without a running node.

Command line, params files, unknown keys, the no-frame watchdog's reasons, and the console
script's ``--help`` / one-line errors.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vl2spike_ros.ros import startup
from vl2spike_ros.ros.params import PARAM_SPECS, SPEC_BY_NAME
from vl2spike_ros.ros.watchdog import (COMPRESSED, IMAGE, FrameWatchdog, no_frame_reason,
                                       ros_type_name)

ROOT = Path(__file__).resolve().parents[1]


def test_command_line_split_at_ros_args():
    cl = startup.parse_command_line(["--ros-args", "-r", "__ns:=/r1", "--params-file", "a.yaml",
                                     "-p", "top_k:=3", "--", "x", "--ros-args",
                                     "--params-file", "b.yaml"])
    assert cl.params_files == ("a.yaml", "b.yaml") and cl.extra == ("x",) and not cl.help
    assert startup.parse_command_line(["--help"]).help
    assert startup.parse_command_line(["-h", "--ros-args", "-p", "a:=1"]).help
    assert not startup.parse_command_line(["--ros-args", "-p", "a:=1"]).help
    with pytest.raises(startup.StartupError, match="--params-file"):
        startup.parse_command_line(["--ros-args", "--params-file"])


def test_usage_lists_every_parameter_with_default():
    text = startup.usage_text()
    assert text.startswith("usage: vpr_node")
    for spec in PARAM_SPECS:
        assert f"  {spec.name} ({spec.type}, default " in text, spec.name
    assert "top_k (integer, default 5, 1 .. 100)" in text
    assert max(len(line) for line in text.splitlines()) <= 99


@pytest.mark.parametrize("content,expect", [
    ("/**/vpr_node:\n  ros__parameters:\n    top_k: [1,\n", "invalid YAML at line 4"),
    ("/**/vpr_node:\n  ros__parameters:\n\ttop_k: 3\n", "invalid YAML at line 3"),
    ("- a\n- b\n", "got list"),
    ("/**/vpr_node:\n  top_k: 3\n", "needs a 'ros__parameters:' mapping"),
])
def test_malformed_params_files_give_one_line(tmp_path, content, expect):
    f = tmp_path / "p.yaml"
    f.write_text(content)
    with pytest.raises(startup.StartupError) as info:
        startup.check_params_files([str(f)])
    msg = str(info.value)
    assert str(f) in msg and expect in msg and "\n" not in msg, msg
    with pytest.raises(startup.StartupError, match="nope.yaml not found"):
        startup.check_params_files([str(tmp_path / "nope.yaml")])


def test_packaged_params_file_passes_the_check():
    (data,) = startup.check_params_files([str(ROOT / "config" / "vpr_node.yaml")])
    assert startup.skipped_sections([("f", data)], "/robot1/vpr_node") == []


@pytest.mark.parametrize("key,fqn,applies", [
    ("/**/vpr_node", "/vpr_node", True), ("/**/vpr_node", "/robot1/vpr_node", True),
    ("/**/vpr_node", "/a/b/vpr_node", True), ("/**", "/robot1/vpr_node", True),
    ("vpr_node", "/vpr_node", True), ("vpr_node", "/robot1/vpr_node", False),
    ("/robot1/vpr_node", "/robot1/vpr_node", True), ("/*/vpr_node", "/robot1/vpr_node", True),
    ("/*/vpr_node", "/vpr_node", False), ("/**/other", "/robot1/vpr_node", False),
])
def test_params_file_keys_match_like_rcl(key, fqn, applies):
    assert startup.key_applies(key, fqn) == applies


def test_sections_skipped_in_a_namespace_are_reported():
    data = {"vpr_node": {"ros__parameters": {"top_k": 3, "map_dir": "/m"}},
            "other_node": {"ros__parameters": {"x": 1}}}
    (warning,) = startup.skipped_sections([("site.yaml", data)], "/robot1/vpr_node")
    assert "site.yaml" in warning and "'vpr_node'" in warning and "2 parameter(s)" in warning
    assert "/**/vpr_node" in warning
    assert startup.skipped_sections([("site.yaml", data)], "/vpr_node") == []


def test_unknown_parameters_named_with_suggestions():
    declared = list(SPEC_BY_NAME)
    ok = ["top_k", "use_sim_time", "qos_overrides./image.subscription.depth"]
    assert startup.unknown_parameters(ok, declared) is None
    msg = startup.unknown_parameters(["topk", "match_treshold", "zzz", "top_k"], declared)
    assert "topk (did you mean top_k?)" in msg
    assert "match_treshold (did you mean match_threshold?)" in msg and "zzz" in msg


def test_rcl_error_text_is_one_line_without_source_locations():
    exc = RuntimeError("failed to initialize rcl: Couldn't parse params file: '--params-file "
                       "/x.yaml'. Error: Error parsing a event near line 3, at "
                       "/project/src/parse.c:776, at /project/src/rcl/arguments.c:415")
    text = startup.rcl_error_text(exc)
    assert text.endswith("near line 3") and "/x.yaml" in text and ".c:" not in text


def test_watchdog_measures_silence_since_activation_or_last_frame():
    w = FrameWatchdog()
    assert w.silence(100.0, 0) == 0.0  # disarmed
    w.arm(10.0, 5)
    assert w.silence(12.5, 5) == pytest.approx(2.5) and not w.seen_frame
    assert w.silence(13.0, 6) == 0.0 and w.seen_frame  # a frame arrived
    assert w.silence(20.0, 6) == pytest.approx(7.0)
    w.disarm()
    assert w.silence(30.0, 6) == 0.0


def test_no_frame_reasons_name_the_publishers_message_types():
    msgs = pytest.importorskip("sensor_msgs.msg")
    Image, CompressedImage = msgs.Image, msgs.CompressedImage
    assert ros_type_name(Image) == IMAGE and ros_type_name(CompressedImage) == COMPRESSED
    nobody = no_frame_reason("/r/image", IMAGE, [], 5.2, False)
    assert "/r/image" in nobody and "since activation" in nobody and "nobody publishes" in nobody
    wrong = no_frame_reason("/cam", IMAGE, [COMPRESSED, COMPRESSED], 6.0, False)
    assert f"published as {COMPRESSED}" in wrong and "compressed_input: true" in wrong
    wrong = no_frame_reason("/cam", COMPRESSED, [IMAGE], 6.0, True)
    assert "compressed_input: false" in wrong and "for 6.0 s" in wrong
    same = no_frame_reason("/cam", IMAGE, [IMAGE], 6.0, True)
    assert "1 publisher(s) of sensor_msgs/msg/Image" in same


def _vpr_node() -> str:
    exe = Path(sys.executable).parent / "vpr_node"
    if not exe.is_file():
        pytest.skip("vpr_node console script not installed (make setup)")
    return str(exe)


def test_console_script_help_exits_0_without_starting_ros(tmp_path, ros_env):
    res = subprocess.run([_vpr_node(), "--help"], env={**os.environ, **ros_env},
                         capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: vpr_node") and "no_frame_warn_s" in res.stdout
    assert res.stderr == ""


def test_console_script_malformed_params_file_one_line_exit_2(tmp_path, ros_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**/vpr_node:\n  ros__parameters:\n    top_k: [1,\n")
    res = subprocess.run([_vpr_node(), "--ros-args", "--params-file", str(bad)],
                         env={**os.environ, **ros_env}, capture_output=True, text=True,
                         timeout=120)
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 2, out
    assert len(out.splitlines()) == 1 and "Traceback" not in out, out
    assert str(bad) in out and "line 4" in out


def test_prepare_turns_every_start_up_problem_into_one_line(tmp_path, capsys):
    calls = []
    assert startup.prepare(["vpr_node", "--help"], calls.append) == (0, [])
    assert capsys.readouterr().out.startswith("usage: vpr_node") and calls == []

    assert startup.prepare(["vpr_node", "stray"], calls.append)[0] == 2
    assert "unrecognized argument(s): stray" in capsys.readouterr().err and calls == []

    def rcl_fails(argv):
        raise RuntimeError("failed to initialize rcl: Couldn't parse parameter override rule: "
                           "'-p top_k', at /project/src/rcl/arguments.c:352")

    assert startup.prepare(["vpr_node", "--ros-args", "-p", "top_k"], rcl_fails)[0] == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'-p top_k'" in err and ".c:" not in err, err

    good = tmp_path / "good.yaml"
    good.write_text("/**/vpr_node:\n  ros__parameters:\n    top_k: 3\n")
    argv = ["vpr_node", "--ros-args", "--params-file", str(good)]
    code, files = startup.prepare(argv, calls.append)
    assert code is None and calls == [argv]
    assert files == [(str(good), {"/**/vpr_node": {"ros__parameters": {"top_k": 3}}})]
