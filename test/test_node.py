"""End-to-end tests of ``vpr_node`` with real rclpy over loopback-only DDS.

The node runs as a subprocess through its console script (``--ros-args --params-file``); this
process publishes real Nordland frames and checks the node's answers against the offline
:class:`~vl2spike_ros.vpr.pipeline.VPRPipeline` on the same frames. Every wait has a deadline.
"""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from vl2spike_ros.io.images import array_to_image_msg  # noqa: E402
from vl2spike_ros.bench.ros import fixtures  # noqa: E402
from vl2spike_ros.ros.messages import (FLAG_ACCEPTED, FLAG_BEST, covariance_scale,  # noqa: E402
                                       unpack_candidates)
from vl2spike_ros.vpr.acceptance import EVIDENCE_LENGTH  # noqa: E402

from _node_client import assets_fixture  # noqa: E402,F401 - the `assets` fixture
from _node_client import (  # noqa: E402
    N_PLACES, THRESHOLD, TOP_K, Probe, offline, start_node, stop_node, wait_for)

pytestmark = [pytest.mark.ros, pytest.mark.data, pytest.mark.slow]


@pytest.fixture(scope="module")
def running(assets, ros_env):
    tmp = assets["tmp"]
    proc = start_node(tmp, ros_env, "main", weights=str(assets["weights"]),
                      map_dir=str(assets["map"]), image_topic="test/image", top_k=TOP_K,
                      match_threshold=THRESHOLD, save_map_dir=str(tmp / "saved_map"),
                      pose_topic="test/odom", pose_type="odometry", diagnostics_period_s=0.5,
                      publish_markers=True)
    probe = Probe()
    try:
        wait_for(lambda: probe.pub.get_subscription_count() > 0, 90, "node subscription", proc)
        yield {"proc": proc, "probe": probe, **assets}
    finally:
        probe.close()
        stop_node(proc)
        print((tmp / "main.log").read_text()[-3000:])


def test_matches_agree_with_offline_pipeline(running):
    probe, proc = running["probe"], running["proc"]
    pipe = offline(running["weights"], running["map"])
    frames = list(running["ref"]) + list(running["winter"])
    n_accepted = 0
    for i, frame in enumerate(frames):  # a resend would double a frame in the node's evidence
        stamp, msg = probe.query(array_to_image_msg(frame, "mono8", msg_cls=Image), proc,
                                 resend_s=20.0)
        got = unpack_candidates(msg)
        want = pipe.process(frame)
        assert msg.header.frame_id == "map" and msg.width == TOP_K
        np.testing.assert_array_equal(got["id"], want.ids, err_msg=f"frame {i}")
        np.testing.assert_allclose(got["score"], want.scores, atol=1e-4)
        assert got["flags"][0] & FLAG_BEST
        assert bool(got["flags"][0] & FLAG_ACCEPTED) == want.accepted
        if i < N_PLACES:  # a map frame itself: its own place, accepted once the
            assert got["id"][0] == i  # acceptance evidence has seen EVIDENCE_LENGTH frames
            assert want.accepted == (i >= EVIDENCE_LENGTH - 1)
        np.testing.assert_allclose(got["x"], 10.0 * got["id"])  # line_poses: x = 10 m * id
        if want.accepted:
            n_accepted += 1
            pose = wait_for(lambda: probe.poses.get(stamp), 10, "match pose", proc)
            assert pose.pose.pose.position.x == pytest.approx(10.0 * want.best_id)
            # covariance from the calibrated confidence (validation precision at the margin)
            scale = covariance_scale(want.confidence)
            assert pose.pose.covariance[0] == pytest.approx(scale, rel=1e-3)
        else:  # the pose is published before the candidates: none may come for a rejection
            time.sleep(0.2)
            assert stamp not in probe.poses
    assert n_accepted >= N_PLACES - EVIDENCE_LENGTH + 1


def bad_images() -> list[tuple[str, Image]]:
    good = array_to_image_msg(np.zeros((32, 64), np.uint8), "mono8", msg_cls=Image)
    unknown = array_to_image_msg(np.zeros((32, 64), np.uint8), "mono8", msg_cls=Image)
    unknown.encoding = "yuv_strange"
    trunc = array_to_image_msg(np.zeros((32, 64, 3), np.uint8), "rgb8", msg_cls=Image)
    trunc.data = bytes(trunc.data)[:100]
    zero = Image(height=0, width=0, encoding="rgb8", step=0)
    step = array_to_image_msg(np.zeros((32, 64, 3), np.uint8), "rgb8", msg_cls=Image)
    step.step = 10
    odd_yuv = Image(height=2, width=33, encoding="yuv422", step=66, data=bytes(132))
    bayer_step = Image(height=4, width=8, encoding="bayer_rggb8", step=7, data=bytes(28))
    return [("unknown encoding", unknown), ("truncated", trunc), ("zero size", zero),
            ("step too small", step), ("odd yuv422 width", odd_yuv),
            ("bayer step too small", bayer_step), ("control", good)]


