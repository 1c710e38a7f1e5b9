"""Standard ROS messages published by the node, and helpers to read them back.

Only ROS message packages are imported here (no rclpy), so clients and tests can reuse
:func:`unpack_candidates`.

Candidates (``vpr/candidates``, sensor_msgs/PointCloud2, ``height = 1``, ``width = k``, one point
per candidate place, best first, little endian, ``point_step = 24``):

====== ======= ====== ===========================================================
field  type    offset meaning
====== ======= ====== ===========================================================
x y z  FLOAT32 0 4 8  place position in ``map_frame_id`` (NaN when the place has no pose)
score  FLOAT32 12     cosine similarity of the query descriptor to the place
id     UINT32  16     place id in the map
flags  UINT32  20     bit 0: chosen match (after sequence matching), bit 1: accepted
====== ======= ====== ===========================================================
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from sensor_msgs.msg import PointCloud2, PointField

FLAG_BEST = 1
FLAG_ACCEPTED = 2
CANDIDATE_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("score", "<f4"),
                            ("id", "<u4"), ("flags", "<u4")])
_FIELDS = [("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32),
           ("z", 8, PointField.FLOAT32), ("score", 12, PointField.FLOAT32),
           ("id", 16, PointField.UINT32), ("flags", 20, PointField.UINT32)]


def place_pose(meta: Mapping[str, Any] | None) -> tuple[list[float], list[float]] | None:
    """Position ``[x, y, z]`` and quaternion ``[x, y, z, w]`` stored with a place, or None.

    The map format (``vl2spike map build``, mapping mode) is ``{"pose": [x, y, z, qx, qy, qz,
    qw]}``; ``[x, y]`` / ``[x, y, z]``, ``{"pose": {"position", "orientation"}}`` and top-level
    ``x, y, (z, yaw)`` keys are read too.
    """
    if not meta:
        return None
    pose = meta.get("pose")
    if isinstance(pose, Mapping) and "position" in pose:
        pos = [float(v) for v in pose["position"]][:3]
        pos += [0.0] * (3 - len(pos))
        quat = [float(v) for v in pose.get("orientation", (0.0, 0.0, 0.0, 1.0))]
        return pos, quat
    if isinstance(pose, (list, tuple)) and len(pose) in (2, 3, 7):
        vals = [float(v) for v in pose]
        pos = (vals + [0.0])[:3]
        return pos, vals[3:7] if len(vals) == 7 else [0.0, 0.0, 0.0, 1.0]
    if "x" in meta and "y" in meta:
        yaw = float(meta.get("yaw", 0.0))
        return ([float(meta["x"]), float(meta["y"]), float(meta.get("z", 0.0))],
                [0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])
    return None


def pose_meta(position: Sequence[float], orientation: Sequence[float]) -> dict[str, Any]:
    """Place metadata entry for a pose (map format ``{"pose": [x, y, z, qx, qy, qz, qw]}``)."""
    return {"pose": [float(v) for v in (*position, *orientation)]}


MIN_CONFIDENCE = 1e-3


def covariance_scale(confidence: float | None) -> float:
    """Return the factor on the variances: ``1 / confidence^2`` (confidence clipped to [1e-3, 1]).

    ``confidence`` is the match's calibrated one (:mod:`vl2spike_ros.vpr.acceptance`:
    validation precision at its margin); None (weights without a calibration) gives 1.
    """
    if confidence is None or not math.isfinite(confidence):
        return 1.0
    return 1.0 / min(1.0, max(MIN_CONFIDENCE, float(confidence))) ** 2


def make_pose_msg(header: Any, pose: tuple[list[float], list[float]], confidence: float | None,
                  position_variance: float, orientation_variance: float
                  ) -> PoseWithCovarianceStamped:
    """Build the matched place's PoseWithCovarianceStamped; variances x covariance_scale."""
    msg = PoseWithCovarianceStamped()
    msg.header = header
    (px, py, pz), (qx, qy, qz, qw) = pose
    p = msg.pose.pose
    p.position.x, p.position.y, p.position.z = px, py, pz
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = qx, qy, qz, qw
    scale = covariance_scale(confidence)
    cov = np.zeros(36)
    cov[[0, 7, 14]] = position_variance * scale
    cov[[21, 28, 35]] = orientation_variance * scale
    msg.pose.covariance = cov.tolist()
    return msg


