"""ROS 2 test harness proof.

A sensor_msgs/Image travels between two processes over loopback-only DDS (real rclpy),
converted with vl2spike_ros.io.images on both ends.

The test publishes an rgb8 image; ``_ros_image_peer.py`` (a subprocess with the ``ros_env``
environment) checks it, and echoes it as bgr8 with a padded step; the test checks the pixels.
While both participants are alive, every UDP/TCP socket they own must be bound to 127.0.0.0/8.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
PEER = HERE / "_ros_image_peer.py"
H, W, SEED = 120, 160, 1234
NS = "{http://www.eprosima.com}"

sys.path.insert(0, str(HERE))
from _ros_image_peer import expected_image  # noqa: E402


class _Lines:
    """Collect a subprocess' stdout lines in a thread (no blocking reads in the test)."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._t.start()

    def _pump(self, proc):
        for line in proc.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def wait_for(self, prefix: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cv:
            while not any(line.startswith(prefix) for line in self.lines):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def text(self) -> str:
        with self._cv:
            return "\n".join(self.lines)


def _sockets_of(pids: set[int]) -> list[tuple[str, str]]:
    """(protocol, local address) of every UDP/TCP socket owned by ``pids`` (needs ``ss``)."""
    out = []
    for proto, flag in (("udp", "-uanp"), ("tcp", "-tanp")):
        res = subprocess.run(["ss", flag], capture_output=True, text=True, timeout=10, check=True)
        for line in res.stdout.splitlines()[1:]:
            if any(f"pid={p}," in line for p in pids):
                out.append((proto, line.split()[3]))
    return out


def _spin_until(executor, done, proc, timeout: float, every_s: float = 0.0,
                action=None) -> int:
    """Spin until ``done()``, ``timeout`` s or the peer exits; ``action`` every ``every_s`` s."""
    deadline, next_action, actions = time.monotonic() + timeout, 0.0, 0
    while not done() and time.monotonic() < deadline and proc.poll() is None:
        if action is not None and time.monotonic() >= next_action:
            action()
            actions += 1
            next_action = time.monotonic() + every_s
        executor.spin_once(timeout_sec=0.05)
    return actions


def _is_loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host == "::1"


def test_loopback_profile_is_applied(ros_env):
    """The env points at the package's Fast DDS profile and that profile only allows 127.0.0.1."""
    from vl2spike_ros.ros.env import fastdds_profile_path

    profile = Path(ros_env["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert profile == fastdds_profile_path() and profile.is_file()
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(profile)
    assert ros_env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    # LOCALHOST would make rmw_fastrtps add a UDP transport of its own, bound to all interfaces.
    assert ros_env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SYSTEM_DEFAULT"
    assert 0 <= int(ros_env["ROS_DOMAIN_ID"]) <= 101
    root = ET.parse(profile).getroot()
    descriptors = {d.findtext(f"{NS}transport_id"): d
                   for d in root.iter(f"{NS}transport_descriptor")}
    participants = [p for p in root.iter(f"{NS}participant")
                    if p.get("is_default_profile") == "true"]
    assert len(participants) == 1
    rtps = participants[0].find(f"{NS}rtps")
    assert rtps.findtext(f"{NS}useBuiltinTransports").strip() == "false"
    used = [t.text for t in rtps.find(f"{NS}userTransports")]
    assert used and set(used) <= set(descriptors)
    for tid in used:
        kind = descriptors[tid].findtext(f"{NS}type")
        assert kind in ("UDPv4", "SHM"), kind  # no TCP, no UDPv6
        if kind == "UDPv4":
            allowed = [a.text for a in descriptors[tid].iter(f"{NS}address")]
            assert allowed == ["127.0.0.1"]
    for lst in ("metatrafficUnicastLocatorList", "initialPeersList", "defaultUnicastLocatorList"):
        addrs = [a.text for a in rtps.iter(f"{NS}{lst}") for a in a.iter(f"{NS}address")]
        assert addrs == ["127.0.0.1"], (lst, addrs)
    assert not list(rtps.iter(f"{NS}metatrafficMulticastLocatorList"))


@pytest.mark.ros
@pytest.mark.slow
def test_image_roundtrip_between_two_processes(rclpy_context, ros_env, tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from vl2spike_ros.io.images import array_to_image_msg, image_msg_to_array, stamp_ns

    tag = f"{os.getpid()}_{time.monotonic_ns() % 1_000_000}"
    in_topic, out_topic = f"/vl2spike_test/img_{tag}", f"/vl2spike_test/echo_{tag}"
    env = {**os.environ, **ros_env}
    cmd = [sys.executable, str(PEER), "--in-topic", in_topic, "--out-topic", out_topic,
           "--seed", str(SEED), "--height", str(H), "--width", str(W), "--timeout", "90"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=str(tmp_path))
    lines = _Lines(proc)
    node = None
    executor = SingleThreadedExecutor(context=rclpy_context)
    try:
        assert lines.wait_for("PEER_READY", 60), f"peer did not start:\n{lines.text()}"
        import rclpy

        node = rclpy.create_node("vl2spike_test_harness", context=rclpy_context)
        executor.add_node(node)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        received: list[Image] = []
        node.create_subscription(Image, out_topic, received.append, qos)
        pub = node.create_publisher(Image, in_topic, qos)
        sent = expected_image(SEED, H, W)
        stamp = 1_234_567_890_123_456_789

        def matched() -> bool:
            return pub.get_subscription_count() >= 1 and node.count_publishers(out_topic) >= 1

        _spin_until(executor, matched, proc, timeout=45)  # discovery, both directions
        assert pub.get_subscription_count() >= 1, (
            f"peer subscription not discovered:\n{lines.text()}")

        msg = array_to_image_msg(sent, "rgb8", Image, stamp_ns=stamp, frame_id="test")
        sends = _spin_until(executor, lambda: bool(received), proc, timeout=45, every_s=1.0,
                            action=lambda: pub.publish(msg))  # re-publish until the echo arrives
        assert received, f"no echo after {sends} sends (peer rc={proc.poll()}):\n{lines.text()}"

        echo = received[0]
        assert echo.encoding == "bgr8" and echo.step == W * 3 + 3
        assert echo.header.frame_id == "peer"
        assert stamp_ns(echo) == stamp
        np.testing.assert_array_equal(image_msg_to_array(echo), sent)
        assert "PEER_MISMATCH" not in lines.text()

        if shutil.which("ss"):
            socks = _sockets_of({proc.pid, os.getpid()})
            peer_socks = _sockets_of({proc.pid})
            assert peer_socks, "no sockets found for the peer: cannot check the bindings"
            bad = [s for s in socks if not _is_loopback(s[1])]
            assert not bad, f"DDS sockets bound outside loopback: {bad}"
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(timeout=10)
        executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.destroy_node()
    assert rc == 0, f"peer exited with {rc}:\n{lines.text()}"
    assert "PEER_EXIT 0" in lines.text()


def test_peer_refuses_without_loopback_profile(tmp_path):
    """The helper never starts DDS without the loopback environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DOMAIN_ID")}
    res = subprocess.run([sys.executable, str(PEER), "--in-topic", "/a", "--out-topic", "/b",
                          "--seed", "1",
                          "--height", "2", "--width", "2", "--timeout", "5"],
                         env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert res.returncode == 4 and "PEER_NO_LOOPBACK_PROFILE" in res.stdout
