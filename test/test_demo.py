"""End-to-end tests of ``vl2spike demo`` (vl2spike_ros.bench.ros.demo + cli/cmd_demo.py).

Real Nordland frames, a BN-calibrated random ``spikformer_vpr`` (the packaged default weights
are not needed), the real ``vpr_node`` subprocess on loopback-only DDS. A few dozen frames per
run keep the file around a minute.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros]
slow = pytest.mark.slow
pytest.importorskip("rclpy")

VL2SPIKE = Path(sys.executable).parent / "vl2spike"
LAST_LINE = re.compile(r"demo: recall@1=(\d+\.\d{2}) latency_p95_ms=(\d+\.\d{2}) "
                       r"fps=(\d+\.\d{2}) energy_mj=(\d+\.\d{6})")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, data_root) -> Path:
    from vl2spike_ros.bench.ros.fixtures import random_weights
    from vl2spike_ros.data.datasets import load_nordland_frames

    calib = load_nordland_frames(data_root / "nordland", "summer", start=0, count=32, step=5)
    return random_weights(tmp_path_factory.mktemp("demo_weights"), calib)


def _heldout_start(data_root: Path) -> int:
    from vl2spike_ros.data.datasets import nordland_files, nordland_split_range

    return nordland_split_range(len(nordland_files(data_root / "nordland", "winter")), "test")[0]


def check_report(report: dict, out: Path, frames: int, first_frame: int) -> None:
    """Numbers of one successful run agree with each other and with the files written."""
    assert json.loads((out / "report.json").read_text())["recall"] == report["recall"]
    assert (out / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["frames_sent"] == report["places"] == frames
    assert report["first_heldout_frame"] == first_frame
    # the node may drop frames while busy (depth-1 sensor QoS; how many depends on the machine's
    # load, so throughput is a benchmark, not a test), never invent one
    assert 1 <= report["frames_processed"] <= report["frames_sent"]
    r1, r5 = report["recall"]["r1"], report["recall"]["r5"]
    assert 0.0 <= r1 <= r5 <= 100.0
    hits = r1 * report["frames_processed"] / 100.0  # recall is a fraction of processed frames
    assert abs(hits - round(hits)) < 1e-6
    assert 0.0 < report["latency_ms_p50"] <= report["latency_ms_p95"] <= report["latency_ms_max"]
    assert report["fps"] > 0 and report["replay_wall_s"] > 0
    assert report["energy_mj_per_frame"] > 0 and 0 < report["mean_firing_rate"] <= 1
    assert report["node_exit_code"] == 0
    # The node runs the same VPRPipeline.process on the same (lossless rgb8) pixels with the
    # same weights and map, single-threaded like the offline check, so top-1 should agree on
    # every frame; >= 95 % leaves room only for exact score ties broken in a different order.
    assert report["top1_agreement_with_offline_pipeline_pct"] >= 95.0
    for key in ("map_build_s", "node_start_s", "replay_s", "scoring_s", "total_s"):
        assert report["timings_s"][key] >= 0


@slow
def test_run_demo_library(tmp_path, data_root, weights):
    from vl2spike_ros.io.bags import read_image_bag
    from vl2spike_ros.bench.ros.demo import DemoConfig, run_demo
    from vl2spike_ros.vpr.placemap import PlaceMap

    env_before = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_LOG_DIR")}
    out = tmp_path / "demo"
    report = run_demo(DemoConfig(out_dir=out, data_root=data_root, weights=weights, limit=40))
    check_report(report, out, 40, _heldout_start(data_root))
    assert {k: os.environ.get(k) for k in env_before} == env_before  # env restored
    assert len(PlaceMap.load(out / "map_winter_heldout")) == 40
    stamps = np.array([f.stamp_ns for f in read_image_bag(out / "summer_heldout_bag")])
    assert len(stamps) == 40 and np.allclose(np.diff(stamps), 1e9 / 30.0, atol=1e3)


@slow
def test_cli_demo(tmp_path, data_root, weights, ros_env):
    out = tmp_path / "cli"
    proc = subprocess.run([str(VL2SPIKE), "demo", "--weights", str(weights), "--data-root",
                           str(data_root), "--limit", "30", "--out", str(out)],
                          env={**os.environ, **ros_env}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    m = LAST_LINE.fullmatch(last)
    assert m, f"unexpected last line {last!r}"
    report = json.loads((out / "report.json").read_text())
    check_report(report, out, 30, _heldout_start(data_root))
    printed = [float(v) for v in m.groups()]
    expected = [report["recall"]["r1"], report["latency_ms_p95"], report["fps"],
                report["energy_mj_per_frame"]]
    assert np.allclose(printed, expected, rtol=0, atol=[0.0051, 0.0051, 0.0051, 6e-7])


def test_cli_demo_without_nordland(tmp_path, ros_env):
    (tmp_path / "data").mkdir()
    proc = subprocess.run([str(VL2SPIKE), "demo", "--data-root", str(tmp_path / "data"),
                           "--out", str(tmp_path / "out")], env={**os.environ, **ros_env},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vl2spike demo: error: Nordland data not found")
    assert str(tmp_path / "data" / "nordland") in lines[0]
    assert "demo: recall@1" not in proc.stdout


def test_missing_default_weights_names_the_build_command(tmp_path, monkeypatch):
    import vl2spike_ros.models as models
    from vl2spike_ros.bench.ros.demo import DemoConfig, run_demo

    for season in ("winter", "summer"):
        (tmp_path / "data" / "nordland" / season).mkdir(parents=True)
    monkeypatch.setattr(models, "default_vpr_weights", lambda: tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors.*make weights"):
        run_demo(DemoConfig(out_dir=tmp_path / "out", data_root=tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="missing.safetensors not found"):
        run_demo(DemoConfig(out_dir=tmp_path / "out", data_root=tmp_path / "data",
                            weights=tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("bad", [{"limit": 0}, {"rate_hz": -1.0}, {"storage": "zip"},
                                 {"tolerance": -1}])
def test_bad_settings_are_refused(tmp_path, bad):
    from vl2spike_ros.bench.ros.demo import DemoConfig

    with pytest.raises(ValueError, match=f"invalid demo setting.*{next(iter(bad))}"):
        DemoConfig(out_dir=tmp_path, **bad)


@slow
def test_node_dying_at_startup_reports_its_log(tmp_path, weights):
    from vl2spike_ros.io.bags import BagWriteOptions, write_image_bag
    from vl2spike_ros.bench.ros.demo import DemoConfig, run_node

    bag = tmp_path / "bag"
    write_image_bag(bag, [np.full((32, 64, 3), 100, np.uint8)] * 3,
                    BagWriteOptions(encoding="rgb8"))
    cfg = DemoConfig(out_dir=tmp_path, startup_timeout_s=90)
    with pytest.raises(RuntimeError) as err:
        run_node(cfg, weights, tmp_path / "no_such_map", bag, {})
    msg = str(err.value)
    assert "during start-up" in msg and "vpr_node.log" in msg
    assert "no_such_map" in msg  # the node's own error line, from the log tail


@slow
def test_interrupt_stops_the_node(tmp_path, data_root, weights, ros_env):
    # SIGINT at its default disposition in the demo, as in a terminal: a test run started in the
    # background by a non-interactive shell inherits SIGINT ignored, and Python keeps it so
    proc = subprocess.Popen([str(VL2SPIKE), "demo", "--weights", str(weights), "--data-root",
                             str(data_root), "--limit", "20", "--out", str(tmp_path)],
                            env={**os.environ, **ros_env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    node_pid = None
    for line in proc.stdout:
        if (m := re.search(r"vpr_node started \(pid (\d+)", line)):
            node_pid = int(m.group(1))
            break
    assert node_pid is not None, proc.communicate(timeout=60)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the demo
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(node_pid, 0)  # stopped and reaped
