"""Read and write ROS 2 bags of images and poses with ``rosbags`` (mcap and sqlite3, no rclpy).

* :func:`write_image_bag` writes a bag folder atomically (temporary folder + rename);
* :func:`read_image_bag` yields :class:`BagFrame` ``(stamp_ns, image, header_stamp_ns)`` from a raw
  ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` topic (auto-detected when unique);
* :func:`read_poses` reads ``nav_msgs/Odometry``, ``geometry_msgs/PoseStamped``,
  ``geometry_msgs/PoseWithCovarianceStamped`` or ``sensor_msgs/NavSatFix`` (local metres);
* :func:`interpolate_poses` gives positions (linear) and orientations (slerp) at other times.

Images are arrays as in :mod:`vl2spike_ros.io.images` (``[H, W]`` or ``[H, W, C]`` RGB).
Quaternions are ``(x, y, z, w)``. Times are integer nanoseconds.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from vl2spike_ros.io.images import (
    array_to_compressed_msg,
    array_to_image_msg,
    default_typestore,
    msg_to_array,
    stamp_ns,
)

log = logging.getLogger(__name__)

__all__ = [
    "STORAGES", "POSE_TYPES", "IMAGE_TYPES", "BagFrame", "TopicSummary", "BagWriteSummary",
    "write_image_bag", "read_image_bag", "list_topics", "bag_info", "read_poses",
    "interpolate_poses", "latlon_to_local",
]

STORAGES = ("mcap", "sqlite3")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = {
    "odometry": "nav_msgs/msg/Odometry",
    "pose_stamped": "geometry_msgs/msg/PoseStamped",
    "pose_with_covariance": "geometry_msgs/msg/PoseWithCovarianceStamped",
    "navsatfix": "sensor_msgs/msg/NavSatFix",
}
EARTH_RADIUS_M = 6_371_000.0


class BagFrame(NamedTuple):
    """One image from a bag: bag (receive) time, the array, and the message header time."""

    stamp_ns: int
    image: np.ndarray
    header_stamp_ns: int


class TopicSummary(NamedTuple):
    msgtype: str
    count: int


class BagWriteSummary(NamedTuple):
    path: Path
    frames: int
    poses: int
    start_ns: int
    end_ns: int


# ----------------------------------------------------------------------------- writing


def _pose_msg(pose: Sequence[float], pose_type: str, stamp: int, frame_id: str) -> Any:
    """A rosbags message of ``pose_type`` from ``(x, y, z[, qx, qy, qz, qw])`` (navsatfix: lat, lon, alt)."""
    types = default_typestore().types
    vals = [float(v) for v in pose]
    if len(vals) not in (3, 7):
        raise ValueError(f"a pose needs 3 (x, y, z) or 7 (x, y, z, qx, qy, qz, qw) numbers, got {len(vals)}")
    t = types["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000)
    header = types["std_msgs/msg/Header"](stamp=t, frame_id=frame_id)
    if pose_type == "navsatfix":
        status = types["sensor_msgs/msg/NavSatStatus"](status=0, service=1)
        return types["sensor_msgs/msg/NavSatFix"](
            header=header, status=status, latitude=vals[0], longitude=vals[1], altitude=vals[2],
            position_covariance=np.zeros(9), position_covariance_type=0,
        )
    q = np.asarray(vals[3:] if len(vals) == 7 else [0.0, 0.0, 0.0, 1.0])
    norm = float(np.linalg.norm(q))
    if not norm > 0:
        raise ValueError(f"pose quaternion {q.tolist()} has zero norm")
    q = q / norm
    point = types["geometry_msgs/msg/Point"](x=vals[0], y=vals[1], z=vals[2])
    quat = types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])
    p = types["geometry_msgs/msg/Pose"](position=point, orientation=quat)
    if pose_type == "pose_stamped":
        return types["geometry_msgs/msg/PoseStamped"](header=header, pose=p)
    pwc = types["geometry_msgs/msg/PoseWithCovariance"](pose=p, covariance=np.zeros(36))
    if pose_type == "pose_with_covariance":
        return types["geometry_msgs/msg/PoseWithCovarianceStamped"](header=header, pose=pwc)
    zero = types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    twist = types["geometry_msgs/msg/TwistWithCovariance"](
        twist=types["geometry_msgs/msg/Twist"](linear=zero, angular=zero), covariance=np.zeros(36)
    )
    return types["nav_msgs/msg/Odometry"](header=header, child_frame_id="base_link", pose=pwc, twist=twist)


def _storage_plugin(storage: str):
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise ValueError(f"unknown bag storage {storage!r} (use one of {', '.join(STORAGES)})")
    return StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3


def _write_frames(writer, frames, poses, opts: dict) -> tuple[int, int, int]:
    """Write frames (and poses) to an open rosbags ``writer``; return (frames, poses, last stamp)."""
    ts = default_typestore()
    img_type = IMAGE_TYPES[1] if opts["compressed"] else IMAGE_TYPES[0]
    img_conn = writer.add_connection(opts["topic"], img_type, typestore=ts)
    pose_conn = None
    if poses is not None:
        pose_conn = writer.add_connection(opts["pose_topic"], POSE_TYPES[opts["pose_type"]], typestore=ts)
        poses = iter(poses)
    n, stamp = 0, opts["start_ns"]
    for n, frame in enumerate(frames, start=1):
        stamp = opts["start_ns"] + round((n - 1) * 1e9 / opts["rate_hz"])
        if opts["compressed"]:
            msg = array_to_compressed_msg(frame, opts["compressed_format"], opts["quality"],
                                          stamp_ns=stamp, frame_id=opts["frame_id"])
        else:
            msg = array_to_image_msg(frame, opts["encoding"], stamp_ns=stamp, frame_id=opts["frame_id"])
        writer.write(img_conn, stamp, ts.serialize_cdr(msg, img_type))
        if pose_conn is not None:
            pose = next(poses, None)
            if pose is None:
                raise ValueError(f"fewer poses than frames: no pose for frame {n}")
            pmsg = _pose_msg(pose, opts["pose_type"], stamp, opts["pose_frame_id"])
            writer.write(pose_conn, stamp, ts.serialize_cdr(pmsg, POSE_TYPES[opts["pose_type"]]))
    if n == 0:
        raise ValueError("no frames to write: the image sequence is empty")
    if pose_conn is not None and next(poses, None) is not None:
        raise ValueError(f"more poses than frames ({n} frames)")
    return n, (n if pose_conn is not None else 0), stamp


def write_image_bag(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    topic: str | None = None,
    storage: str = "mcap",
    compressed: bool = False,
    encoding: str | None = None,
    rate_hz: float = 10.0,
    start_ns: int | None = None,
    frame_id: str = "camera",
    poses: Iterable[Sequence[float]] | None = None,
    pose_topic: str = "/odom",
    pose_type: str = "odometry",
    *,
    compressed_format: str = "jpeg",
    quality: int = 90,
    pose_frame_id: str = "map",
    overwrite: bool = False,
    version: int = 9,
    fmt: str | None = None,
) -> BagWriteSummary:
    """Write ``frames`` (``[H, W]``/``[H, W, C]`` arrays, RGB) as a rosbag2 folder at ``path``.

    Frame ``i`` is stamped ``start_ns + i / rate_hz`` (header and bag time; ``start_ns`` None =
    now). ``topic`` None -> ``/camera/image_raw`` (``.../compressed`` when ``compressed``).
    ``encoding`` None infers it per frame (mono8/rgb8/...). ``poses``: one per frame, ``(x, y, z)``
    or ``(x, y, z, qx, qy, qz, qw)``; for ``pose_type="navsatfix"`` ``(lat_deg, lon_deg, alt_m)``.
    ``fmt`` is an alias of ``storage``. Frames may be a generator (streamed). The bag appears only
    when complete; an existing ``path`` raises ``FileExistsError`` unless ``overwrite``.
    """
    from rosbags.rosbag2 import Writer, WriterError

    storage = fmt or storage
    plugin = _storage_plugin(storage)
    if pose_type not in POSE_TYPES:
        raise ValueError(f"unknown pose_type {pose_type!r} (use one of {', '.join(POSE_TYPES)})")
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise ValueError(f"rate_hz must be a positive number, got {rate_hz}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists already (pass overwrite=True / --overwrite to replace it)")
    opts = dict(
        topic=topic or ("/camera/image_raw/compressed" if compressed else "/camera/image_raw"),
        compressed=compressed, encoding=encoding, rate_hz=float(rate_hz), frame_id=frame_id,
        start_ns=time.time_ns() if start_ns is None else int(start_ns), pose_topic=pose_topic,
        pose_type=pose_type, compressed_format=compressed_format, quality=quality,
        pose_frame_id=pose_frame_id,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp_bag = tmp_root / path.name
        try:
            with Writer(tmp_bag, version=version, storage_plugin=plugin) as writer:
                n, n_poses, end = _write_frames(writer, frames, poses, opts)
        except WriterError as exc:
            raise ValueError(f"cannot write bag {path}: {exc}") from exc
        _replace_dir(tmp_bag, path, overwrite)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    log.info("wrote %d frames (%d poses) to %s [%s]", n, n_poses, path, storage)
    return BagWriteSummary(path, n, n_poses, opts["start_ns"], end)


def _replace_dir(src: Path, dst: Path, overwrite: bool) -> None:
    """Move the finished bag folder ``src`` to ``dst`` (replacing it only when ``overwrite``)."""
    if not dst.exists():
        os.rename(src, dst)
        return
    if not overwrite:
        raise FileExistsError(f"{dst} appeared while writing; the new bag was discarded")
    old = dst.parent / f".{dst.name}.old-{os.getpid()}-{time.time_ns()}"
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except OSError:
        os.rename(old, dst)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


# ----------------------------------------------------------------------------- reading


def _open_reader(path: str | os.PathLike):
    """An opened rosbags Reader; clear FileNotFoundError / ValueError for missing/corrupt bags."""
    from rosbags.rosbag2 import Reader, ReaderError

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"bag {p} does not exist")
    try:
        reader = Reader(p)
        reader.open()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{p} is not a rosbag2 bag (no metadata.yaml or storage file): {exc}") from exc
    except (ReaderError, OSError, KeyError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read bag {p}: corrupt or unsupported ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # noqa: BLE001 - storage libraries raise their own errors on corrupt files
        raise ValueError(f"cannot read bag {p}: corrupt or unsupported ({type(exc).__name__}: {exc})") from exc
    return reader


def list_topics(path: str | os.PathLike) -> dict[str, TopicSummary]:
    """``{topic: TopicSummary(msgtype, count)}`` of the bag at ``path``."""
    reader = _open_reader(path)
    try:
        return {name: TopicSummary(info.msgtype or "", int(info.msgcount)) for name, info in reader.topics.items()}
    finally:
        reader.close()


def bag_info(path: str | os.PathLike) -> dict:
    """Summary: path, storage (mcap/sqlite3), message count, start/end/duration (ns), topics."""
    reader = _open_reader(path)
    try:
        count = int(reader.message_count)
        p = Path(path)
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        suffixes = {f.suffix for f in files}
        info = {
            "path": str(path),
            "storage": ", ".join(n for n, suf in (("mcap", ".mcap"), ("sqlite3", ".db3")) if suf in suffixes),
            "messages": count,
            "start_ns": int(reader.start_time) if count else None,
            "end_ns": int(reader.end_time) - 1 if count else None,  # rosbags' end_time is exclusive
            "duration_s": (int(reader.end_time) - 1 - int(reader.start_time)) / 1e9 if count else 0.0,
            "ros_distro": reader.ros_distro,
            "topics": {n: {"type": i.msgtype, "count": int(i.msgcount)} for n, i in reader.topics.items()},
        }
    finally:
        reader.close()
    return info


def _pick_topic(path, topics: dict[str, TopicSummary], topic: str | None, wanted: Sequence[str], what: str) -> str:
    if topic is not None:
        if topic not in topics:
            raise ValueError(f"topic {topic!r} not in bag {path} (topics: {', '.join(sorted(topics)) or 'none'})")
        if topics[topic].msgtype not in wanted:
            raise ValueError(f"topic {topic!r} in {path} has type {topics[topic].msgtype}, not {what}")
        return topic
    found = sorted(t for t, s in topics.items() if s.msgtype in wanted)
    if len(found) != 1:
        listing = ", ".join(f"{t} [{s.msgtype}]" for t, s in sorted(topics.items())) or "none"
        reason = "no" if not found else f"{len(found)}"
        raise ValueError(f"{reason} {what} topics in bag {path}; pass a topic (topics: {listing})")
    return found[0]


def read_image_bag(path: str | os.PathLike, topic: str | None = None) -> Iterator[BagFrame]:
    """Iterate :class:`BagFrame` ``(stamp_ns, image, header_stamp_ns)`` in bag-time order.

    ``topic`` None picks the only ``sensor_msgs/Image`` or ``CompressedImage`` topic (ValueError
    if there are none or several). Errors about the bag are raised here, before iterating;
    a corrupt message raises ValueError naming its topic and time.
    """
    topics = list_topics(path)
    chosen = _pick_topic(path, topics, topic, IMAGE_TYPES, "image (sensor_msgs/Image or CompressedImage)")
    if topics[chosen].count == 0:
        raise ValueError(f"image topic {chosen!r} in bag {path} has no messages")
    return _iter_images(path, chosen)


def _iter_images(path, topic: str) -> Iterator[BagFrame]:
    ts = default_typestore()
    reader = _open_reader(path)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, t, raw in reader.messages(connections=conns):
            try:
                msg = ts.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # noqa: BLE001 - rosbags raises assorted errors on bad CDR
                raise ValueError(f"corrupt {conn.msgtype} message on {topic} at {t} ns in {path}: {exc}") from exc
            yield BagFrame(int(t), msg_to_array(msg), stamp_ns(msg))
    finally:
        reader.close()


def latlon_to_local(lat_deg: np.ndarray, lon_deg: np.ndarray, alt_m: np.ndarray,
                    origin: tuple[float, float, float] | None = None) -> np.ndarray:
    """Equirectangular ``[N, 3]`` east/north/up metres relative to ``origin`` (default: first fix)."""
    lat, lon, alt = (np.asarray(v, dtype=np.float64) for v in (lat_deg, lon_deg, alt_m))
    lat0, lon0, alt0 = origin if origin is not None else (lat[0], lon[0], alt[0])
    dlon = (lon - lon0 + 180.0) % 360.0 - 180.0
    east = EARTH_RADIUS_M * np.radians(dlon) * math.cos(math.radians(lat0))
    north = EARTH_RADIUS_M * np.radians(lat - lat0)
    return np.stack([east, north, alt - alt0], axis=1)


def _pose_of(msg: Any, msgtype: str) -> tuple[list[float], list[float]] | None:
    """(xyz, quat) of one pose message; navsatfix gives (lat, lon, alt) + identity, None if no fix."""
    if msgtype == POSE_TYPES["navsatfix"]:
        if int(msg.status.status) < 0 or not (math.isfinite(msg.latitude) and math.isfinite(msg.longitude)):
            return None
        return [msg.latitude, msg.longitude, msg.altitude], [0.0, 0.0, 0.0, 1.0]
    pose = msg.pose.pose if msgtype in (POSE_TYPES["odometry"], POSE_TYPES["pose_with_covariance"]) else msg.pose
    p, q = pose.position, pose.orientation
    return [p.x, p.y, p.z], [q.x, q.y, q.z, q.w]


def read_poses(
    path: str | os.PathLike, topic: str | None = None, use_header_stamp: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(stamps_ns int64 [N], xyz float64 [N, 3], quat float64 [N, 4] (x, y, z, w))`` sorted by time.

    Reads Odometry / PoseStamped / PoseWithCovarianceStamped / NavSatFix (``topic`` None: the only
    such topic). NavSatFix becomes east/north/up metres from the first fix (equirectangular),
    orientation identity; fixes with ``status < 0`` are skipped. Stamps are header stamps (bag
    time where a header stamp is zero) unless ``use_header_stamp`` is False.
    """
    topics = list_topics(path)
    chosen = _pick_topic(path, topics, topic, tuple(POSE_TYPES.values()), "pose (Odometry/PoseStamped/NavSatFix)")
    ts, reader = default_typestore(), _open_reader(path)
    stamps, xyz, quat = [], [], []
    try:
        conns = [c for c in reader.connections if c.topic == chosen]
        for conn, t, raw in reader.messages(connections=conns):
            try:
                msg = ts.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"corrupt {conn.msgtype} message on {chosen} at {t} ns in {path}: {exc}") from exc
            pq = _pose_of(msg, conn.msgtype)
            if pq is None:
                continue
            hs = stamp_ns(msg)
            stamps.append(hs if (use_header_stamp and hs > 0) else int(t))
            xyz.append(pq[0])
            quat.append(pq[1])
    finally:
        reader.close()
    if not stamps:
        raise ValueError(f"pose topic {chosen!r} in bag {path} has no usable messages")
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    st, p, q = np.asarray(stamps, np.int64)[order], np.asarray(xyz, float)[order], np.asarray(quat, float)[order]
    if topics[chosen].msgtype == POSE_TYPES["navsatfix"]:
        p = latlon_to_local(p[:, 0], p[:, 1], p[:, 2])
    return st, p, q


