"""Read and write ROS 2 bags of images and poses with ``rosbags`` (mcap and sqlite3, no rclpy).

* :func:`write_image_bag` writes a bag folder atomically (temporary folder + rename), as
  :class:`BagWriteOptions` say;
* :func:`read_image_bag` yields :class:`BagFrame` ``(stamp_ns, image, header_stamp_ns)`` from a raw
  ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` topic (auto-detected when unique);
* :func:`read_poses` reads ``nav_msgs/Odometry``, ``geometry_msgs/PoseStamped``,
  ``geometry_msgs/PoseWithCovarianceStamped`` or ``sensor_msgs/NavSatFix`` (local metres from
  a geodetic origin, :func:`read_fix_origin`);
* :func:`interpolate_poses` gives positions (linear) and orientations (slerp) at other times
  (pose geometry lives in :mod:`vl2spike_ros.io.poses`, re-exported here).

Images are arrays as in :mod:`vl2spike_ros.io.images` (``[H, W]`` or ``[H, W, C]`` RGB).
Quaternions are ``(x, y, z, w)``. Times are integer nanoseconds.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from vl2spike_ros.io.images import (
    _rosbags_header,
    array_to_compressed_msg,
    array_to_image_msg,
    default_typestore,
    msg_to_array,
    stamp_ns,
)
from vl2spike_ros.io.poses import interpolate_poses, latlon_to_local, local_to_latlon

log = logging.getLogger(__name__)

__all__ = [
    "STORAGES", "POSE_TYPES", "IMAGE_TYPES", "BagFrame", "TopicSummary", "BagWriteSummary",
    "BagWriteOptions", "write_image_bag", "read_image_bag", "list_topics", "bag_info",
    "read_poses", "read_fix_origin",
    "interpolate_poses", "latlon_to_local", "local_to_latlon",
]

STORAGES = ("mcap", "sqlite3")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = {
    "odometry": "nav_msgs/msg/Odometry",
    "pose_stamped": "geometry_msgs/msg/PoseStamped",
    "pose_with_covariance": "geometry_msgs/msg/PoseWithCovarianceStamped",
    "navsatfix": "sensor_msgs/msg/NavSatFix",
}


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


@dataclass(frozen=True)
class BagWriteOptions:
    """How :func:`write_image_bag` writes a bag (``vl2spike bag write`` options).

    Frame ``i`` is stamped ``start_ns + i / rate_hz`` (header and bag time; ``start_ns`` None =
    now). ``topic`` None -> ``/camera/image_raw`` (``.../compressed`` when ``compressed``).
    ``encoding`` None infers it per raw frame (mono8/rgb8/...); compressed frames use
    ``compressed_format`` (jpeg/png) at JPEG ``quality``. Poses go to ``pose_topic`` as
    ``pose_type`` messages in ``pose_frame_id``. ``version``: rosbag2 metadata version.
    """

    topic: str | None = None
    storage: str = "mcap"
    compressed: bool = False
    encoding: str | None = None
    rate_hz: float = 10.0
    start_ns: int | None = None
    frame_id: str = "camera"
    compressed_format: str = "jpeg"
    quality: int = 90
    pose_topic: str = "/odom"
    pose_type: str = "odometry"
    pose_frame_id: str = "map"
    overwrite: bool = False
    version: int = 9

    def resolved(self) -> "BagWriteOptions":
        """Return a checked copy with the default topic and start time filled in."""
        _storage_plugin(self.storage)
        if self.pose_type not in POSE_TYPES:
            raise ValueError(f"unknown pose_type {self.pose_type!r} "
                             f"(use one of {', '.join(POSE_TYPES)})")
        if not (self.rate_hz > 0 and math.isfinite(self.rate_hz)):
            raise ValueError(f"rate_hz must be a positive number, got {self.rate_hz}")
        default_topic = "/camera/image_raw/compressed" if self.compressed else "/camera/image_raw"
        return dataclasses.replace(
            self, topic=self.topic or default_topic, rate_hz=float(self.rate_hz),
            start_ns=time.time_ns() if self.start_ns is None else int(self.start_ns))


# ----------------------------------------------------------------------------- writing


def _pose_msg(pose: Sequence[float], pose_type: str, stamp: int, frame_id: str) -> Any:
    """Build a rosbags ``pose_type`` message from ``(x, y, z[, qx, qy, qz, qw])``.

    For navsatfix the numbers are ``(lat, lon, alt)``.
    """
    types = default_typestore().types
    vals = [float(v) for v in pose]
    if len(vals) not in (3, 7):
        raise ValueError(f"a pose needs 3 (x, y, z) or 7 (x, y, z, qx, qy, qz, qw) numbers, "
                         f"got {len(vals)}")
    header = _rosbags_header(stamp, frame_id)
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
    return types["nav_msgs/msg/Odometry"](header=header, child_frame_id="base_link", pose=pwc,
                                          twist=twist)


def _storage_plugin(storage: str):
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise ValueError(f"unknown bag storage {storage!r} (use one of {', '.join(STORAGES)})")
    return StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3


def _write_frames(writer, frames, poses, opts: BagWriteOptions) -> tuple[int, int, int]:
    """Write frames (and poses) to an open rosbags ``writer``; return (frames, poses, last stamp).

    ``opts`` must be resolved (:meth:`BagWriteOptions.resolved`).
    """
    ts = default_typestore()
    img_type = IMAGE_TYPES[1] if opts.compressed else IMAGE_TYPES[0]
    img_conn = writer.add_connection(opts.topic, img_type, typestore=ts)
    pose_type = POSE_TYPES[opts.pose_type]
    pose_conn = None
    if poses is not None:
        pose_conn = writer.add_connection(opts.pose_topic, pose_type, typestore=ts)
        poses = iter(poses)
    n, stamp = 0, opts.start_ns
    for n, frame in enumerate(frames, start=1):
        stamp = opts.start_ns + round((n - 1) * 1e9 / opts.rate_hz)
        if opts.compressed:
            msg = array_to_compressed_msg(frame, opts.compressed_format, opts.quality,
                                          stamp_ns=stamp, frame_id=opts.frame_id)
        else:
            msg = array_to_image_msg(frame, opts.encoding, stamp_ns=stamp,
                                     frame_id=opts.frame_id)
        writer.write(img_conn, stamp, ts.serialize_cdr(msg, img_type))
        if pose_conn is not None:
            pose = next(poses, None)
            if pose is None:
                raise ValueError(f"fewer poses than frames: no pose for frame {n}")
            pmsg = _pose_msg(pose, opts.pose_type, stamp, opts.pose_frame_id)
            writer.write(pose_conn, stamp, ts.serialize_cdr(pmsg, pose_type))
    if n == 0:
        raise ValueError("no frames to write: the image sequence is empty")
    if pose_conn is not None and next(poses, None) is not None:
        raise ValueError(f"more poses than frames ({n} frames)")
    return n, (n if pose_conn is not None else 0), stamp


def write_image_bag(path: str | os.PathLike, frames: Iterable[np.ndarray],
                    options: BagWriteOptions = BagWriteOptions(),
                    poses: Iterable[Sequence[float]] | None = None) -> BagWriteSummary:
    """Write ``frames`` (``[H, W]``/``[H, W, C]`` arrays, RGB) as a rosbag2 folder at ``path``.

    ``poses``: one per frame, ``(x, y, z)`` or ``(x, y, z, qx, qy, qz, qw)``; for
    ``options.pose_type="navsatfix"`` ``(lat_deg, lon_deg, alt_m)``. Frames may be a generator
    (streamed). The bag appears only when complete; an existing ``path`` raises
    ``FileExistsError`` unless ``options.overwrite``.
    """
    from rosbags.rosbag2 import Writer, WriterError

    opts = options.resolved()
    path = Path(path)
    if path.exists() and not opts.overwrite:
        raise FileExistsError(f"{path} exists already "
                              "(pass overwrite=True / --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp_bag = tmp_root / path.name
        try:
            with Writer(tmp_bag, version=opts.version,
                        storage_plugin=_storage_plugin(opts.storage)) as writer:
                n, n_poses, end = _write_frames(writer, frames, poses, opts)
        except WriterError as exc:
            raise ValueError(f"cannot write bag {path}: {exc}") from exc
        _replace_dir(tmp_bag, path, opts.overwrite)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    log.info("wrote %d frames (%d poses) to %s [%s]", n, n_poses, path, opts.storage)
    return BagWriteSummary(path, n, n_poses, opts.start_ns, end)


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
    """Open a rosbags Reader; clear FileNotFoundError / ValueError for missing/corrupt bags."""
    from rosbags.rosbag2 import Reader

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"bag {p} does not exist")
    try:
        reader = Reader(p)
        reader.open()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{p} is not a rosbag2 bag (no metadata.yaml or storage file): "
                                f"{exc}") from exc
    except Exception as exc:  # noqa: BLE001 - storage libraries raise their own errors
        raise ValueError(f"cannot read bag {p}: corrupt or unsupported "
                         f"({type(exc).__name__}: {exc})") from exc
    return reader


def list_topics(path: str | os.PathLike) -> dict[str, TopicSummary]:
    """``{topic: TopicSummary(msgtype, count)}`` of the bag at ``path``."""
    reader = _open_reader(path)
    try:
        return {name: TopicSummary(info.msgtype or "", int(info.msgcount))
                for name, info in reader.topics.items()}
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
            "storage": ", ".join(n for n, suf in (("mcap", ".mcap"), ("sqlite3", ".db3"))
                                 if suf in suffixes),
            "messages": count,
            "start_ns": int(reader.start_time) if count else None,
            # rosbags' end_time is exclusive
            "end_ns": int(reader.end_time) - 1 if count else None,
            "duration_s": ((int(reader.end_time) - 1 - int(reader.start_time)) / 1e9
                           if count else 0.0),
            "ros_distro": reader.ros_distro,
            "topics": {n: {"type": i.msgtype, "count": int(i.msgcount)}
                       for n, i in reader.topics.items()},
        }
    finally:
        reader.close()
    return info


def _pick_topic(path, topics: dict[str, TopicSummary], topic: str | None, wanted: Sequence[str],
                what: str) -> str:
    if topic is not None:
        if topic not in topics:
            raise ValueError(f"topic {topic!r} not in bag {path} "
                             f"(topics: {', '.join(sorted(topics)) or 'none'})")
        if topics[topic].msgtype not in wanted:
            raise ValueError(f"topic {topic!r} in {path} has type {topics[topic].msgtype}, "
                             f"not {what}")
        return topic
    found = sorted(t for t, s in topics.items() if s.msgtype in wanted)
    if len(found) != 1:
        listing = ", ".join(f"{t} [{s.msgtype}]" for t, s in sorted(topics.items())) or "none"
        reason = "no" if not found else f"{len(found)}"
        raise ValueError(f"{reason} {what} topics in bag {path}; pass a topic (topics: {listing})")
    return found[0]


def read_image_bag(path: str | os.PathLike, topic: str | None = None,
                   max_pixels: int | None = None) -> Iterator[BagFrame]:
    """Iterate :class:`BagFrame` ``(stamp_ns, image, header_stamp_ns)`` in bag-time order.

    ``topic`` None picks the only ``sensor_msgs/Image`` or ``CompressedImage`` topic (ValueError
    if there are none or several). Errors about the bag are raised here, before iterating;
    a corrupt message or storage chunk (mcap chunk CRCs are checked where the bag has them),
    an undecodable frame or one above ``max_pixels`` (None: the default limit of
    :mod:`vl2spike_ros.io.decode`) raises ValueError naming its topic and time.
    """
    topics = list_topics(path)
    chosen = _pick_topic(path, topics, topic, IMAGE_TYPES,
                         "image (sensor_msgs/Image or CompressedImage)")
    if topics[chosen].count == 0:
        raise ValueError(f"image topic {chosen!r} in bag {path} has no messages")
    return _iter_images(path, chosen, max_pixels)


def _checked_messages(reader, conns, path, topic: str) -> Iterator[tuple[Any, int, bytes]]:
    """``reader.messages`` with storage errors (chunk CRC mismatch, cut records) as ValueError."""
    it, last = reader.messages(connections=conns), None
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - rosbags / storage plugins raise their own errors
            where = (f"after the message at {last} ns" if last is not None
                     else "at its first message")
            raise ValueError(f"corrupt bag {path}: reading {topic} failed {where} "
                             f"({type(exc).__name__}: {exc})") from exc
        last = item[1]
        yield item


def _iter_images(path, topic: str, max_pixels: int | None = None) -> Iterator[BagFrame]:
    ts = default_typestore()
    reader = _open_reader(path)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, t, raw in _checked_messages(reader, conns, path, topic):
            try:
                msg = ts.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # noqa: BLE001 - rosbags raises assorted errors on bad CDR
                raise ValueError(f"corrupt {conn.msgtype} message on {topic} at {t} ns in {path}: "
                                 f"{exc}") from exc
            try:
                image = msg_to_array(msg, max_pixels)
            except ValueError as exc:
                raise type(exc)(f"{path}: frame on {topic} at {t} ns: {exc}") from exc
            yield BagFrame(int(t), image, stamp_ns(msg))
    finally:
        reader.close()


def _pose_of(msg: Any, msgtype: str) -> tuple[list[float], list[float]] | None:
    """Return (xyz, quat) of one pose message; navsatfix: (lat, lon, alt) + identity, or None."""
    if msgtype == POSE_TYPES["navsatfix"]:
        fix = math.isfinite(msg.latitude) and math.isfinite(msg.longitude)
        if int(msg.status.status) < 0 or not fix:
            return None
        return [msg.latitude, msg.longitude, msg.altitude], [0.0, 0.0, 0.0, 1.0]
    with_cov = (POSE_TYPES["odometry"], POSE_TYPES["pose_with_covariance"])
    pose = msg.pose.pose if msgtype in with_cov else msg.pose
    p, q = pose.position, pose.orientation
    return [p.x, p.y, p.z], [q.x, q.y, q.z, q.w]


def read_poses(
    path: str | os.PathLike, topic: str | None = None, use_header_stamp: bool = True,
    raw_fixes: bool = False, origin: tuple[float, float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read poses: ``(stamps_ns int64 [N], xyz [N, 3], quat [N, 4] (x, y, z, w))`` by time.

    Reads Odometry / PoseStamped / PoseWithCovarianceStamped / NavSatFix (``topic`` None: the only
    such topic). NavSatFix becomes east/north/up metres from ``origin`` (lat, lon, alt; None: the
    first fix, see :func:`read_fix_origin`) by :func:`~vl2spike_ros.io.poses.latlon_to_local`,
    orientation identity; fixes with ``status < 0`` are skipped. Stamps are header stamps (bag
    time where a header stamp is zero) unless ``use_header_stamp`` is False. ``raw_fixes``:
    NavSatFix stays (lat, lon, alt), e.g. to put several bags in one local frame.
    """
    topics = list_topics(path)
    chosen = _pick_topic(path, topics, topic, tuple(POSE_TYPES.values()),
                         "pose (Odometry/PoseStamped/NavSatFix)")
    ts, reader = default_typestore(), _open_reader(path)
    stamps, xyz, quat = [], [], []
    try:
        conns = [c for c in reader.connections if c.topic == chosen]
        for conn, t, raw in reader.messages(connections=conns):
            try:
                msg = ts.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"corrupt {conn.msgtype} message on {chosen} at {t} ns in "
                                 f"{path}: {exc}") from exc
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
    st = np.asarray(stamps, np.int64)[order]
    p, q = np.asarray(xyz, float)[order], np.asarray(quat, float)[order]
    if topics[chosen].msgtype == POSE_TYPES["navsatfix"] and not raw_fixes:
        p = latlon_to_local(p[:, 0], p[:, 1], p[:, 2], origin)
    return st, p, q


def read_fix_origin(path: str | os.PathLike,
                    topic: str | None = None) -> tuple[float, float, float] | None:
    """First usable fix ``(lat, lon, alt)`` (by stamp) of a NavSatFix pose topic, else None.

    ``topic`` None: the only pose topic (as :func:`read_poses`). This is the origin
    :func:`read_poses` measures NavSatFix positions from when it is given none.
    """
    topics = list_topics(path)
    chosen = _pick_topic(path, topics, topic, tuple(POSE_TYPES.values()),
                         "pose (Odometry/PoseStamped/NavSatFix)")
    if topics[chosen].msgtype != POSE_TYPES["navsatfix"]:
        return None
    _, fixes, _ = read_poses(path, chosen, raw_fixes=True)
    return tuple(float(v) for v in fixes[0])
