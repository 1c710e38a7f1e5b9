"""``vl2spike eval``: database vs queries (folders or bags) -> Recall@N, PR-AUC, queries/s."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from vl2spike_ros.cli.cmd_replay import add_max_pixels_option
    from vl2spike_ros.cli.common import add_matching_options

    p = subparsers.add_parser(
        "eval", help="evaluate place recognition: database vs query images",
        description="Database vs queries. Ground truth: query i shows database place i "
                    "(+-tolerance frames), or a metric radius when both sides carry positions "
                    "(UTM in VPR-methods file names, or poses in bags) and --radius is given.")
    p.add_argument("--db", required=True, help="database image folder or bag")
    p.add_argument("--queries", required=True, help="query image folder or bag")
    p.add_argument("--weights", default=None, help="VPR weights (default: packaged default)")
    p.add_argument("--method", default="model", choices=["model", "hog", "sad"],
                   help="model: the VPR weights; hog / sad: the HOG and SAD baselines")
    p.add_argument("--tolerance", type=int, default=1, help="frame tolerance (default 1)")
    p.add_argument("--radius", type=float, default=None, help="metric radius (m) if positions")
    p.add_argument("--seq-len", type=int, default=1, help="sequence matching length (1 = off)")
    add_matching_options(p)
    p.add_argument("--topic", default=None, help="image topic (bags)")
    add_max_pixels_option(p)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write the metrics JSON here ('-': to stdout, the summary to stderr)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the PR curve here")
    p.set_defaults(func=_handler)


def run_eval(db: str, queries: str, weights: str | None = None, method: str = "model",
             tolerance: int = 1, radius: float | None = None, matching=None,
             source=None) -> dict:
    """Load both sides, evaluate one method, return the metrics dict (with ``_curve``).

    ``matching``: a :class:`~vl2spike_ros.vpr.runner.MatchSettings` (sequence length,
    velocities, acceptance rule; default: single frame, the node's defaults); ``source``: a
    :class:`~vl2spike_ros.data.sources.SourceOptions` (image topic, pixel limit).
    """
    from vl2spike_ros.vpr.runner import (GroundTruth, MatchSettings, baseline_method,
                                         evaluate_sets, model_method)
    from vl2spike_ros.data.sources import SourceOptions, load_source

    if tolerance < 0:
        raise ValueError(f"--tolerance must be >= 0, got {tolerance}")
    meta = None
    if method == "model":
        from vl2spike_ros.vpr.place import load_place_descriptor
        place = load_place_descriptor(weights)
        meta = place.model_meta()
        m, size = model_method(place), place.settings.img_size
    else:
        m, size = baseline_method(method), (32, 64)
    src = source or SourceOptions()
    d = load_source(db, size=size, topic=src.topic, max_pixels=src.max_pixels)
    q = load_source(queries, size=size, topic=src.topic, max_pixels=src.max_pixels)
    res = evaluate_sets(m, d.images, q.images, GroundTruth(tolerance, radius, d.xy, q.xy),
                        matching or MatchSettings())
    res.update({"db": str(db), "queries": str(queries), "model": meta,
                "weights": str(weights) if weights else "default"})
    return res


def _handler(ns) -> int:
    import torch

    from vl2spike_ros.cli.common import acceptance_summary, print_summary, write_json_output
    from vl2spike_ros.vpr.acceptance import AcceptanceRule
    from vl2spike_ros.vpr.evaluation import plot_pr, strip_curves
    from vl2spike_ros.vpr.runner import MatchSettings

    torch.set_num_threads(ns.threads)
    from vl2spike_ros.data.sources import SourceOptions

    limit = {} if ns.max_pixels is None else {"max_pixels": ns.max_pixels}
    rule = AcceptanceRule(ns.threshold, ns.margin)
    matching = MatchSettings(ns.seq_len, ns.seq_velocities, rule)
    res = run_eval(ns.db, ns.queries, ns.weights, ns.method, ns.tolerance, ns.radius,
                   matching, SourceOptions(topic=ns.topic, **limit))
    if ns.plot:
        plot_pr({ns.method: res["_curve"]}, ns.plot, title=f"PR: {ns.queries} vs {ns.db}")
    out = strip_curves(res)
    write_json_output(ns.json, out)
    r = out["recall"]
    print_summary(f"{out['n_queries']} queries vs {out['n_db']} places ({out['ground_truth']}): "
                  + " ".join(f"R@{k[1:]}={v:.2f}%" for k, v in r.items())
                  + f" PR-AUC={out['pr_auc']:.3f} {out['queries_per_s']:.0f} queries/s; "
                  + acceptance_summary(out["acceptance"]), ns.json)
    return 0