def test_bad_frames_are_skipped_and_counted(running):
    probe, proc = running["probe"], running["proc"]
    bad = [m for name, m in bad_images() if name != "control"]
    for m in bad:
        probe.send(m)
        time.sleep(0.3)  # one at a time: latest-only input would merge them
    frame = array_to_image_msg(running["winter"][3], "mono8", msg_cls=Image)
    stamp, msg = probe.query(frame, proc)
    assert msg.width == TOP_K and proc.poll() is None
    d = wait_for(lambda: (lambda v: v if int(v["bad_frames"]) >= len(bad) else None)(
        probe.latest_diag()), 30, "bad frames in diagnostics", proc)
    assert d["level"] == b"\x01"  # WARN
    for key in ("processing_rate_hz", "latency_ms_p50", "latency_ms_p95", "frames_dropped",
                "mean_firing_rate", "energy_mj_per_frame", "map_size", "match_margin",
                "accepted_precision_validation"):
        assert key in d, key
    assert int(d["map_size"]) == N_PLACES and d["state"] == "active"
    assert float(d["latency_ms_p95"]) > 0 and float(d["mean_firing_rate"]) > 0
    assert float(d["energy_mj_per_frame"]) > 0
    assert {"frames_lost_transport", "frames_missing_estimate"} <= set(d)


def test_frames_above_max_image_pixels_are_bad_frames(running):
    probe, proc = running["probe"], running["proc"]
    assert probe.set_param("max_image_pixels", 32 * 64 - 1).successful
    try:
        before = int(probe.latest_diag()["bad_frames"])
        probe.send(array_to_image_msg(running["winter"][2], "mono8", msg_cls=Image))
        d = wait_for(lambda: (lambda v: v if int(v["bad_frames"]) > before else None)(
            probe.latest_diag()), 30, "a refused frame", proc)
        assert "pixel limit of 2047" in d["message"] and d["level"] == b"\x01"
    finally:
        assert probe.set_param("max_image_pixels", 1 << 24).successful
    _, msg = probe.query(array_to_image_msg(running["winter"][2], "mono8", msg_cls=Image), proc)
    assert msg.width == TOP_K


@pytest.mark.parametrize("name,value", [("top_k", 0), ("top_k", 101), ("match_threshold", 1.5),
                                        ("match_margin", -0.1), ("sequence_velocities", "0"),
                                        ("sequence_velocities", 0.5),
                                        ("max_rate_hz", -1.0), ("device", "gpu"),
                                        ("pose_type", "twist"), ("autostart", False),
                                        ("top_k", 2.5)])
def test_invalid_parameters_are_rejected(running, name, value):
    res = running["probe"].set_param(name, value)
    assert not res.successful, (name, value)


def test_valid_parameter_change_applies_live(running):
    probe, proc = running["probe"], running["proc"]
    assert probe.set_param("top_k", 2).successful
    try:
        _, msg = probe.query(array_to_image_msg(running["ref"][4], "mono8", msg_cls=Image), proc)
        assert msg.width == 2 and unpack_candidates(msg)["id"][0] == 4
    finally:
        assert probe.set_param("top_k", TOP_K).successful


def test_only_the_latest_frame_is_processed_when_slow(running):
    """max_rate_hz 2: of a 40 Hz burst most frames are dropped (counted), the newest wins."""
    probe, proc = running["probe"], running["proc"]
    assert probe.set_param("max_rate_hz", 2.0).successful
    try:
        before = probe.latest_diag()
        stamps, t0 = [], time.monotonic()
        for i in range(40):
            frame = running["ref"][i % N_PLACES]
            stamps.append(probe.send(array_to_image_msg(frame, "mono8", msg_cls=Image)))
            time.sleep(0.025)
        burst_s = time.monotonic() - t0
        wait_for(lambda: probe.cands.get(stamps[-1]), 10, "the newest frame's result", proc)
        assert unpack_candidates(probe.cands[stamps[-1]])["id"][0] == 39 % N_PLACES
        time.sleep(1.0)
        after = probe.latest_diag()
    finally:
        assert probe.set_param("max_rate_hz", 0.0).successful
    received = int(after["frames_received"]) - int(before["frames_received"])
    dropped = int(after["frames_dropped"]) - int(before["frames_dropped"])
    processed = int(after["frames_processed"]) - int(before["frames_processed"])
    answered = sum(s in probe.cands for s in stamps)
    assert received >= 30  # loopback delivers nearly all of them
    allowed = 2 + int(2.0 * burst_s)  # 2 Hz over the burst, plus the first and the newest
    assert processed <= allowed and dropped >= received - allowed, (received, dropped, processed)
    assert answered == processed and processed + dropped <= received