def make_candidates_msg(header: Any, ids: Iterable[int], scores: Iterable[float],
                        best_id: int | None, accepted: bool,
                        metas: Mapping[int, Mapping[str, Any] | None]) -> PointCloud2:
    """Pack the top-k candidates (see module docstring for the layout); ids < 0 are skipped."""
    rows = []
    for pid, score in zip(ids, scores):
        if int(pid) < 0:
            continue
        pose = place_pose(metas.get(int(pid)))
        x, y, z = pose[0] if pose else (math.nan, math.nan, math.nan)
        flags = 0
        if best_id is not None and int(pid) == int(best_id):
            flags = FLAG_BEST | (FLAG_ACCEPTED if accepted else 0)
        rows.append((x, y, z, float(score), int(pid), flags))
    arr = np.array(rows, dtype=CANDIDATE_DTYPE)
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, len(rows)
    msg.fields = [PointField(name=n, offset=o, datatype=t, count=1) for n, o, t in _FIELDS]
    msg.is_bigendian = False
    msg.point_step = CANDIDATE_DTYPE.itemsize
    msg.row_step = msg.point_step * len(rows)
    msg.data = arr.tobytes()
    msg.is_dense = False
    return msg


def unpack_candidates(msg: Any) -> np.ndarray:
    """Read a candidates PointCloud2 as a ``CANDIDATE_DTYPE`` array; ValueError if not one."""
    names = [f.name for f in msg.fields]
    if names != [n for n, _, _ in _FIELDS] or msg.point_step != CANDIDATE_DTYPE.itemsize:
        raise ValueError(f"not a vpr candidates cloud (fields {names}, step {msg.point_step})")
    return np.frombuffer(bytes(msg.data), dtype=CANDIDATE_DTYPE, count=msg.width * msg.height)


def make_diagnostics(stamp: Any, name: str, hardware_id: str, level: bytes | int, message: str,
                     values: Mapping[str, Any]) -> DiagnosticArray:
    """Build a DiagnosticArray with one status; floats get 4 significant digits.

    ``level``: ``DiagnosticStatus.OK`` / ``WARN`` / ``ERROR`` / ``STALE`` (or the same as int).
    """
    status = DiagnosticStatus()
    status.level = level if isinstance(level, bytes) else bytes([level])
    status.name, status.message, status.hardware_id = name, message, hardware_id
    status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [status]
    return arr


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def make_markers(header: Any, cands: np.ndarray, ns: str = "vpr_candidates") -> Any:
    """visualization_msgs/MarkerArray: a sphere per candidate with a pose (size ~ score)."""
    from visualization_msgs.msg import Marker, MarkerArray

    out = MarkerArray()
    clear = Marker()
    clear.header, clear.ns, clear.action = header, ns, Marker.DELETEALL
    out.markers.append(clear)
    for i, row in enumerate(cands):
        if not np.isfinite(row["x"]):
            continue
        m = Marker()
        m.header, m.ns, m.id = header, ns, i
        m.type, m.action = Marker.SPHERE, Marker.ADD
        m.pose.position.x, m.pose.position.y = float(row["x"]), float(row["y"])
        m.pose.position.z = float(row["z"])
        m.pose.orientation.w = 1.0
        size = 0.5 + 2.0 * max(0.0, float(row["score"]))
        m.scale.x = m.scale.y = m.scale.z = size
        best = bool(row["flags"] & FLAG_BEST)
        rgba = (0.1, 0.9, 0.1, 0.9) if best else (0.9, 0.6, 0.1, 0.6)
        m.color.r, m.color.g, m.color.b, m.color.a = rgba
        out.markers.append(m)
    return out
