"""GNSS (``sensor_msgs/NavSatFix``) in and out of the node (no rclpy import).

* mapping mode with ``pose_type: navsatfix``: :func:`fix_of` reads a fix, :func:`mapping_pose`
  turns it into east/north/up metres from the map's geodetic origin with
  :func:`vl2spike_ros.io.poses.latlon_to_local` (the conversion ``vl2spike map build`` applies
  to NavSatFix bags); a map without an origin takes the first fix it maps as its origin;
* ``vpr/match_fix``: :func:`make_fix_msg` reports an accepted match's place as latitude /
  longitude (inverse conversion) when the map has an origin.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence, Union

import numpy as np
from sensor_msgs.msg import NavSatFix, NavSatStatus

from vl2spike_ros.io.poses import latlon_to_local, local_to_latlon
from vl2spike_ros.ros.messages import covariance_scale

IDENTITY = [0.0, 0.0, 0.0, 1.0]


class GeoFix(NamedTuple):
    """A usable GNSS fix: WGS84 latitude / longitude (degrees), altitude (m, 0 when unknown)."""

    lat: float
    lon: float
    alt: float


LocalPose = tuple[list[float], list[float], str]  # position, quaternion (x, y, z, w), frame_id
LatestPose = Union[LocalPose, GeoFix]


def fix_of(msg: Any) -> GeoFix | None:
    """Read a NavSatFix; None with NaN latitude / longitude or ``status < 0``.

    ``status < 0`` is STATUS_NO_FIX, or STATUS_UNKNOWN (Kilted's default: a status never set),
    skipped as by :func:`vl2spike_ros.io.bags.read_poses`.
    """
    lat, lon, alt = float(msg.latitude), float(msg.longitude), float(msg.altitude)
    usable = math.isfinite(lat) and math.isfinite(lon)
    if int(msg.status.status) < NavSatStatus.STATUS_FIX or not usable:
        return None
    return GeoFix(lat, lon, alt if math.isfinite(alt) else 0.0)


def mapping_pose(latest: LatestPose, place_map: Any) -> LocalPose:
    """Pose of a new place: an odometry / pose message's as is, a fix's in map metres.

    A fix sets ``place_map``'s geodetic origin when it has none (so that place sits at
    ``(0, 0, 0)``); its frame_id is left empty (the node uses ``map_frame_id``).
    """
    if not isinstance(latest, GeoFix):
        return latest
    if place_map.geo_origin is None:
        place_map.set_geo_origin(*latest)
    enu = latlon_to_local([latest.lat], [latest.lon], [latest.alt], place_map.geo_origin)[0]
    return [float(v) for v in enu], list(IDENTITY), ""


def map_origin(engine: Any) -> tuple[float, float, float] | None:
    """Return the geodetic origin of the engine's map (None: no engine or no origin)."""
    pipe = getattr(engine, "pipe", None)
    return getattr(getattr(pipe, "map", None), "geo_origin", None)


def make_fix_msg(header: Any, origin: Sequence[float], position: Sequence[float],
                 confidence: float | None, position_variance: float) -> NavSatFix:
    """Build the ``vpr/match_fix`` NavSatFix of a place at local ``position`` (x, y, z metres).

    Covariance (east/north/up, m^2, diagonal): ``position_variance`` x
    :func:`~vl2spike_ros.ros.messages.covariance_scale` (confidence), as ``vpr/match_pose``;
    type APPROXIMATED.
    """
    x, y, z = (float(v) for v in position)
    lat, lon, alt = local_to_latlon([x], [y], [z], tuple(origin))[0]
    msg = NavSatFix()
    msg.header = header
    msg.status.status = NavSatStatus.STATUS_FIX
    msg.status.service = 0  # not from a satellite system: from a place match
    msg.latitude, msg.longitude, msg.altitude = float(lat), float(lon), float(alt)
    cov = np.zeros(9)
    cov[[0, 4, 8]] = position_variance * covariance_scale(confidence)
    msg.position_covariance = cov.tolist()
    msg.position_covariance_type = NavSatFix.COVARIANCE_TYPE_APPROXIMATED
    return msg
