"""End-to-end tests of ``vpr_node``: lifecycle, GNSS mapping, load bench, namespaces.

See test_node.py for the set-up (real rclpy over loopback-only DDS, the node as a subprocess).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import CompressedImage, Image, NavSatFix  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from vl2spike_ros.io.images import (array_to_compressed_msg, array_to_image_msg,  # noqa: E402
                                    compressed_msg_to_array)
from vl2spike_ros.ros.messages import FLAG_ACCEPTED, unpack_candidates  # noqa: E402

from _node_client import assets_fixture  # noqa: E402,F401 - the `assets` fixture
from _node_client import (  # noqa: E402
    N_PLACES, THRESHOLD, TOP_K, Probe, node_exe, offline, start_node, stop_node, wait_for)

pytestmark = [pytest.mark.ros, pytest.mark.data, pytest.mark.slow]


def _change_state(probe: Probe, transition_id: int) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = probe.node.create_client(ChangeState, "/vpr_node/change_state")
    probe.clients[f"cs{transition_id}"] = client
    req = ChangeState.Request(transition=Transition(id=transition_id))
    return probe.call(f"cs{transition_id}", req).success


def _state(probe: Probe) -> str:
    from lifecycle_msgs.srv import GetState

    probe.clients.setdefault("gs", probe.node.create_client(GetState, "/vpr_node/get_state"))
    return probe.call("gs", GetState.Request()).current_state.label


def test_lifecycle_managed_node_with_jpeg_input_and_sequences(assets, ros_env):
    """Drive a node with autostart false through lifecycle services; JPEG input.

    Sequence matching over 3 frames gives the same candidates as the offline pipeline fed the
    same frames.
    """
    from lifecycle_msgs.msg import Transition

    tmp = assets["tmp"]
    proc = start_node(tmp, ros_env, "managed", weights=str(assets["weights"]),
                      map_dir=str(assets["map"]), image_topic="test/image", top_k=TOP_K,
                      match_threshold=THRESHOLD, compressed_input=True, autostart=False,
                      sequence_length=3)
    probe = Probe(image_type=CompressedImage)
    try:
        assert wait_for(lambda: _state(probe), 90, "get_state", proc) == "unconfigured"
        assert _change_state(probe, Transition.TRANSITION_CONFIGURE)
        assert _change_state(probe, Transition.TRANSITION_ACTIVATE)
        assert _state(probe) == "active"
        wait_for(lambda: probe.pub.get_subscription_count() > 0, 60, "node subscription", proc)
        garbage = CompressedImage(format="jpeg", data=b"\xff\xd8 definitely not a jpeg")
        probe.send(garbage)
        time.sleep(0.3)
        pipe = offline(assets["weights"], assets["map"], seq_len=3)
        for frame in list(assets["winter"][4:8]) + [assets["ref"][9]]:
            msg = array_to_compressed_msg(frame, "jpeg", quality=85, msg_cls=CompressedImage)
            _, cands = probe.query(msg, proc, resend_s=20.0)  # a resend would double a frame
            want = pipe.process(compressed_msg_to_array(msg))
            got = unpack_candidates(cands)
            np.testing.assert_array_equal(got["id"], want.ids)
            np.testing.assert_allclose(got["score"], want.scores, atol=1e-4)
        assert _change_state(probe, Transition.TRANSITION_DEACTIVATE)
        assert _state(probe) == "inactive"
    finally:
        probe.close()
        rc = stop_node(proc, signal.SIGINT)
    assert rc == 0, (tmp / "managed.log").read_text()


# --------------------------------------------------------------------------- GNSS
def test_navsatfix_mapping_and_match_fix(assets, ros_env):
    """pose_type navsatfix: the first mapped fix becomes the map's origin, later fixes map metres.

    Then every accepted match is also published on vpr/match_fix as the place's lat/lon (the
    inverse conversion), with the covariance of vpr/match_pose; the saved map keeps the origin.
    """
    from vl2spike_ros.io.poses import latlon_to_local, local_to_latlon
    from vl2spike_ros.vpr.placemap import PlaceMap

    tmp = assets["tmp"]
    # in its own namespace: the module's other node may still be running (test selection)
    proc = start_node(tmp, ros_env, "gnss", "-r", "__ns:=/gnss", weights=str(assets["weights"]),
                      map_dir=str(assets["map"]), image_topic="test/image", top_k=TOP_K,
                      match_threshold=THRESHOLD, pose_topic="test/fix", pose_type="navsatfix",
                      save_map_dir=str(tmp / "gnss_map"))
    probe = Probe(node_ns="/gnss/vpr_node", namespace="/gnss")
    fix_pub = probe.node.create_publisher(NavSatFix, "test/fix", 10)
    fixes: dict[int, Any] = {}
    probe.node.create_subscription(NavSatFix, "vpr/match_fix", probe._store(fixes), 50)
    origin, later = (59.9139, 10.7522, 23.0), (59.9143, 10.7530, 25.5)
    try:
        wait_for(lambda: probe.pub.get_subscription_count() > 0, 90, "node subscription", proc)
        wait_for(lambda: fix_pub.get_subscription_count() > 0, 30, "fix subscription", proc)
        for i, (lat, lon, alt) in enumerate((origin, later)):
            gnss = NavSatFix(latitude=lat, longitude=lon, altitude=alt)
            gnss.status.status = gnss.status.STATUS_FIX  # Kilted's default is STATUS_UNKNOWN
            fix_pub.publish(gnss)
            time.sleep(0.5)
            assert probe.call("mapping", SetBool.Request(data=True)).success
            frame = array_to_image_msg(assets["winter"][7 + i], "mono8", msg_cls=Image)
            probe.query(frame, proc, resend_s=20.0)  # a resend would map the frame twice
            assert probe.call("mapping", SetBool.Request(data=False)).success
        assert probe.call("save", Trigger.Request()).success
        saved = PlaceMap.load(tmp / "gnss_map")
        assert saved.geo_origin == origin and len(saved) == N_PLACES + 2
        assert saved.place(N_PLACES)["pose"] == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
        want = latlon_to_local([later[0]], [later[1]], [later[2]], origin)[0]
        np.testing.assert_allclose(saved.place(N_PLACES + 1)["pose"][:3], want, atol=1e-6)
        assert saved.place(N_PLACES + 1)["frame_id"] == "map"
        n_accepted = 0
        for frame in assets["ref"]:
            query = array_to_image_msg(frame, "mono8", msg_cls=Image, frame_id="camera")
            stamp, msg = probe.query(query, proc)
            best = unpack_candidates(msg)[0]
            if not best["flags"] & FLAG_ACCEPTED:
                time.sleep(0.2)  # the fix is published before the candidates: none may come
                assert stamp not in fixes
                continue
            n_accepted += 1
            got = wait_for(lambda: fixes.get(stamp), 10, "match fix", proc)
            pose = wait_for(lambda: probe.poses.get(stamp), 10, "match pose", proc)
            want = local_to_latlon([10.0 * best["id"]], [0.0], [0.0], origin)[0]  # line_poses
            assert (got.latitude, got.longitude, got.altitude) == pytest.approx(want, abs=1e-9)
            assert got.position_covariance[0] == pytest.approx(pose.pose.covariance[0])
            assert got.header.frame_id == "camera"  # the query image's: where it was seen from
        assert n_accepted > 0
    finally:
        probe.close()
        assert stop_node(proc) == 0


def test_load_benchmark_smoke(tmp_path, data_root, ros_env):
    """`make bench-node` path, 2 s at 10 Hz: writes the documented fields with real counts."""
    import json

    out = tmp_path / "node_load.json"
    cmd = [sys.executable, "-m", "vl2spike_ros.bench.ros.load", "--duration", "2", "--rate", "10",
           "--places", "12", "--json", str(out), "--data-root", str(data_root)]
    res = subprocess.run(cmd, env={**os.environ, **ros_env}, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    data = json.loads(out.read_text())
    for key in ("rate_hz", "duration_s", "frames_sent", "frames_processed", "latency_ms_p50",
                "latency_ms_p95", "rss_mb_start", "rss_mb_end"):
        assert key in data, key
    assert data["rate_hz"] == 10.0 and data["frames_sent"] >= 15
    assert 0 < data["frames_processed"] <= data["frames_sent"]
    assert data["latency_ms_p50"] > 0 and data["node_exit_code"] == 0
    assert out.with_suffix(".png").stat().st_size > 0


# --------------------------------------------------------------------------- namespace
def test_namespace_uses_packaged_params_file_and_warns_without_frames(tmp_path, ros_env):
    """Start under ``-r __ns:=/robot1`` with (a copy of) config/vpr_node.yaml.

    Its values apply (top_k 3, read back over /robot1/vpr_node/get_parameters), a misspelled
    key is reported once, and with only a CompressedImage publisher on the image topic
    /diagnostics turns WARN naming that type while frames_received stays 0. Mapping mode: no
    map or data needed.
    """
    import yaml
    from rcl_interfaces.srv import GetParameters

    packaged = Path(__file__).resolve().parents[1] / "config" / "vpr_node.yaml"
    data = yaml.safe_load(packaged.read_text())
    params = data["/**/vpr_node"]["ros__parameters"]
    params.update(top_k=3, mapping_mode=True, image_topic="cam/image", no_frame_warn_s=1.0,
                  diagnostics_period_s=0.5, topk=4)
    pfile = tmp_path / "robot1.yaml"
    pfile.write_text(yaml.safe_dump(data, sort_keys=False))
    log_path = tmp_path / "robot1.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([node_exe(), "--ros-args", "-r", "__ns:=/robot1",
                                 "--params-file", str(pfile)], env={**os.environ, **ros_env},
                                stdout=log, stderr=subprocess.STDOUT)
    probe = Probe(node_ns="/robot1/vpr_node")
    try:
        probe.node.create_publisher(CompressedImage, "/robot1/cam/image", 10)
        probe.clients["get"] = probe.node.create_client(GetParameters,
                                                        "/robot1/vpr_node/get_parameters")
        got = probe.call("get", GetParameters.Request(names=["top_k", "image_topic"]), 120)
        assert got.values[0].integer_value == 3 and got.values[1].string_value == "cam/image"
        diag = wait_for(lambda: (lambda d: d if "CompressedImage" in d["message"] else None)(
            probe.latest_diag()), 60, "no-frame WARN naming CompressedImage", proc)
        assert diag["level"] == b"\x01" and int(diag["frames_received"]) == 0, diag
        assert "/robot1/cam/image" in diag["message"], diag["message"]
        assert "compressed_input: true" in diag["message"], diag["message"]
    finally:
        probe.close()
        rc = stop_node(proc)
    text = log_path.read_text()
    assert rc == 0, text
    assert text.count("topk (did you mean top_k?)") == 1, text
    assert "no image on /robot1/cam/image" in text, text
