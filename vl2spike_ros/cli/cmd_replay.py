"""``vl2spike replay``: a query bag (or image folder) through exactly the node's VPRPipeline.

Frames are streamed (read, decoded, matched and dropped one at a time), so memory does not grow
with the length or the resolution of the recording; frames may differ in size and channel
count (the pipeline resizes each one as the node does).
"""
from __future__ import annotations

from dataclasses import dataclass

from vl2spike_ros.cli.common import add_matching_options
from vl2spike_ros.vpr.acceptance import DEFAULT_MATCH_MARGIN
from vl2spike_ros.vpr.matching import DEFAULT_MATCH_THRESHOLD


@dataclass(frozen=True)
class ReplayOptions:
    """Everything ``run_replay`` needs (the CLI options of ``vl2spike replay``)."""

    bag: str
    map_dir: str
    weights: str | None = None
    topic: str | None = None
    pose_topic: str | None = None
    top_k: int = 5
    threshold: float = DEFAULT_MATCH_THRESHOLD
    seq_len: int = 1
    gt: str = "auto"
    tolerance: int = 1
    radius: float | None = None
    max_pixels: int | None = None  # None: vl2spike_ros.io.decode.DEFAULT_MAX_PIXELS
    margin: float = DEFAULT_MATCH_MARGIN  # the node's match_margin
    velocities: tuple[float, ...] = (1.0,)  # the node's sequence_velocities


MAX_PIXELS_HELP = ("refuse frames above N pixels before decoding them, from the image header "
                   "(default: 16777216 = 4096 x 4096)")


def add_max_pixels_option(parser) -> None:
    """``--max-pixels N`` (shared by replay, map build and eval; None = the library default)."""
    parser.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                        help=MAX_PIXELS_HELP)


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "replay", help="replay a bag through the VPR pipeline (no ROS): matches CSV + metrics")
    p.add_argument("bag", help="query bag (or image folder)")
    p.add_argument("--map", required=True, dest="map_dir", help="map folder (vl2spike map build)")
    p.add_argument("--weights", default=None, help="VPR weights (default: packaged default)")
    p.add_argument("--topic", default=None, help="image topic (default: the only image topic)")
    p.add_argument("--pose-topic", default=None, help="pose topic for metric ground truth")
    p.add_argument("--top-k", type=int, default=5, help="candidate places per frame")
    p.add_argument("--threshold", type=float, default=DEFAULT_MATCH_THRESHOLD,
                   help="acceptance threshold on the best match's cosine score (the node's "
                        "match_threshold default)")
    p.add_argument("--seq-len", type=int, default=1, help="sequence matching length (1 = off)")
    add_matching_options(p, threshold=False)
    p.add_argument("--gt", choices=["auto", "aligned", "radius", "none"], default="auto",
                   help="ground truth: frame i = place i (aligned), poses within --radius, none; "
                        "auto: radius if poses on both sides and --radius, aligned if the frame "
                        "count equals the map size, else none")
    p.add_argument("--tolerance", type=int, default=1, help="frame tolerance (aligned)")
    p.add_argument("--radius", type=float, default=None, help="metric radius in m")
    add_max_pixels_option(p)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the node)")
    p.add_argument("--csv", default=None, metavar="PATH", help="per-frame matches CSV")
    p.add_argument("--json", default=None, metavar="PATH", help="summary + metrics JSON")
    p.set_defaults(func=_handler)