def test_mapping_save_and_reload_services(running):
    from vl2spike_ros.vpr.placemap import PlaceMap

    probe, proc, tmp = running["probe"], running["proc"], running["tmp"]
    odom = Odometry()
    odom.pose.pose.position.x, odom.pose.pose.position.y = 123.0, -4.5
    odom.pose.pose.orientation.w = 1.0
    wait_for(lambda: probe.odom_pub.get_subscription_count() > 0, 30, "odom subscription", proc)
    probe.odom_pub.publish(odom)
    time.sleep(0.5)
    resp = probe.call("mapping", SetBool.Request(data=True))
    assert resp.success, resp.message
    new = running["winter"][7]
    stamp, _ = probe.query(array_to_image_msg(new, "mono8", msg_cls=Image), proc)
    assert probe.call("mapping", SetBool.Request(data=False)).success
    resp = probe.call("save", Trigger.Request())
    assert resp.success, resp.message
    saved = PlaceMap.load(tmp / "saved_map")
    assert len(saved) == N_PLACES + 1
    place = saved.place(N_PLACES)
    assert place["stamp_ns"] == stamp
    assert place["pose"][:2] == [123.0, -4.5] and len(place["pose"]) == 7  # map format
    # the new place is found by its own frame, with the odometry pose
    _, msg = probe.query(array_to_image_msg(new, "mono8", msg_cls=Image), proc)
    got = unpack_candidates(msg)
    assert got["id"][0] == N_PLACES and got["x"][0] == pytest.approx(123.0)
    # reload the original map: back to N places (nothing unsaved: the map was just saved)
    resp = probe.call("reload", Trigger.Request())
    assert resp.success and str(N_PLACES) in resp.message, resp.message
    # places mapped since the last save: reload refused (saying how many), discard_and_reload
    assert probe.call("mapping", SetBool.Request(data=True)).success
    probe.query(array_to_image_msg(running["winter"][8], "mono8", msg_cls=Image), proc)
    assert probe.call("mapping", SetBool.Request(data=False)).success
    resp = probe.call("reload", Trigger.Request())
    assert not resp.success and "1 place(s) mapped since the last save" in resp.message
    _, msg = probe.query(array_to_image_msg(running["winter"][8], "mono8", msg_cls=Image), proc)
    assert unpack_candidates(msg)["id"][0] == N_PLACES  # the unsaved place is still there
    resp = probe.call("discard_reload", Trigger.Request())
    assert resp.success and f"{N_PLACES} places" in resp.message, resp.message
    # an unreadable map is refused and the current map kept
    assert probe.set_param("map_dir", str(tmp / "no_such_map")).successful
    resp = probe.call("reload", Trigger.Request())
    assert not resp.success and "no_such_map" in resp.message
    _, msg = probe.query(array_to_image_msg(running["ref"][2], "mono8", msg_cls=Image), proc)
    assert unpack_candidates(msg)["id"][0] == 2
    assert probe.set_param("map_dir", str(running["map"])).successful


def test_sigterm_exits_cleanly(running):
    assert stop_node(running["proc"], signal.SIGTERM) == 0


# --------------------------------------------------------------------------- startup errors
def _run_to_exit(tmp: Path, ros_env: dict, name: str, **params) -> tuple[int, str]:
    proc = start_node(tmp, ros_env, name, **params)
    try:
        rc = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"{name}: vpr_node kept running despite a startup error")
    return rc, (tmp / f"{name}.log").read_text()


def _corrupt_map(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    text = (dst / "map.json").read_text()
    (dst / "map.json").write_text(text[: len(text) // 2])
    return dst


@pytest.mark.parametrize("case", ["missing_weights", "mismatch", "corrupt_map", "no_map"])
def test_startup_errors_exit_with_one_message(assets, ros_env, case):
    tmp = assets["tmp"]
    params = {"weights": str(assets["weights"]), "map_dir": str(assets["map"]),
              "image_topic": "test/none"}
    expect = ""
    if case == "missing_weights":
        params["weights"], expect = str(tmp / "nope.safetensors"), "nope.safetensors"
    elif case == "mismatch":
        other = fixtures.random_weights(tmp, assets["ref"], seed=7, name="other")
        if not (tmp / "other_map").exists():
            fixtures.build_map(other, assets["ref"], tmp / "other_map")
        params["map_dir"], expect = str(tmp / "other_map"), "different model"
    elif case == "corrupt_map":
        if not (tmp / "corrupt_map").exists():
            _corrupt_map(assets["map"], tmp / "corrupt_map")
        params["map_dir"], expect = str(tmp / "corrupt_map"), "corrupt"
    else:
        params["map_dir"], expect = "", "map_dir"
    rc, out = _run_to_exit(tmp, ros_env, f"err_{case}", **params)
    assert rc == 2, out
    assert "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if "ERROR" in ln or "error" in ln.lower()]
    assert len(errors) == 1, out
    assert expect in errors[0], errors[0]


def test_out_of_range_parameter_file_exits_with_one_message(assets, ros_env):
    rc, out = _run_to_exit(assets["tmp"], ros_env, "err_range", map_dir=str(assets["map"]),
                           top_k=0)
    assert rc == 2 and "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and "top_k" in errors[0], out


# --------------------------------------------------------------------------- lifecycle + JPEG
