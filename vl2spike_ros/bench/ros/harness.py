"""Client-side harness for driving a real ``vpr_node`` subprocess (demo, load benchmark, tests).

Start the node with :func:`start_node` (in the caller's loopback-only ROS environment, see
:mod:`vl2spike_ros.ros.env`), talk to it through a :class:`Prober`, stop it with
:func:`stop_node`. :func:`proc_cpu_s` / :func:`proc_mem_mb` read its CPU time and memory.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from vl2spike_ros.io.images import stamp_ns
from vl2spike_ros.ros.messages import unpack_candidates

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (``/proc/PID/stat`` fields 14 and 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_mb(pid: int) -> dict[str, float]:
    """Read ``VmRSS``, ``VmHWM`` (peak RSS) and ``RssAnon`` of ``pid`` in MiB.

    From ``/proc/PID/status``; ``RssAnon`` is the private heap (excludes mapped shared libraries
    such as libtorch).
    """
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            out[key] = int(rest.split()[0]) / 1024.0
    return out


def vpr_node_exe() -> str:
    """Find the installed ``vpr_node`` console script next to this interpreter (or on PATH)."""
    cand = Path(sys.executable).parent / "vpr_node"
    found = str(cand) if cand.is_file() else shutil.which("vpr_node")
    if not found:
        raise FileNotFoundError("vpr_node console script not found (run `make setup`)")
    return found


class Prober:
    """rclpy client of ``vpr_node``.

    Publishes frames on ``bench/image``, receives ``vpr/candidates`` (latency per stamp, and the
    candidates themselves with ``keep_candidates``) and ``/diagnostics``. Spins in a background
    thread; ``close()`` shuts its context down.
    """

    def __init__(self, compressed: bool, keep_candidates: bool = False) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image, PointCloud2

        self.keep_candidates = keep_candidates
        self.ctx = rclpy.context.Context()
        # no rclpy signal handlers: Ctrl-C must stay a KeyboardInterrupt in the host process
        # (the demo/bench clean up and exit 130); rclpy's handler would swallow it
        rclpy.init(context=self.ctx,
                   signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        self.node = rclpy.create_node("vpr_load_bench", context=self.ctx)
        self.pub = self.node.create_publisher(CompressedImage if compressed else Image,
                                              "bench/image", qos_profile_sensor_data)
        self.lock = threading.Lock()
        self.latencies: dict[int, tuple[float, float]] = {}  # stamp -> (t_recv, latency ms)
        self.candidates: dict[int, np.ndarray] = {}  # stamp -> unpacked candidates
        self.diag: dict[str, str] = {}
        self.last_diag_t = self.last_cand_t = 0.0  # time.monotonic() of the latest message
        self.node.create_subscription(PointCloud2, "vpr/candidates", self._on_cands, 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._running = True
        self._spin.start()

    def _spin_loop(self) -> None:
        while self._running and self.ctx.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def now_ns(self) -> int:
        return time.time_ns()

    def _on_cands(self, msg: Any) -> None:
        t = time.time_ns()
        stamp = stamp_ns(msg)
        cands = unpack_candidates(msg).copy() if self.keep_candidates else None
        with self.lock:
            self.latencies.setdefault(stamp, (time.monotonic(), (t - stamp) / 1e6))
            if cands is not None:
                self.candidates.setdefault(stamp, cands)
            self.last_cand_t = time.monotonic()

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            if "place recognition" in st.name:
                self.diag = {kv.key: kv.value for kv in st.values}
                self.last_diag_t = time.monotonic()

    def clear(self) -> None:
        """Forget everything received so far (e.g. the warm-up answers)."""
        with self.lock:
            self.latencies.clear()
            self.candidates.clear()

    def close(self) -> None:
        import rclpy

        self._running = False
        self._spin.join(2)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)

    def drain(self, last_stamp: int, max_s: float = 3.0, quiet_s: float = 0.3) -> None:
        """Wait (at most ``max_s``) for the answer to ``last_stamp``, then for diagnostics.

        Gives up on the answer after ``quiet_s`` without answers (the node dropped it); then
        waits for a /diagnostics message after the last answer (the node publishes one every
        ``diagnostics_period_s`` = 1 s).
        """
        t_end = time.monotonic()
        while time.monotonic() - t_end < max_s:
            time.sleep(0.05)
            now = time.monotonic()
            with self.lock:
                last = max(self.last_cand_t, t_end)
                done = last_stamp in self.candidates or now - last > quiet_s
            if done and self.last_diag_t > last:
                return


def start_node(params_file: Path, log_path: Path,
               env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a ``vpr_node`` subprocess; its ``image`` topic remapped to ``bench/image``.

    ``env`` defaults to this process's, which must already hold the loopback ROS env; output
    goes to ``log_path``.
    """
    cmd = [vpr_node_exe(), "--ros-args", "--params-file", str(params_file),
           "-r", "image:=bench/image"]
    with open(log_path, "w") as logf:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=dict(os.environ if env is None else env), stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop_node(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGINT, then SIGKILL after ``timeout`` s (also when interrupted while waiting)."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(signal.SIGINT)
        return proc.wait(timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        return proc.wait(5)


def wait_ready(prober: Prober, msgs: list[Any], proc: subprocess.Popen, timeout: float) -> None:
    """Publish slowly until the node answers (discovery + model warm-up done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vpr_node exited with {proc.returncode} during start-up")
        publish(prober, msgs[0])
        time.sleep(0.5)
        with prober.lock:
            if prober.latencies:
                prober.latencies.clear()
                return
    raise RuntimeError(f"vpr_node did not answer within {timeout:.0f} s")


def publish(prober: Prober, msg: Any) -> int:
    stamp = prober.now_ns()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
    prober.pub.publish(msg)
    return stamp
