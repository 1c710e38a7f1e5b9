"""``vpr_node``: ROS 2 lifecycle node for spiking visual place recognition.

Lifecycle: *configure* loads the weights and the map (and checks that they match), *activate*
subscribes to the camera and starts the worker, *deactivate* / *cleanup* undo that. With the
parameter ``autostart: true`` (default) the node drives configure + activate itself, so it can
be started as a plain node. Topic / service / parameter API: ``docs/node_api.md``.

Frames are handed to a single worker thread through a one-item mailbox
(:class:`~vl2spike_ros.ros.frames.LatestSlot`): when inference is slower than the camera only the
newest frame is processed and replaced frames are counted as dropped.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data, QoSProfile
from sensor_msgs.msg import CompressedImage, Image, NavSatFix, PointCloud2
from std_srvs.srv import SetBool, Trigger
from visualization_msgs.msg import MarkerArray

from vl2spike_ros.io.images import msg_to_array, stamp_ns
from vl2spike_ros.ros import messages as M
from vl2spike_ros.ros.engine import Engine, EngineError
from vl2spike_ros.ros.frames import LatestSlot, NodeStats, RateLimiter
from vl2spike_ros.ros import geo, startup
from vl2spike_ros.ros.params import NODE_NAME, PARAM_SPECS, SPEC_BY_NAME, NodeParams, check_value
from vl2spike_ros.ros.watchdog import FrameWatchdog, no_frame_reason, ros_type_name

_PTYPE = {"string": ParameterType.PARAMETER_STRING, "bool": ParameterType.PARAMETER_BOOL,
          "integer": ParameterType.PARAMETER_INTEGER, "double": ParameterType.PARAMETER_DOUBLE}
_POSE_MSGS = {"odometry": Odometry, "pose_stamped": PoseStamped,
              "pose_with_covariance": PoseWithCovarianceStamped, "navsatfix": NavSatFix}
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
THROTTLE_S = 5.0
WATCHDOG_TICK_S = 0.5  # how often the no-frame watchdog looks at the frame counter
NO_FRAME_LOG_S = 30.0  # at most one "no image" log line per this many seconds


def descriptor_for(spec) -> ParameterDescriptor:
    """Build the rclpy ParameterDescriptor of a :class:`~vl2spike_ros.ros.params.ParamSpec`."""
    d = ParameterDescriptor(name=spec.name, type=_PTYPE[spec.type], description=spec.description,
                            additional_constraints=spec.constraints, read_only=spec.read_only)
    if spec.range is not None and spec.type == "integer":
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]),
                                        step=0)]
    elif spec.range is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                     to_value=float(spec.range[1]), step=0.0)]
    return d


class VPRNode(LifecycleNode):
    """Place recognition on a camera stream (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.add_on_set_parameters_callback(self._validate_params)
        for spec in PARAM_SPECS:
            self.declare_parameter(spec.name, spec.default, descriptor_for(spec))
        unknown = startup.unknown_parameters(getattr(self, "_parameter_overrides", {}),
                                             SPEC_BY_NAME)
        if unknown:  # misspelled keys in a params file / -p would be ignored without a word
            self.get_logger().warning(unknown)
        self.params = self._read_params()
        self.add_post_set_parameters_callback(self._params_changed)
        self.stats = NodeStats()
        self.slot: LatestSlot = LatestSlot()
        self.engine: Engine | None = None
        self.engine_lock = threading.RLock()
        self.config_error: str | None = None
        self.mapping = self.params.mapping_mode
        self._latest_pose: geo.LatestPose | None = None  # pose or GNSS fix (mapping mode)
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._limiter = RateLimiter(self.params.max_rate_hz)
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._since_map = 0
        self._watchdog = FrameWatchdog()
        self._no_frame_text: str | None = None
        self._listening: tuple[str, str] = ("", "")  # resolved image topic, its message type
        self.create_timer(WATCHDOG_TICK_S, self._check_frames)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.params.diagnostics_period_s,
                                             self.publish_diagnostics)
        self.create_service(Trigger, "vpr/reload_map", self._srv_reload)
        self.create_service(Trigger, "vpr/discard_and_reload_map",
                            lambda req, resp: self._srv_reload(req, resp, discard=True))
        self.create_service(Trigger, "vpr/save_map", self._srv_save)
        self.create_service(SetBool, "vpr/set_mapping_mode", self._srv_mapping)

    # ------------------------------------------------------------------ parameters
    def _read_params(self) -> NodeParams:
        return NodeParams.from_mapping({s.name: self.get_parameter(s.name).value
                                        for s in PARAM_SPECS})

    def _validate_params(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            spec = SPEC_BY_NAME.get(p.name)
            if spec is None:
                continue
            try:
                check_value(spec, p.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _params_changed(self, params: list[Parameter]) -> None:
        self.params = self._read_params()
        names = {p.name for p in params}
        self._limiter.rate_hz = self.params.max_rate_hz
        if "mapping_mode" in names:
            self.mapping = self.params.mapping_mode
        if names & {"top_k", "match_threshold", "match_margin"}:
            with self.engine_lock:
                if self.engine is not None:
                    self.engine.set_matching(self.params.top_k, self.params.match_threshold,
                                             self.params.match_margin)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        try:
            engine = Engine.load(p)
        except (EngineError, FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
            self.config_error = f"cannot configure {self.get_name()}: {exc}"
            self.get_logger().error(self.config_error)
            return FAILURE
        with self.engine_lock:
            self.engine = engine
        self.config_error = None
        self._pubs = {
            "pose": self.create_lifecycle_publisher(PoseWithCovarianceStamped, "vpr/match_pose",
                                                    10),
            "candidates": self.create_lifecycle_publisher(PointCloud2, "vpr/candidates", 10),
            "fix": self.create_lifecycle_publisher(NavSatFix, "vpr/match_fix", 10),
        }
        if p.publish_markers:
            self._pubs["markers"] = self.create_lifecycle_publisher(MarkerArray, "vpr/markers", 10)
        self.get_logger().info(f"configured: {engine.describe()}")
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        msg_type = CompressedImage if p.compressed_input else Image
        self._subs = [self._image_subscription(msg_type, p.image_topic)]
        if p.pose_topic:
            self._subs.append(self.create_subscription(_POSE_MSGS[p.pose_type], p.pose_topic,
                                                       self._on_pose, 10))
        self.slot.reopen()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="vpr_worker", daemon=True)
        self._worker.start()
        self._listening = (self.resolve_topic_name(p.image_topic), ros_type_name(msg_type))
        self._watchdog.arm(time.monotonic(), self.slot.received)
        self.get_logger().info(
            f"active: listening on {self._listening[0]} ({msg_type.__name__})")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._watchdog.disarm()
        self._no_frame_text = None
        self._stop_worker()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        with self.engine_lock:
            self.engine = None
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        return SUCCESS

    def _stop_worker(self) -> None:
        self._stop.set()
        self.slot.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None

    # ------------------------------------------------------------------ input
    def _on_image(self, msg: Any) -> None:
        self.slot.put((msg, time.monotonic()))
        self.stats.stamp(stamp_ns(msg))  # gaps in header stamps: frames lost before us

    def _image_subscription(self, msg_type: Any, topic: str) -> Any:
        """Subscribe to the camera, counting the samples the middleware reports lost.

        Where the RMW does not support the message_lost event only the stamp-gap estimate
        remains.
        """
        events = SubscriptionEventCallbacks(message_lost=lambda i: self.stats.lost(i.total_count))
        try:
            return self.create_subscription(msg_type, topic, self._on_image,
                                            qos_profile_sensor_data_depth1(),
                                            event_callbacks=events)
        except UnsupportedEventTypeError:
            return self.create_subscription(msg_type, topic, self._on_image,
                                            qos_profile_sensor_data_depth1())

    def _on_pose(self, msg: Any) -> None:
        if isinstance(msg, NavSatFix):  # converted to map metres when a frame is mapped
            self._latest_pose = geo.fix_of(msg) or self._latest_pose
            return
        pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
        self._latest_pose = ([pose.position.x, pose.position.y, pose.position.z],
                             [pose.orientation.x, pose.orientation.y, pose.orientation.z,
                              pose.orientation.w], msg.header.frame_id)

    def _work(self) -> None:
        while not self._stop.is_set():
            wait = self._limiter.remaining()
            if wait > 0:  # max_rate_hz: let newer frames replace the pending one meanwhile
                time.sleep(min(0.05, wait))
                continue
            item = self.slot.take(timeout=0.2)
            if item is None:
                continue
            self._limiter.mark()
            try:
                self.process(*item)
            except Exception as exc:  # noqa: BLE001 - a frame must never kill the node
                self.stats.error(f"{type(exc).__name__}: {exc}")
                self.get_logger().error(f"frame processing failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=THROTTLE_S)

    def decode(self, msg: Any) -> np.ndarray | None:
        """Image message -> uint8 array, or None (counted, throttled warning) if unusable."""
        try:
            img = msg_to_array(msg, self.params.max_image_pixels)  # refused before decoding
            if img.size == 0 or min(img.shape[:2]) < 1:
                raise ValueError(f"zero-size image {img.shape}")
            if img.dtype == np.uint16:
                img = (img >> 8).astype(np.uint8)
            elif img.dtype != np.uint8:
                raise ValueError(f"unsupported pixel type {img.dtype} (need 8 or 16 bit)")
            if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
                raise ValueError(f"unsupported channel count {img.shape[2]}")
        except ValueError as exc:
            self.stats.bad(str(exc))
            self.get_logger().warning(f"skipping bad frame: {exc}",
                                      throttle_duration_sec=THROTTLE_S)
            return None
        return img

    def process(self, msg: Any, received: float) -> None:
        """Decode, match and publish one frame (runs on the worker thread)."""
        img = self.decode(msg)
        if img is None:
            return
        t0 = time.perf_counter()
        with self.engine_lock:
            engine = self.engine
            if engine is None:
                return
            try:
                res = engine.process(img)
            except ValueError as exc:  # the library rejects the image
                self.stats.bad(str(exc))
                self.get_logger().warning(f"skipping bad frame: {exc}",
                                          throttle_duration_sec=THROTTLE_S)
                return
            metas = {int(i): engine.place_meta(int(i)) for i in res.ids if int(i) >= 0}
            if self.mapping:
                self._map_frame(engine, msg)
        infer_ms = (time.perf_counter() - t0) * 1e3
        self._publish(msg.header, res, metas)
        self.stats.record((time.monotonic() - received) * 1e3, infer_ms, res.firing_rate,
                          res.energy_mj, res.accepted)

    def _map_frame(self, engine: Engine, msg: Any) -> None:
        self._since_map += 1
        if self._since_map < self.params.mapping_stride:
            return
        self._since_map = 0
        meta: dict[str, Any] = {"source": "vpr_node mapping", "stamp_ns": int(msg.header.stamp.sec)
                                * 10**9 + int(msg.header.stamp.nanosec),
                                "camera_frame_id": msg.header.frame_id}
        if self._latest_pose is not None:
            position, orientation, frame_id = geo.mapping_pose(self._latest_pose,
                                                               engine.pipe.map)
            meta.update(M.pose_meta(position, orientation))
            meta["frame_id"] = frame_id or self.params.map_frame_id
        engine.add_last(meta)
        with self.stats.lock:
            self.stats.mapped += 1

    def _publish(self, header: Any, res: Any, metas: dict[int, Any]) -> None:
        p = self.params
        out_header = type(header)(stamp=header.stamp, frame_id=p.map_frame_id)
        best = None if res.best_id is None or int(res.best_id) < 0 else int(res.best_id)
        cands = M.make_candidates_msg(out_header, res.ids, res.scores, best, res.accepted, metas)
        if res.accepted and best is not None:  # the pose first: candidates close the frame
            pose = M.place_pose(metas.get(best))
            if pose is not None:
                self._pubs["pose"].publish(M.make_pose_msg(
                    out_header, pose, res.confidence, p.position_variance,
                    p.orientation_variance))
                origin = geo.map_origin(self.engine)
                if origin is not None:  # a map with a geodetic origin: the match as lat/lon
                    self._pubs["fix"].publish(geo.make_fix_msg(
                        header, origin, pose[0], res.confidence, p.position_variance))
        self._pubs["candidates"].publish(cands)
        if "markers" in self._pubs:
            self._pubs["markers"].publish(M.make_markers(out_header, M.unpack_candidates(cands)))

    # ------------------------------------------------------------------ services
    def _srv_reload(self, req: Trigger.Request, resp: Trigger.Response,
                    discard: bool = False) -> Trigger.Response:
        """Serve vpr/reload_map and vpr/discard_and_reload_map.

        The first is refused while mapped places are unsaved; the second drops them.
        """
        with self.engine_lock:
            if self.engine is None:
                resp.success, resp.message = False, "node is not configured"
                return resp
            try:
                n = self.engine.reload_map(self.params.map_dir, discard_unsaved=discard)
            except (EngineError, FileNotFoundError, ValueError, OSError) as exc:
                resp.success, resp.message = False, f"map not reloaded (old map kept): {exc}"
                self.get_logger().error(resp.message)
                return resp
        resp.success, resp.message = True, f"reloaded {self.params.map_dir}: {n} places"
        self.get_logger().info(resp.message)
        return resp

    def _srv_save(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        target = self.params.save_map_dir or self.params.map_dir
        with self.engine_lock:
            if self.engine is None or not target:
                resp.success = False
                resp.message = ("node is not configured" if self.engine is None
                                else "no save_map_dir or map_dir set")
                return resp
            try:
                n = self.engine.save_map(target)
            except (OSError, ValueError, RuntimeError) as exc:
                resp.success, resp.message = False, f"saving the map to {target} failed: {exc}"
                self.get_logger().error(resp.message)
                return resp
        resp.success, resp.message = True, f"saved {n} places to {target}"
        self.get_logger().info(resp.message)
        return resp

    def _srv_mapping(self, req: SetBool.Request, resp: SetBool.Response) -> SetBool.Response:
        result = self.set_parameters([Parameter("mapping_mode", value=bool(req.data))])[0]
        resp.success = result.successful
        resp.message = (f"mapping mode {'on' if req.data else 'off'}" if result.successful
                        else result.reason)
        return resp

    # ------------------------------------------------------------------ diagnostics
    def _check_frames(self) -> None:
        """Run the no-frame watchdog (timer callback).

        While the image topic has been silent for no_frame_warn_s: WARN text for /diagnostics
        and a throttled log line, naming the message types of the topic's publishers.
        """
        limit = self.params.no_frame_warn_s
        silent = self._watchdog.silence(time.monotonic(), self.slot.received)
        topic, expected = self._listening
        if limit <= 0 or silent < limit:
            if self._no_frame_text is not None:
                self.get_logger().info(f"images arriving on {topic} again")
            self._no_frame_text = None
            return
        types = [info.topic_type for info in self.get_publishers_info_by_topic(topic)]
        self._no_frame_text = no_frame_reason(topic, expected, types, silent,
                                              self._watchdog.seen_frame)
        self.get_logger().warning(self._no_frame_text,
                                  throttle_duration_sec=max(NO_FRAME_LOG_S, limit))

    def diagnostics_values(self) -> dict[str, Any]:
        s = self.stats.summary()
        with self.engine_lock:
            map_size = len(self.engine) if self.engine is not None else 0
            precision = self.engine.expected_precision() if self.engine is not None else None
        return {**s, "frames_received": self.slot.received, "frames_dropped": self.slot.dropped,
                "map_size": map_size, "mapping_mode": self.mapping,
                "device": self.params.device, "match_margin": self.params.match_margin,
                # validation precision of accepted matches at this margin (lower bound)
                "accepted_precision_validation": "uncalibrated" if precision is None
                else precision}

    def publish_diagnostics(self) -> None:
        self._check_frames()  # the no-frame state as of now, not of the last watchdog tick
        vals = self.diagnostics_values()
        state = "active" if self._worker is not None else (
            "configured" if self.engine is not None else "unconfigured")
        level, text = 0, state  # DiagnosticStatus.OK / WARN = 1 / ERROR = 2
        if self.config_error:
            level, text = 2, self.config_error
        elif self._no_frame_text:
            level, text = 1, f"{state}; {self._no_frame_text}"
        elif self.stats.bad_recently():  # clears BAD_FRAME_WARN_S after the last bad frame
            level = 1
            text = (f"{state}; bad frames: {vals['bad_frames']} "
                    f"(last: {self.stats.last_bad_reason})")
        vals["state"] = state
        msg = M.make_diagnostics(self.get_clock().now().to_msg(),
                                 f"{self.get_name()}: place recognition",
                                 self.params.device, level, text, vals)
        self._diag_pub.publish(msg)


def _startup_error_text(exc: Exception) -> str:
    if not type(exc).__module__.startswith("rclpy"):
        return f"{type(exc).__name__}: {exc}"
    text = f"invalid parameter: {exc}"
    if "expecting type 'DOUBLE'" in text:
        text += " (write floating point values with a decimal point, e.g. 10.0)"
    if "expecting type 'STRING'" in text:
        text += " (quote string values, e.g. -p \"sequence_velocities:='0.5'\")"
    return text


def qos_profile_sensor_data_depth1() -> QoSProfile:
    """Sensor-data QoS (best effort, volatile) with history depth 1."""
    qos = QoSProfile(depth=1)
    qos.reliability = qos_profile_sensor_data.reliability
    qos.durability = qos_profile_sensor_data.durability
    qos.history = qos_profile_sensor_data.history
    return qos


def _rclpy_init(argv: list[str]) -> None:
    rclpy.init(args=argv, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)


def main(args: list[str] | None = None) -> int:
    """Console script ``vpr_node``: run until SIGINT/SIGTERM; exit 2 on a startup error.

    ``args`` is the whole command line, program name first (default ``sys.argv``).
    """
    code, files = startup.prepare(list(sys.argv if args is None else args), _rclpy_init)
    if code is not None:
        return code
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = None
    try:
        try:
            node = VPRNode()
        except Exception as exc:  # noqa: BLE001 - parameter errors: one clear line, no traceback
            print(f"[{NODE_NAME}] startup error: {_startup_error_text(exc)}", file=sys.stderr)
            return 2
        for warning in startup.skipped_sections(files, node.get_fully_qualified_name()):
            node.get_logger().warning(warning)
        if node.params.autostart:
            if node.trigger_configure() != SUCCESS:
                return 2  # on_configure logged the one error line
            if node.trigger_activate() != SUCCESS:
                node.get_logger().error("activation failed")
                return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if node is not None:
            node._stop_worker()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
