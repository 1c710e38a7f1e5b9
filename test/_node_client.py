"""Client side of the ``vpr_node`` end-to-end tests: the node subprocess, a probe node, assets."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rcl_interfaces.msg import Parameter as ParamMsg, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from vl2spike_ros.bench.ros import fixtures  # noqa: E402
from vl2spike_ros.data.datasets import load_nordland_frames  # noqa: E402

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


@pytest.fixture(scope="module", name="assets")
def assets_fixture(tmp_path_factory, data_root) -> dict[str, Any]:
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


def offline(weights, map_dir, seq_len: int = 1):
    from vl2spike_ros.vpr.pipeline import VPRPipeline

    return VPRPipeline(weights, map_dir, top_k=TOP_K, threshold=THRESHOLD, seq_len=seq_len)
