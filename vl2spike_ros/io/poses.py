"""Pose geometry for bags (numpy only): GNSS fixes <-> local metres, pose interpolation.

Quaternions are ``(x, y, z, w)``; times are integer nanoseconds.

**GNSS fixes to local metres.** :func:`latlon_to_local` is the one conversion used everywhere
(NavSatFix poses of bags, ``vl2spike map build``, the node's mapping mode); its exact inverse is
:func:`local_to_latlon` (match -> latitude/longitude). It is an equirectangular projection about
an origin ``(lat0, lon0, alt0)`` with the WGS84 radii of curvature at ``lat0``::

    north = M(lat0) * (lat - lat0)
    east  = N(lat0) * cos((lat + lat0) / 2) * (lon - lon0)      (angles in radians)
    up    = alt - alt0

``M`` and ``N`` are the meridional and prime-vertical radii; the longitude difference is wrapped
to [-180, 180) degrees (the antimeridian is crossed correctly). Because ``north`` gives the
latitude directly, the inverse is closed-form: lat/lon -> east/north -> lat/lon returns the same
numbers to ~1e-12 degrees. Error bound (distances in the local frame vs WGS84 distances between
points within ``D`` of the origin, measured): relative error about ``D * tan|lat0| / (2 R)``
(R = 6371 km), e.g. at 60 deg latitude 1.3e-4 within 1 km, 6.6e-4 within 5 km (3 m on a 5 km
distance, 1.6 cm on a 25 m place radius), 1.3e-3 within 10 km; near the equator < 1e-6. Fine
for a route of a few km; start a new map (origin) per site for larger areas. ``up`` is the
altitude difference (the Earth's curvature drop is not subtracted). Origins within 1 degree of
a pole are refused.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["EARTH_RADIUS_M", "WGS84_A", "WGS84_F", "latlon_to_local", "local_to_latlon",
           "interpolate_poses"]

EARTH_RADIUS_M = 6_371_000.0  # mean radius (for error estimates)
WGS84_A = 6_378_137.0  # semi-major axis, m
WGS84_F = 1.0 / 298.257223563  # flattening
_E2 = WGS84_F * (2.0 - WGS84_F)  # first eccentricity squared
MAX_ORIGIN_LAT = 89.0  # degrees: the projection degenerates at the poles


def _origin_radii(lat0_deg: float) -> tuple[float, float]:
    """Meridional and prime-vertical radii of curvature (m) at latitude ``lat0_deg``."""
    if not (math.isfinite(lat0_deg) and abs(lat0_deg) <= MAX_ORIGIN_LAT):
        raise ValueError(f"origin latitude {lat0_deg} must be finite and within "
                         f"+-{MAX_ORIGIN_LAT} degrees")
    s2 = math.sin(math.radians(lat0_deg)) ** 2
    n = WGS84_A / math.sqrt(1.0 - _E2 * s2)
    return n * (1.0 - _E2) / (1.0 - _E2 * s2), n


def latlon_to_local(lat_deg: np.ndarray, lon_deg: np.ndarray, alt_m: np.ndarray,
                    origin: tuple[float, float, float] | None = None) -> np.ndarray:
    """East/north/up metres ``[N, 3]`` of fixes ``[N]`` from ``origin`` (default: first fix)."""
    lat, lon, alt = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in
                     (lat_deg, lon_deg, alt_m))
    lat0, lon0, alt0 = (float(v) for v in (origin if origin is not None
                                           else (lat[0], lon[0], alt[0])))
    m, n = _origin_radii(lat0)
    dlon = (lon - lon0 + 180.0) % 360.0 - 180.0
    east = n * np.cos(np.radians((lat + lat0) / 2.0)) * np.radians(dlon)
    north = m * np.radians(lat - lat0)
    return np.stack([east, north, alt - alt0], axis=1)


def local_to_latlon(east_m: np.ndarray, north_m: np.ndarray, up_m: np.ndarray,
                    origin: tuple[float, float, float]) -> np.ndarray:
    """Inverse of :func:`latlon_to_local`: ``[N, 3]`` (lat deg, lon deg in [-180, 180), alt m)."""
    east, north, up = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in
                       (east_m, north_m, up_m))
    lat0, lon0, alt0 = (float(v) for v in origin)
    m, n = _origin_radii(lat0)
    lat = lat0 + np.degrees(north / m)
    lon = lon0 + np.degrees(east / (n * np.cos(np.radians((lat + lat0) / 2.0))))
    return np.stack([lat, (lon + 180.0) % 360.0 - 180.0, up + alt0], axis=1)


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
    pose_stamps: np.ndarray, xyz: np.ndarray, quat: np.ndarray, query_stamps: np.ndarray,
    outside: str = "clamp"
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
        raise ValueError(f"{int(out_of_range.sum())} query stamps outside the pose range "
                         f"[{s[0]}, {s[-1]}]")
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
