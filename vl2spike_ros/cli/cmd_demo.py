"""``vl2spike demo``: default weights -> Nordland map -> bag -> real vpr_node -> report."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="end-to-end demo: map + rosbag replay through the real vpr_node",
        description="Builds a place map from the Nordland winter held-out segment with the "
                    "default weights, writes the summer held-out segment into an mcap bag, "
                    "replays it through vpr_node (loopback-only DDS) and reports recall, "
                    "latency, frames/s and energy. The last line of output is "
                    "'demo: recall@1=<percent> latency_p95_ms=<ms> fps=<frames/s> "
                    "energy_mj=<mJ/frame>'.")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: out/demo-<date-time>)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder holding nordland/"
                        " (default: $VL2SPIKE_DATA_ROOT or ../shared/data)")
    p.add_argument("--weights", type=Path, default=None,
                   help="VPR weights .safetensors (default: the packaged ones, built by "
                        "`make weights`)")
    p.add_argument("--rate", type=float, default=30.0, help="camera rate of the replay (Hz)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N held-out places")
    p.add_argument("--tolerance", type=int, default=1, help="frame tolerance for recall")
    p.add_argument("--top-k", type=int, default=5, help="candidates per frame")
    p.add_argument("--seq-len", type=int, default=1,
                   help="sequence-consistent matching over the last N frames (1 = single frame)")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="bag storage")
    p.add_argument("--startup-timeout", type=float, default=120.0,
                   help="seconds to wait for vpr_node to answer its first frame")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of this process for map building and the offline check "
                        "(the node uses 1)")
    p.set_defaults(func=_run)


def summary_line(report: dict) -> str:
    """Return the last output line.

    ``demo: recall@1=... latency_p95_ms=... fps=... energy_mj=...``
    """
    energy = report["energy_mj_per_frame"]
    return (f"demo: recall@1={report['recall']['r1']:.2f} "
            f"latency_p95_ms={report['latency_ms_p95']:.2f} fps={report['fps']:.2f} "
            f"energy_mj={math.nan if energy is None else energy:.6f}")


def _run(ns) -> int:
    from vl2spike_ros.bench.ros.demo import DemoConfig, run_demo

    out = ns.out or Path("out") / time.strftime("demo-%Y%m%d-%H%M%S")
    cfg = DemoConfig(out_dir=out, data_root=ns.data_root, weights=ns.weights, rate_hz=ns.rate,
                     tolerance=ns.tolerance, top_k=ns.top_k, seq_len=ns.seq_len, limit=ns.limit,
                     storage=ns.storage,
                     startup_timeout_s=ns.startup_timeout, num_threads=ns.threads)
    try:
        report = run_demo(cfg)
    except KeyboardInterrupt:
        print("vl2spike demo: interrupted", file=sys.stderr, flush=True)
        return 130
    print(summary_line(report), flush=True)
    return 0
