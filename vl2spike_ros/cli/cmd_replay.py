"""``vl2spike replay``: a query bag (or image folder) through exactly the node's VPRPipeline."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "replay", help="replay a bag through the VPR pipeline (no ROS): matches CSV + metrics")
    p.add_argument("bag", help="query bag (or image folder)")
    p.add_argument("--map", required=True, dest="map_dir", help="map folder (vl2spike map build)")
    p.add_argument("--weights", default=None, help="VPR weights (default: packaged default)")
    p.add_argument("--topic", default=None, help="image topic (default: the only image topic)")
    p.add_argument("--pose-topic", default=None, help="pose topic for metric ground truth")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.0, help="acceptance threshold (cosine)")
    p.add_argument("--seq-len", type=int, default=1, help="sequence matching length (1 = off)")
    p.add_argument("--gt", choices=["auto", "aligned", "radius", "none"], default="auto",
                   help="ground truth: frame i = place i (aligned), poses within --radius, none; "
                        "auto: radius if poses on both sides and --radius, aligned if the frame "
                        "count equals the map size, else none")
    p.add_argument("--tolerance", type=int, default=1, help="frame tolerance (aligned)")
    p.add_argument("--radius", type=float, default=None, help="metric radius in m")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the node)")
    p.add_argument("--csv", default=None, metavar="PATH", help="per-frame matches CSV")
    p.add_argument("--json", default=None, metavar="PATH", help="summary + metrics JSON")
    p.set_defaults(func=_handler)


def run_replay(bag: str, map_dir: str, weights: str | None = None, topic: str | None = None,
               pose_topic: str | None = None, top_k: int = 5, threshold: float = 0.0,
               seq_len: int = 1, gt: str = "auto", tolerance: int = 1,
               radius: float | None = None) -> tuple[list[dict], dict]:
    """Rows (one per frame) and a summary dict (latency, firing, energy, metrics if gt)."""
    import numpy as np

    from vl2spike_ros.vpr.pipeline import VPRPipeline
    from vl2spike_ros.vpr.replay import replay_frames, replay_metrics, summarise
    from vl2spike_ros.data.sources import is_bag, load_bag, load_source

    pipe = VPRPipeline(weights, map_dir, top_k=top_k, threshold=threshold, seq_len=seq_len)
    q_xy = None
    if is_bag(bag):  # native-size frames: the pipeline resizes exactly as on the robot
        seq = load_bag(bag, topic, pose_topic)
    else:
        seq = load_source(bag)
    q_xy = seq.xy
    frames = ((m.get("stamp_ns", 0), im) for m, im in zip(seq.metas, seq.images))
    rows = replay_frames(pipe, frames, total=len(seq.images))
    out = {"bag": str(bag), "map": str(map_dir), "model": pipe.model_meta, "top_k": top_k,
           "threshold": threshold, "seq_len": seq_len, **summarise(rows)}
    places = [pipe.map.place(i) for i in range(len(pipe.map))]
    p_xy = np.array([p["pose"][:2] for p in places]) if all("pose" in p for p in places) else None
    mode = gt
    if gt == "auto":
        mode = ("radius" if radius is not None and p_xy is not None and q_xy is not None
                else "aligned" if len(rows) == len(pipe.map) else "none")
    if mode == "radius" and (p_xy is None or q_xy is None or radius is None):
        raise ValueError("--gt radius needs poses in the map and the bag, and --radius")
    if mode != "none":
        out["metrics"] = replay_metrics(rows, p_xy, q_xy, radius if mode == "radius" else None,
                                        tolerance)
    return rows, out


def _handler(ns) -> int:
    import torch

    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.vpr.evaluation import strip_curves
    from vl2spike_ros.vpr.replay import write_csv

    torch.set_num_threads(ns.threads)
    rows, out = run_replay(ns.bag, ns.map_dir, ns.weights, ns.topic, ns.pose_topic, ns.top_k,
                           ns.threshold, ns.seq_len, ns.gt, ns.tolerance, ns.radius)
    out = strip_curves(out)
    if ns.csv:
        write_csv(rows, ns.csv)
    if ns.json:
        write_json_atomic(ns.json, out)
    lat = out["latency_ms"]
    msg = (f"{out['frames']} frames: latency mean {lat['mean']:.2f} ms p95 {lat['p95']:.2f} ms, "
           f"{out['accepted']} accepted")
    if "metrics" in out:
        msg += f", R@1 {out['metrics']['recall']['r1']:.2f}% ({out['metrics']['ground_truth']})"
    print(msg)
    return 0
