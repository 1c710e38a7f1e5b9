"""Shared pytest fixtures.

ROS 2: before anything can call ``rclpy.init()`` the whole test session is confined to
loopback-only DDS (see :mod:`vl2spike_ros.ros.env`), with a per-run domain id and log folder.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from vl2spike_ros.ros.env import apply_loopback_env

REPO_ROOT = Path(__file__).resolve().parents[1]
ROS_ENV = apply_loopback_env(log_dir=tempfile.mkdtemp(prefix="vl2spike_test_roslog_"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ros: needs rclpy (real DDS over loopback)")
    config.addinivalue_line("markers", "data: needs ../shared/data (skipped when absent)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """Return the loopback-only ROS environment (subprocesses: ``{**os.environ, **ros_env}``)."""
    return dict(ROS_ENV)


@pytest.fixture()
def rclpy_context(ros_env):
    """Yield a fresh rclpy context, shut down after the test."""
    rclpy = pytest.importorskip("rclpy")
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)


@pytest.fixture(scope="session")
def data_root() -> Path:
    from vl2spike_ros.paths import data_root as _data_root

    root = _data_root(required=False)
    if root is None:
        pytest.skip("real data (../shared/data or $VL2SPIKE_DATA_ROOT) not available")
    return root
