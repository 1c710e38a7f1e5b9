"""End-to-end tests of ``vpr_node`` with real rclpy over loopback-only DDS.

The node runs as a subprocess through its console script (``--ros-args --params-file``); this
process publishes real Nordland frames and checks the node's answers against the offline
:class:`~vl2spike_ros.vpr.pipeline.VPRPipeline` on the same frames. Every wait has a deadline.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rcl_interfaces.msg import Parameter as ParamMsg, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, NavSatFix, PointCloud2  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from vl2spike_ros.io.images import (array_to_compressed_msg, array_to_image_msg,  # noqa: E402
                                    compressed_msg_to_array)
from vl2spike_ros.bench.ros import fixtures  # noqa: E402
from vl2spike_ros.data.datasets import load_nordland_frames  # noqa: E402
from vl2spike_ros.ros.messages import (FLAG_ACCEPTED, FLAG_BEST, covariance_scale,  # noqa: E402
                                       unpack_candidates)
from vl2spike_ros.vpr.acceptance import EVIDENCE_LENGTH  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.data, pytest.mark.slow]
N_PLACES = 12
STEP = 5
START = 300  # the first Nordland frames are blank (identical)
TOP_K = 3
THRESHOLD = 0.5


def node_exe() -> str:
    exe = Path(sys.executable).parent / "vpr_node"
    if not exe.is_file():
        pytest.skip("vpr_node console script not installed (make setup)")
    return str(exe)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, proc=None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        val = cond()
        if val:
            return val
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"vpr_node exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def assets(tmp_path_factory, data_root) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("vpr_node")
    ref = load_nordland_frames(data_root / "nordland", "summer", START, N_PLACES, STEP)
    winter = load_nordland_frames(data_root / "nordland", "winter", START, N_PLACES, STEP)
    weights = fixtures.node_weights(tmp, calib_frames=ref)
    map_dir = fixtures.build_map(weights, ref, tmp / "map", metas=fixtures.line_poses(N_PLACES))
    return {"tmp": tmp, "ref": ref, "winter": winter, "weights": weights, "map": map_dir}


class Probe:
    """Test-side rclpy node: publishes frames, collects the node's outputs, calls services."""

    def __init__(self, image_type=Image, node_ns: str = "/vpr_node", namespace: str = "") -> None:
        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("vpr_test_probe", context=self.ctx, namespace=namespace)
        self.pub = self.node.create_publisher(image_type, "test/image", 10)
        self.odom_pub = self.node.create_publisher(Odometry, "test/odom", 10)
        self.lock = threading.Lock()
        self.cands: dict[int, Any] = {}
        self.poses: dict[int, Any] = {}
        self.diag: list[Any] = []
        n = self.node
        n.create_subscription(PointCloud2, "vpr/candidates", self._store(self.cands), 50)
        n.create_subscription(PoseWithCovarianceStamped, "vpr/match_pose",
                              self._store(self.poses), 50)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.clients = {
            "reload": n.create_client(Trigger, "vpr/reload_map"),
            "discard_reload": n.create_client(Trigger, "vpr/discard_and_reload_map"),
            "save": n.create_client(Trigger, "vpr/save_map"),
            "mapping": n.create_client(SetBool, "vpr/set_mapping_mode"),
            "params": n.create_client(SetParameters, f"{node_ns}/set_parameters"),
        }
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(n)
        self._run = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self._stamp = time.time_ns()

    def _spin(self) -> None:
        while self._run and self.ctx.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _store(self, table: dict) -> Callable:
        def cb(msg):
            with self.lock:
                table[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = msg
        return cb

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name.endswith("place recognition"):
                with self.lock:
                    self.diag.append(st)

    def close(self) -> None:
        self._run = False
        self._thread.join(5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)

    def next_stamp(self) -> int:
        self._stamp += 1_000_000  # unique, increasing stamps
        return self._stamp

    def send(self, msg: Any) -> int:
        stamp = self.next_stamp()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        self.pub.publish(msg)
        return stamp

    def query(self, msg: Any, proc, timeout: float = 60.0, resend_s: float = 2.0
              ) -> tuple[int, Any]:
        """Publish ``msg`` (re-sent every ``resend_s``: best-effort input) until answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stamp = self.send(msg)
            try:
                got = wait_for(lambda: self.cands.get(stamp), min(resend_s, timeout), "candidates",
                               proc)
                return stamp, got
            except AssertionError:
                if proc.poll() is not None:
                    raise
        raise AssertionError("no candidates for the published frame")

    def call(self, name: str, request: Any, timeout: float = 60.0) -> Any:
        client = self.clients[name]
        wait_for(lambda: client.service_is_ready(), timeout, f"service {name}")
        fut = client.call_async(request)
        wait_for(fut.done, timeout, f"response of {name}")
        return fut.result()

    def set_param(self, name: str, value: Any) -> Any:
        kind = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE,
                str: ParameterType.PARAMETER_STRING}[type(value)]
        field = {bool: "bool_value", int: "integer_value", float: "double_value",
                 str: "string_value"}[type(value)]
        pv = ParameterValue(type=kind, **{field: value})
        req = SetParameters.Request(parameters=[ParamMsg(name=name, value=pv)])
        return self.call("params", req).results[0]

    def latest_diag(self, timeout: float = 30.0) -> dict[str, str]:
        """Values of a diagnostics status published after this call."""
        start = len(self.diag)
        wait_for(lambda: len(self.diag) > start + 1, timeout, "/diagnostics")
        with self.lock:
            st = self.diag[-1]
        return {"level": st.level, "message": st.message, **{kv.key: kv.value for kv in st.values}}


def start_node(tmp: Path, ros_env: dict, name: str, *ros_args: str,
               **params: Any) -> subprocess.Popen:
    pfile = fixtures.write_params_file(tmp / f"{name}.yaml", params)
    log = open(tmp / f"{name}.log", "w")
    return subprocess.Popen([node_exe(), "--ros-args", *ros_args, "--params-file", str(pfile)],
                            env={**os.environ, **ros_env}, stdout=log, stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise AssertionError(f"vpr_node did not exit within {timeout} s of {sig!r}")
    return proc.returncode


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


def offline(weights, map_dir, seq_len: int = 1):
    from vl2spike_ros.vpr.pipeline import VPRPipeline

    return VPRPipeline(weights, map_dir, top_k=TOP_K, threshold=THRESHOLD, seq_len=seq_len)


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
