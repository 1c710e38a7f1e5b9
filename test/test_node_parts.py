"""Unit tests of the node's parts that need no running node.

Parameter table, mailbox, statistics and message packing.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from vl2spike_ros.ros.frames import LatestSlot, NodeStats, RateLimiter
from vl2spike_ros.ros.params import (PARAM_SPECS, SPEC_BY_NAME, NodeParams, render_markdown_table,
                                     render_yaml, update_markdown)

ROOT = Path(__file__).resolve().parents[1]


def test_param_table_is_complete_and_matches_dataclass():
    import dataclasses

    fields = [f.name for f in dataclasses.fields(NodeParams)]
    assert fields == [s.name for s in PARAM_SPECS]
    required = {"weights", "map_dir", "image_topic", "compressed_input", "top_k",
                "match_threshold", "sequence_length", "device", "num_threads", "map_frame_id",
                "max_rate_hz", "mapping_mode", "pose_topic"}
    assert required <= set(fields)
    defaults = NodeParams.from_mapping({})
    assert defaults.top_k == SPEC_BY_NAME["top_k"].default
    with pytest.raises(dataclasses.FrozenInstanceError):
        defaults.top_k = 3  # type: ignore[misc]
    assert defaults.replace(top_k=7).top_k == 7
    with pytest.raises(ValueError, match="top_k"):
        defaults.replace(top_k=101)


def test_markdown_table_lists_every_parameter_and_docs_are_in_sync():
    table = render_markdown_table()
    rows = [r for r in table.splitlines()[2:] if r.strip()]
    assert len(rows) == len(PARAM_SPECS)
    for spec, row in zip(PARAM_SPECS, rows):
        assert row.startswith(f"| `{spec.name}` | {spec.type} |")
        assert row.count("|") == 7, row  # no stray pipes breaking the table
    assert "1 .. 100" in rows[[s.name for s in PARAM_SPECS].index("top_k")]
    for name in ("docs/node_api.md", "README.md"):
        doc = (ROOT / name).read_text()
        hint = f"run: python -m vl2spike_ros.ros.params --update {name}"
        assert update_markdown(doc) == doc, hint


def test_render_yaml_round_trips():
    import yaml

    data = yaml.safe_load(render_yaml())["/**/vpr_node"]["ros__parameters"]
    assert NodeParams.from_mapping(data) == NodeParams.from_mapping({})


def test_descriptors_carry_ranges_and_read_only():
    pytest.importorskip("rclpy")
    from vl2spike_ros.ros.node import descriptor_for

    d = descriptor_for(SPEC_BY_NAME["top_k"])
    assert d.integer_range[0].from_value == 1 and d.integer_range[0].to_value == 100
    assert d.description == SPEC_BY_NAME["top_k"].description
    d = descriptor_for(SPEC_BY_NAME["match_threshold"])
    assert d.floating_point_range[0].from_value == -1.0
    assert descriptor_for(SPEC_BY_NAME["autostart"]).read_only
    assert not descriptor_for(SPEC_BY_NAME["map_dir"]).read_only


def test_latest_slot_keeps_newest_and_counts_drops():
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(timeout=0) == 4
    assert (slot.received, slot.dropped) == (5, 4)
    assert slot.take(timeout=0.01) is None
    # a waiting consumer is woken by a producer thread
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    t.start()
    slot.put(42)
    t.join(5)
    assert got == [42]
    slot.close()
    assert slot.take(timeout=5) is None  # closed: returns at once


def test_stats_percentiles_and_rate_limiter():
    st = NodeStats(window=10)
    for v in range(1, 21):
        st.record(float(v), 1.0, 0.1, 2e-3, accepted=v % 2 == 0)
    s = st.summary()
    assert s["frames_processed"] == 20 and s["frames_accepted"] == 10
    assert s["latency_ms_p50"] == pytest.approx(np.percentile(np.arange(11, 21), 50))
    assert s["mean_firing_rate"] == pytest.approx(0.1)
    assert math.isnan(NodeStats().summary()["latency_ms_p95"])
    rl = RateLimiter(10.0)
    assert rl.ready(0.0)
    rl.mark(0.0)
    assert not rl.ready(0.05) and rl.ready(0.1)
    assert RateLimiter(0.0).ready(0.0)


def test_candidates_pack_unpack_and_pose_covariance():
    pytest.importorskip("sensor_msgs")
    from std_msgs.msg import Header

    from vl2spike_ros.ros import messages as M

    h = Header(frame_id="map")
    h.stamp.sec, h.stamp.nanosec = 12, 345
    metas = {3: M.pose_meta([1.0, 2.0, 0.0], [0, 0, 0, 1]), 7: {"stamp_ns": 1}}
    msg = M.make_candidates_msg(h, [3, 7, -1], [0.9, 0.4, -1.0], best_id=3, accepted=True,
                                metas=metas)
    arr = M.unpack_candidates(msg)
    assert msg.width == 2 and msg.header.stamp.nanosec == 345
    assert list(arr["id"]) == [3, 7]
    assert arr["score"][0] == pytest.approx(0.9)
    assert arr["flags"][0] == M.FLAG_BEST | M.FLAG_ACCEPTED and arr["flags"][1] == 0
    assert (arr["x"][0], arr["y"][0]) == (1.0, 2.0) and math.isnan(arr["x"][1])
    pose = M.make_pose_msg(h, M.place_pose(metas[3]), 0.5, 1.0, 0.1)
    assert pose.pose.covariance[0] == pytest.approx(4.0)      # 1 / 0.5^2
    assert pose.pose.covariance[35] == pytest.approx(0.4)
    assert pose.pose.pose.position.y == 2.0
    assert M.place_pose({"x": 1, "y": 2, "yaw": math.pi})[1][3] == pytest.approx(0.0, abs=1e-9)
    assert M.place_pose({"stamp_ns": 3}) is None
    markers = M.make_markers(h, arr)
    assert len(markers.markers) == 2  # DELETEALL + one sphere (the second place has no pose)


def test_diagnostics_level_from_named_constant_or_int():
    pytest.importorskip("diagnostic_msgs")
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    from vl2spike_ros.ros import messages as M

    warn = M.make_diagnostics(Time(), "n", "cpu", DiagnosticStatus.WARN, "m", {"x": 1.5})
    assert warn.status[0].level == DiagnosticStatus.WARN == b"\x01"
    assert M.make_diagnostics(Time(), "n", "cpu", 2, "m", {}).status[0].level == \
        DiagnosticStatus.ERROR


def test_proc_readers_of_the_load_benchmark():
    import os
    import time

    from vl2spike_ros.bench.ros.harness import proc_cpu_s, proc_mem_mb

    c0 = proc_cpu_s(os.getpid())
    t = time.process_time()
    while time.process_time() - t < 0.2:
        pass
    assert proc_cpu_s(os.getpid()) - c0 >= 0.1
    mem = proc_mem_mb(os.getpid())
    assert 0 < mem["RssAnon"] <= mem["VmRSS"] <= mem["VmHWM"]
