"""Peer process for test_ros_harness.py: echo images over loopback-only DDS (real rclpy).

Subscribes to ``--in-topic`` (sensor_msgs/Image), checks each image against the one the test
sends (regenerated from ``--seed``), and publishes it back on ``--out-topic`` re-encoded as
``bgr8`` with a padded ``step`` (so both ends' converters are exercised). Prints one line per
event (``PEER_READY``, ``PEER_ECHO <n>``, ``PEER_MISMATCH ...``, ``PEER_EXIT <code>``) and exits
on SIGTERM/SIGINT (0), a mismatch (3), a missing loopback profile (4) or ``--timeout`` (5).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import numpy as np


def expected_image(seed: int, h: int, w: int) -> np.ndarray:
    """Return the image the test publishes: [h, w, 3] uint8, deterministic."""
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _echo_node(ctx, in_topic: str, out_topic: str, expected: np.ndarray, stop: dict):
    """Node that checks images on ``in_topic`` against ``expected`` and echoes them as bgr8."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from vl2spike_ros.io.images import array_to_image_msg, image_msg_to_array, stamp_ns

    node = rclpy.create_node("vl2spike_test_image_peer", context=ctx)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Image, out_topic, qos)
    echoed = {"n": 0}

    def on_image(msg: Image) -> None:
        arr = image_msg_to_array(msg)
        if arr.shape != expected.shape or not np.array_equal(arr, expected):
            diff = -1 if arr.shape != expected.shape else int((arr != expected).sum())
            print(f"PEER_MISMATCH shape={arr.shape} differing={diff}", flush=True)
            stop.update(flag=True, code=3)
            return
        row = arr.shape[1] * 3
        out = array_to_image_msg(arr, "bgr8", Image, stamp_ns=stamp_ns(msg), frame_id="peer",
                                 step=row + 3)
        pub.publish(out)
        echoed["n"] += 1
        print(f"PEER_ECHO {echoed['n']}", flush=True)

    node.create_subscription(Image, in_topic, on_image, qos)
    return node


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--in-topic", required=True)
    ap.add_argument("--out-topic", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
    if not profile or not os.path.isfile(profile) or "ROS_DOMAIN_ID" not in os.environ:
        print("PEER_NO_LOOPBACK_PROFILE: refusing to start DDS", flush=True)
        return 4

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = {"flag": False, "code": 0}

    def _on_signal(signum, frame):  # noqa: ARG001
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    expected = expected_image(args.seed, args.height, args.width)
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    node = _echo_node(ctx, args.in_topic, args.out_topic, expected, stop)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    print("PEER_READY", flush=True)
    deadline = time.monotonic() + args.timeout
    try:
        while not stop["flag"]:
            if time.monotonic() > deadline:
                print("PEER_TIMEOUT", flush=True)
                stop["code"] = 5
                break
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    print(f"PEER_EXIT {stop['code']}", flush=True)
    return stop["code"]


if __name__ == "__main__":
    sys.exit(main())