def _slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Row-wise spherical interpolation of unit quaternions ``[Q, 4]`` at ``t`` ``[Q]``."""
    dot = np.sum(q0 * q1, axis=1)
    q1 = np.where(dot[:, None] < 0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin = np.sin(theta)
    near = sin < 1e-6
    safe = np.where(near, 1.0, sin)
    w0 = np.where(near, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    w1 = np.where(near, t, np.sin(t * theta) / safe)
    out = w0[:, None] * q0 + w1[:, None] * q1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def interpolate_poses(
    pose_stamps: np.ndarray, xyz: np.ndarray, quat: np.ndarray, query_stamps: np.ndarray, outside: str = "clamp"
) -> tuple[np.ndarray, np.ndarray]:
    """Poses at ``query_stamps`` [Q]: ``(xyz [Q, 3] linear, quat [Q, 4] slerp, x-y-z-w)``.

    ``pose_stamps`` [N] must be strictly increasing (as from :func:`read_poses` without
    duplicates). Queries outside ``[first, last]``: ``outside="clamp"`` holds the end pose,
    ``"nan"`` returns NaN rows, ``"error"`` raises ValueError.
    """
    s = np.asarray(pose_stamps, dtype=np.int64).reshape(-1)
    p, q = np.asarray(xyz, dtype=np.float64), np.asarray(quat, dtype=np.float64)
    qs = np.asarray(query_stamps, dtype=np.int64).reshape(-1)
    if s.size == 0:
        raise ValueError("no poses to interpolate")
    if p.shape != (s.size, 3) or q.shape != (s.size, 4):
        raise ValueError(f"xyz {p.shape} / quat {q.shape} must be [{s.size}, 3] / [{s.size}, 4]")
    if np.any(np.diff(s) <= 0):
        raise ValueError("pose_stamps must be strictly increasing")
    if outside not in ("clamp", "nan", "error"):
        raise ValueError(f"outside must be 'clamp', 'nan' or 'error', got {outside!r}")
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("zero-norm quaternion in poses")
    q = q / norms
    out_of_range = (qs < s[0]) | (qs > s[-1])
    if outside == "error" and out_of_range.any():
        raise ValueError(f"{int(out_of_range.sum())} query stamps outside the pose range [{s[0]}, {s[-1]}]")
    if s.size == 1:
        pos, rot = np.repeat(p, qs.size, axis=0), np.repeat(q, qs.size, axis=0)
    else:
        c = np.clip(qs, s[0], s[-1])
        i = np.clip(np.searchsorted(s, c, side="right") - 1, 0, s.size - 2)
        t = (c - s[i]).astype(np.float64) / (s[i + 1] - s[i]).astype(np.float64)
        pos = p[i] + t[:, None] * (p[i + 1] - p[i])
        rot = _slerp(q[i], q[i + 1], t)
    if outside == "nan":
        pos[out_of_range], rot[out_of_range] = np.nan, np.nan
    return pos, rot
