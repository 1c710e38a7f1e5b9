"""``vl2spike eval``: database vs queries (folders or bags) -> Recall@N, PR-AUC, queries/s."""
from __future__ import annotations

import json
import logging
import sys

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate place recognition: database vs query images",
        description="Database vs queries. Ground truth: query i shows database place i "
                    "(+-tolerance frames), or a metric radius when both sides carry positions "
                    "(UTM in VPR-methods file names, or poses in bags) and --radius is given.")
    p.add_argument("--db", required=True, help="database image folder or bag")
    p.add_argument("--queries", required=True, help="query image folder or bag")
    p.add_argument("--weights", default=None, help="VPR weights (default: packaged default)")
    p.add_argument("--method", default="model", choices=["model", "hog", "sad"])
    p.add_argument("--tolerance", type=int, default=1, help="frame tolerance (default 1)")
    p.add_argument("--radius", type=float, default=None, help="metric radius (m) if positions")
    p.add_argument("--seq-len", type=int, default=1, help="sequence matching length (1 = off)")
    p.add_argument("--topic", default=None, help="image topic (bags)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=None, metavar="PATH", help="write metrics JSON here")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the PR curve here")
    p.set_defaults(func=_handler)


def run_eval(db: str, queries: str, weights: str | None = None, method: str = "model",
             tolerance: int = 1, radius: float | None = None, seq_len: int = 1,
             topic: str | None = None) -> dict:
    """Load both sides, evaluate one method, return the metrics dict (with ``_curve``)."""
    from vl2spike_ros.vpr.runner import baseline_method, evaluate_sets, model_method
    from vl2spike_ros.data.sources import load_source

    if tolerance < 0:
        raise ValueError(f"--tolerance must be >= 0, got {tolerance}")
    meta = None
    if method == "model":
        from vl2spike_ros.vpr.pipeline import load_vpr_model
        model, meta = load_vpr_model(weights)
        m, size = model_method(model), tuple(meta["input_size"][1:])
    else:
        m, size = baseline_method(method), (32, 64)
    d = load_source(db, size=size, topic=topic)
    q = load_source(queries, size=size, topic=topic)
    res = evaluate_sets(m, d.images, q.images, tolerance, radius, d.xy, q.xy, seq_len)
    res.update({"db": str(db), "queries": str(queries), "model": meta,
                "weights": str(weights) if weights else "default"})
    return res


def _handler(ns) -> int:
    import torch

    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.vpr.evaluation import plot_pr, strip_curves

    torch.set_num_threads(ns.threads)
    res = run_eval(ns.db, ns.queries, ns.weights, ns.method, ns.tolerance, ns.radius,
                   ns.seq_len, ns.topic)
    if ns.plot:
        plot_pr({ns.method: res["_curve"]}, ns.plot, title=f"PR: {ns.queries} vs {ns.db}")
    out = strip_curves(res)
    if ns.json:
        write_json_atomic(ns.json, out)
    r = out["recall"]
    print(f"{out['n_queries']} queries vs {out['n_db']} places ({out['ground_truth']}): "
          + " ".join(f"R@{k[1:]}={v:.2f}%" for k, v in r.items())
          + f" PR-AUC={out['pr_auc']:.3f} {out['queries_per_s']:.0f} queries/s")
    if not ns.json:
        json.dump(out, sys.stdout, indent=2)
        print()
    return 0
