"""No-frame watchdog of ``vpr_node`` (no rclpy import).

A node that subscribes ``sensor_msgs/Image`` on a topic that carries ``CompressedImage`` (or a
topic nobody publishes) receives nothing and raises no error. :class:`FrameWatchdog` notices
the silence from the received-frame counter, and :func:`no_frame_reason` turns what the ROS
graph says about the topic's publishers into one line for ``/diagnostics`` and the log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"


@dataclass
class FrameWatchdog:
    """Seconds without a new frame while armed; times in ``time.monotonic()`` seconds."""

    armed: bool = False
    last_count: int = 0
    last_change: float = 0.0
    seen_frame: bool = False  # a frame arrived since arming

    def arm(self, now: float, count: int) -> None:
        """Start watching (on activation); ``count`` = frames received so far."""
        self.armed, self.last_count, self.last_change, self.seen_frame = True, count, now, False

    def disarm(self) -> None:
        self.armed = False

    def silence(self, now: float, count: int) -> float:
        """Seconds since the last new frame (or since arming); 0 when disarmed."""
        if not self.armed:
            return 0.0
        if count != self.last_count:
            self.last_count, self.last_change, self.seen_frame = count, now, True
        return max(0.0, now - self.last_change)


def ros_type_name(msg_type: type) -> str:
    """``sensor_msgs.msg.Image`` class -> ``'sensor_msgs/msg/Image'`` (graph type name)."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def no_frame_reason(topic: str, expected: str, publisher_types: Iterable[str],
                    silent_s: float, seen_frame: bool) -> str:
    """Say in one line how long ``topic`` has been silent and the likely reason.

    The reason comes from the message types of the topic's publishers (``expected`` = the type
    the node subscribes).
    """
    types = list(publisher_types)
    when = f"for {silent_s:.1f} s" if seen_frame else f"in the {silent_s:.1f} s since activation"
    head = f"no image on {topic} {when}"
    if not types:
        return f"{head}: nobody publishes on it (check image_topic / the remapping)"
    others = sorted({t for t in types if t != expected})
    n_expected = sum(t == expected for t in types)
    if others and not n_expected:
        hint = ""
        if expected == IMAGE and COMPRESSED in others:
            hint = " (set compressed_input: true, or subscribe the raw image topic)"
        elif expected == COMPRESSED and IMAGE in others:
            hint = " (set compressed_input: false)"
        return (f"{head}: it is published as {', '.join(others)}, but the node subscribes "
                f"{expected}{hint}")
    return (f"{head}: {n_expected} publisher(s) of {expected}, but nothing arrived (camera "
            "stopped, or a QoS / network problem)")
