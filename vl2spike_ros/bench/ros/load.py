r"""Load benchmark of ``vpr_node``: a camera publisher at a fixed rate against the real node.

    python -m vl2spike_ros.bench.ros.load --duration 60 --rate 30 60 --encoding raw jpeg \
        --json bench/results/node_load.json

For every (rate, encoding) pair a fresh ``vpr_node`` subprocess is started (loopback-only DDS)
with a map of real Nordland frames; this process publishes 640x480 ``rgb8`` frames (or JPEG
``CompressedImage``) made from Nordland winter frames for ``--duration`` seconds and measures
end-to-end latency (image stamp -> receipt of the ``vpr/candidates`` message stamped with it),
frames processed vs sent, and the node's CPU time and RSS from ``/proc/PID/{stat,status}``.
The top-level JSON fields describe the first run; ``runs`` holds all of them. A PNG with the
latency over time is written next to the JSON.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vl2spike_ros.atomic import write_json_atomic
from vl2spike_ros.ros.env import apply_loopback_env
from vl2spike_ros.bench.ros.harness import (Prober, proc_cpu_s, proc_mem_mb, publish, start_node,
                                            stop_node, wait_ready)


def camera_frames(data_root: Path, n: int, width: int, height: int) -> list[np.ndarray]:
    """``n`` Nordland winter frames upscaled to ``height x width`` RGB uint8."""
    import cv2

    from vl2spike_ros.data.datasets import load_nordland_frames

    small = load_nordland_frames(data_root / "nordland", "winter", start=300, count=n, step=3)
    return [cv2.cvtColor(cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR),
                         cv2.COLOR_GRAY2RGB) for f in small]


def make_msgs(frames: list[np.ndarray], compressed: bool) -> list[Any]:
    from sensor_msgs.msg import CompressedImage, Image

    from vl2spike_ros.io.images import array_to_compressed_msg, array_to_image_msg

    if compressed:
        return [array_to_compressed_msg(f, "jpeg", quality=90, msg_cls=CompressedImage)
                for f in frames]
    return [array_to_image_msg(f, "rgb8", msg_cls=Image) for f in frames]


def _percentiles(lat: np.ndarray) -> dict[str, float | None]:
    if lat.size == 0:
        return {"latency_ms_p50": None, "latency_ms_p95": None, "latency_ms_max": None,
                "latency_ms_mean": None}
    return {"latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p95": float(np.percentile(lat, 95)),
            "latency_ms_max": float(lat.max()), "latency_ms_mean": float(lat.mean())}


def _drive(prober: Prober, msgs: list[Any], pid: int, rate: float, duration: float
           ) -> tuple[list[int], list[list[float]], float]:
    """Publish at ``rate`` for ``duration`` s; returns (stamps sent, RSS samples MiB, wall s)."""
    sent, rss = [], []  # RSS samples: (VmRSS, RssAnon) once a second
    period, t0 = 1.0 / rate, time.monotonic()
    next_t, i, next_rss = t0, 0, t0
    while time.monotonic() - t0 < duration:
        sent.append(publish(prober, msgs[i % len(msgs)]))
        i += 1
        if time.monotonic() >= next_rss:
            m = proc_mem_mb(pid)
            rss.append([round(m["VmRSS"], 1), round(m["RssAnon"], 1)])
            next_rss += 1.0
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
    return sent, rss, time.monotonic() - t0


def run_one(rate: float, compressed: bool, duration: float, node_params: dict[str, Any],
            msgs: list[Any], env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """One (rate, encoding) run against a fresh node; returns its measurements."""
    from vl2spike_ros.bench.ros.fixtures import write_params_file

    tag = f"{rate:g}hz_{'jpeg' if compressed else 'raw'}"
    params = write_params_file(workdir / f"params_{tag}.yaml",
                               {**node_params, "compressed_input": compressed})
    log_path = workdir / f"vpr_node_{tag}.log"
    proc = start_node(params, log_path, env)
    prober = Prober(compressed)
    rc = None
    try:
        wait_ready(prober, msgs, proc, timeout=180)
        time.sleep(1.0)
        prober.clear()
        mem0, cpu0 = proc_mem_mb(proc.pid), proc_cpu_s(proc.pid)
        load0 = os.getloadavg()[0]
        sent, rss, wall = _drive(prober, msgs, proc.pid, rate, duration)
        cpu1 = proc_cpu_s(proc.pid)
        time.sleep(2.0)  # trailing matches and one more /diagnostics message
        mem1 = proc_mem_mb(proc.pid)
    finally:
        prober_lat = dict(prober.latencies)
        diag = dict(prober.diag)
        prober.close()
        rc = stop_node(proc)
    got = [(prober_lat[s][0], prober_lat[s][1]) for s in sent if s in prober_lat]
    lat = np.array([g[1] for g in got])
    res = {"rate_hz": rate, "encoding": "jpeg" if compressed else "rgb8",
           "duration_s": round(wall, 3), "frames_sent": len(sent), "frames_processed": len(got),
           "frames_dropped": len(sent) - len(got),
           "processed_fraction": len(got) / max(1, len(sent)), **_percentiles(lat),
           "node_cpu_percent": 100.0 * (cpu1 - cpu0) / wall,
           "rss_mb_start": mem0["VmRSS"], "rss_mb_end": mem1["VmRSS"],
           "rss_mb_peak": mem1["VmHWM"],
           "rss_anon_mb_start": mem0["RssAnon"], "rss_anon_mb_end": mem1["RssAnon"],
           "rss_mb_samples_vmrss_anon": rss, "loadavg_1min_at_start": load0,
           "node_diagnostics": diag, "node_exit_code": rc, "node_log": str(log_path),
           "latency_trace": [[round(t, 4), round(l, 3)] for t, l in got]}
    res["targets"] = {"latency_p95_below_50ms": bool(lat.size) and res["latency_ms_p95"] < 50.0,
                      "processed_at_least_95pct": res["processed_fraction"] >= 0.95,
                      "rss_growth_below_20mb": res["rss_mb_end"] - res["rss_mb_start"] < 20.0}
    return res


def plot_runs(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r in runs:
        tr = np.array(r["latency_trace"]) if r["latency_trace"] else np.zeros((0, 2))
        if len(tr):
            ax.plot(tr[:, 0] - tr[0, 0], tr[:, 1], ".", ms=2,
                    label=f"{r['rate_hz']:g} Hz {r['encoding']}: "
                          f"p95 {r['latency_ms_p95']:.1f} ms, "
                          f"{100 * r['processed_fraction']:.0f}% processed")
    ax.axhline(50, color="k", lw=0.8, ls="--", label="50 ms target")
    ax.set_xlabel("time since start of run (s)")
    ax.set_ylabel("latency image stamp -> match (ms)")
    ax.set_yscale("log")
    ax.set_title("vpr_node end-to-end latency, 640x480 input")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def prepare(workdir: Path, data_root: Path, places: int, weights: str | None,
            map_dir: str | None) -> tuple[Path, Path]:
    """(weights, map folder): given ones, or built from Nordland summer frames."""
    from vl2spike_ros.bench.ros import fixtures
    from vl2spike_ros.data.datasets import load_nordland_frames

    ref = load_nordland_frames(data_root / "nordland", "summer", start=300, count=places, step=3)
    w = Path(weights) if weights else fixtures.node_weights(workdir, calib_frames=ref)
    if map_dir:
        return w, Path(map_dir)
    m = fixtures.build_map(w, ref, workdir / "map", metas=fixtures.line_poses(places))
    return w, m


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per run")
    ap.add_argument("--rate", type=float, nargs="+", default=[30.0], help="camera rate(s), Hz")
    ap.add_argument("--encoding", nargs="+", choices=["raw", "jpeg"], default=["raw"],
                    help="rgb8 Image and/or JPEG CompressedImage")
    ap.add_argument("--compressed", action="store_true", help="same as --encoding jpeg")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--places", type=int, default=200, help="map size (Nordland summer frames)")
    ap.add_argument("--weights",
                    help="student weights (default: packaged or BN-calibrated random)")
    ap.add_argument("--map", help="prebuilt map folder (default: built from Nordland)")
    ap.add_argument("--num-threads", type=int, default=1, help="node torch threads")
    ap.add_argument("--data-root", help="data root (default: vl2spike_ros.paths.data_root())")
    ap.add_argument("--json", default="bench/results/node_load.json")
    ap.add_argument("--plot", help="PNG path (default: JSON path with .png)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    from vl2spike_ros.paths import data_root

    env = {**os.environ, **apply_loopback_env()}
    root = Path(ns.data_root) if ns.data_root else data_root()
    encodings = ["jpeg"] if ns.compressed else ns.encoding
    workdir = Path(tempfile.mkdtemp(prefix="vpr_bench_load_"))
    weights, map_dir = prepare(workdir, root, ns.places, ns.weights, ns.map)
    frames = camera_frames(root, 30, ns.width, ns.height)
    node_params = {"weights": str(weights), "map_dir": str(map_dir), "image_topic": "image",
                   "top_k": 5, "num_threads": ns.num_threads, "diagnostics_period_s": 1.0}
    runs = []
    for enc in encodings:
        msgs = make_msgs(frames, enc == "jpeg")
        for rate in ns.rate:
            print(f"[bench_load] {rate:g} Hz {enc} {ns.width}x{ns.height} "
                  f"for {ns.duration:g} s ...",
                  flush=True)
            r = run_one(rate, enc == "jpeg", ns.duration, node_params, msgs, env, workdir)
            print(f"[bench_load]   processed {r['frames_processed']}/{r['frames_sent']} "
                  f"p50 {r['latency_ms_p50']} ms p95 {r['latency_ms_p95']} ms "
                  f"cpu {r['node_cpu_percent']:.0f}% rss {r['rss_mb_start']:.0f}->"
                  f"{r['rss_mb_end']:.0f} MiB", flush=True)
            runs.append(r)
    out = {k: v for k, v in runs[0].items() if k != "latency_trace"}
    out.update({"width": ns.width, "height": ns.height, "map_places": ns.places,
                "weights": str(weights), "host_cpus": os.cpu_count(),
                "note": "CPU shared with other processes; see loadavg_1min_at_start per run",
                "runs": [{k: v for k, v in r.items() if k != "latency_trace"} for r in runs]})
    json_path = Path(ns.json)
    write_json_atomic(json_path, out)
    plot_runs(runs, Path(ns.plot) if ns.plot else json_path.with_suffix(".png"))
    print(f"[bench_load] wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