def run_replay(opts: ReplayOptions) -> tuple[list[dict], dict]:
    """Rows (one per frame) and a summary dict (latency, firing, energy, metrics if gt)."""
    from vl2spike_ros.data.sources import stream_source
    from vl2spike_ros.io.decode import DEFAULT_MAX_PIXELS
    from vl2spike_ros.vpr.evaluation import select_ground_truth
    from vl2spike_ros.vpr.pipeline import MatchOptions, VPRPipeline
    from vl2spike_ros.vpr.replay import place_positions, replay_frames, replay_metrics, summarise

    pipe = VPRPipeline(opts.weights, opts.map_dir, top_k=opts.top_k, threshold=opts.threshold,
                       seq_len=opts.seq_len, options=MatchOptions(opts.margin, opts.velocities))
    limit = DEFAULT_MAX_PIXELS if opts.max_pixels is None else opts.max_pixels
    stream = stream_source(opts.bag, opts.topic, opts.pose_topic, max_pixels=limit,
                           geo_origin=pipe.map.geo_origin)  # NavSatFix queries in map metres
    metas: list[dict] = []

    def frames():
        for meta, img in stream.frames:
            metas.append(meta)
            yield meta.get("stamp_ns", 0), img
    rows = replay_frames(pipe, frames(), total=stream.total)
    out = {"bag": str(opts.bag), "map": str(opts.map_dir), "model": pipe.model_meta,
           "top_k": opts.top_k, "threshold": opts.threshold, "seq_len": opts.seq_len,
           "margin": opts.margin, "sequence_velocities": list(opts.velocities),
           "acceptance_rule": pipe.rule.describe(), **summarise(rows)}
    p_xy = place_positions([pipe.map.place(i) for i in range(len(pipe.map))])
    q_xy = stream.positions(metas)
    if pipe.map.geo_origin is not None:
        out["geo_origin"] = pipe.map.geo_origin_json()
        out["accepted_latlon"] = add_latlon(rows, pipe.map)
    mode = select_ground_truth(opts.gt, len(rows), len(pipe.map), q_xy, p_xy, opts.radius)
    if mode != "none":
        out["metrics"] = replay_metrics(rows, p_xy, q_xy,
                                        opts.radius if mode == "radius" else None, opts.tolerance)
    return rows, out


def add_latlon(rows: list[dict], pm) -> list[dict]:
    """Add ``lat, lon, alt`` of each row's best place (None without a pose) to ``rows``.

    ``pm`` is a map with a ``geo_origin``; returns ``{frame, stamp_ns, best_id, lat, lon,
    alt}`` of the accepted matches (the replay JSON's ``accepted_latlon``).
    """
    import numpy as np

    from vl2spike_ros.io.poses import local_to_latlon

    for r in rows:
        r.update(lat=None, lon=None, alt=None)
    places = [pm.place(int(r["best_id"])) if r["best_id"] >= 0 else {} for r in rows]
    posed = [(r, p["pose"]) for r, p in zip(rows, places)
             if isinstance(p.get("pose"), list) and len(p["pose"]) >= 2]  # [x, y(, z, q)]
    if posed:
        xyz = np.array([(list(p[:3]) + [0.0])[:3] for _, p in posed], dtype=np.float64)
        lla = local_to_latlon(xyz[:, 0], xyz[:, 1], xyz[:, 2], pm.geo_origin)
        for (r, _), (lat, lon, alt) in zip(posed, lla.tolist()):
            r.update(lat=lat, lon=lon, alt=alt)
    keys = ("frame", "stamp_ns", "best_id", "lat", "lon", "alt")
    return [{k: r[k] for k in keys} for r in rows if r["accepted"] and r["lat"] is not None]


def _handler(ns) -> int:
    import torch

    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.cli.common import acceptance_summary
    from vl2spike_ros.vpr.evaluation import strip_curves
    from vl2spike_ros.vpr.replay import write_csv

    torch.set_num_threads(ns.threads)
    rows, out = run_replay(ReplayOptions(
        ns.bag, ns.map_dir, ns.weights, ns.topic, ns.pose_topic, ns.top_k, ns.threshold,
        ns.seq_len, ns.gt, ns.tolerance, ns.radius, ns.max_pixels, margin=ns.margin,
        velocities=ns.seq_velocities))
    out = strip_curves(out)
    if ns.csv:
        write_csv(rows, ns.csv)
    if ns.json:
        write_json_atomic(ns.json, out)
    lat = out["latency_ms"]
    msg = f"{out['frames']} frames: latency mean {lat['mean']:.2f} ms p95 {lat['p95']:.2f} ms, "
    if "metrics" in out:   # the acceptance summary names the accepted count
        msg += (f"R@1 {out['metrics']['recall']['r1']:.2f}% ({out['metrics']['ground_truth']}); "
                + acceptance_summary(out["metrics"]["acceptance"]))
    else:
        msg += f"{out['accepted']} accepted"
    print(msg)
    return 0
