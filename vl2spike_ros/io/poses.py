"""Pose geometry for bags (numpy only): GNSS fixes to local metres, pose interpolation.

Quaternions are ``(x, y, z, w)``; times are integer nanoseconds.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["EARTH_RADIUS_M", "latlon_to_local", "interpolate_poses"]

EARTH_RADIUS_M = 6_371_000.0


def latlon_to_local(lat_deg: np.ndarray, lon_deg: np.ndarray, alt_m: np.ndarray,
                    origin: tuple[float, float, float] | None = None) -> np.ndarray:
    """Equirectangular ``[N, 3]`` east/north/up metres from ``origin`` (default: first fix)."""
    lat, lon, alt = (np.asarray(v, dtype=np.float64) for v in (lat_deg, lon_deg, alt_m))
    lat0, lon0, alt0 = origin if origin is not None else (lat[0], lon[0], alt[0])
    dlon = (lon - lon0 + 180.0) % 360.0 - 180.0
    east = EARTH_RADIUS_M * np.radians(dlon) * math.cos(math.radians(lat0))
    north = EARTH_RADIUS_M * np.radians(lat - lat0)
    return np.stack([east, north, alt - alt0], axis=1)


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
