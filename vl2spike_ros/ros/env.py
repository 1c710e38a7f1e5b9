"""Environment that confines ROS 2 / DDS traffic to this machine (no rclpy import).

Used by the tests, the demo and the benchmarks before any ``rclpy.init()`` or node subprocess:
the package's Fast DDS profile (UDPv4 on 127.0.0.1 + shared memory, built-in transports off,
unicast discovery with 127.0.0.1 as initial peer, no multicast), applied unchanged thanks to
``ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT``, a per-run ``ROS_DOMAIN_ID`` and a
``ROS_LOG_DIR`` in a temporary folder.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

PROFILE_NAME = "fastdds_loopback.xml"


def fastdds_profile_path() -> Path:
    """Return the loopback-only Fast DDS profile shipped with the package (source or share)."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "config" / PROFILE_NAME]
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("vl2spike_ros"))
        candidates.append(share / "config" / PROFILE_NAME)
    except Exception:  # noqa: BLE001 - ament index absent or package not installed
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{PROFILE_NAME} not found (tried {', '.join(map(str, candidates))})")


def loopback_env(domain_id: int | None = None, log_dir: str | None = None) -> dict[str, str]:
    """Variables to add to ``os.environ`` (or a subprocess env) for loopback-only DDS."""
    profile = str(fastdds_profile_path())
    if domain_id is None:
        domain_id = random.SystemRandom().randint(1, 100)
    if log_dir is None:
        log_dir = tempfile.mkdtemp(prefix="vl2spike_roslog_")
    return {
        # SYSTEM_DEFAULT: rmw leaves the transports to the XML profile. With LOCALHOST,
        # rmw_fastrtps appends its own UDPv4 transport without a whitelist, which binds sockets
        # on 0.0.0.0 and every interface (seen with `ss -uanp`); the profile keeps all on
        # 127.0.0.1.
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT",
        "FASTDDS_DEFAULT_PROFILES_FILE": profile,
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_LOG_DIR": log_dir,
    }


def apply_loopback_env(domain_id: int | None = None, log_dir: str | None = None) -> dict[str, str]:
    """Set :func:`loopback_env` in ``os.environ`` (before ``rclpy.init``) and return it."""
    env = loopback_env(domain_id, log_dir)
    # ROS_LOCALHOST_ONLY=1 (deprecated) would switch rcl back to the LOCALHOST behaviour above.
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.update(env)
    return env
