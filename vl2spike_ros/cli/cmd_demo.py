"""``vl2spike demo``: default weights -> Nordland map -> bag -> real vpr_node -> report."""
from __future__ import annotations

import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="end-to-end demo: map + rosbag replay through the real vpr_node",
        description="Builds a place map from the Nordland winter held-out segment with the "
                    "default weights, writes the summer held-out segment into an mcap bag, "
                    "replays it through vpr_node (loopback-only DDS) and reports recall, "
                    "latency, frames/s and energy.")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: out/demo-<date-time>)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder holding nordland/ (default: $VL2SPIKE_DATA_ROOT or ../shared/data)")
    p.add_argument("--weights", type=Path, default=None, help="VPR weights (default: packaged)")
    p.add_argument("--rate", type=float, default=30.0, help="camera rate of the replay (Hz)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N held-out places")
    p.add_argument("--tolerance", type=int, default=1, help="frame tolerance for recall")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="bag storage")
    p.set_defaults(func=_run)


def _run(ns) -> int:
    from vl2spike_ros.ros.demo import DemoConfig, run_demo

    out = ns.out or Path("out") / time.strftime("demo-%Y%m%d-%H%M%S")
    cfg = DemoConfig(out_dir=out, data_root=ns.data_root, weights=ns.weights, rate_hz=ns.rate,
                     tolerance=ns.tolerance, limit=ns.limit, storage=ns.storage)
    r = run_demo(cfg)
    energy = r["energy_mj_per_frame"]
    print(f"demo: recall@1={r['recall']['r1']:.2f} latency_p95_ms={r['latency_ms_p95']:.2f} "
          f"fps={r['fps']:.2f} energy_mj={float('nan') if energy is None else energy:.6f}",
          flush=True)
    return 0
