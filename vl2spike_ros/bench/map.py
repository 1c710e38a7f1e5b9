"""``vl2spike bench map``: PlaceMap search latency and load time at large map sizes.

Random unit vectors of the VPR model's descriptor dim; exact (Flat) and HNSW indices; single
query latency (what the node does per frame), map save + load time, HNSW recall@1 vs exact.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("map", help="place-map search latency / load time (random vectors)")
    p.add_argument("--places", type=int, default=100_000, help="synthetic places in the map")
    p.add_argument("--queries", type=int, default=500, help="timed queries")
    p.add_argument("--dim", type=int, default=None, help="default: the VPR model's descriptor dim")
    p.add_argument("--factories", default="Flat,HNSW32", help="comma-separated FAISS factories")
    p.add_argument("--threads", type=int, default=1, help="FAISS threads (node uses 1)")
    p.add_argument("--json", default="bench/results/map_search.json", metavar="PATH",
                   help="results JSON")
    p.set_defaults(func=_handler)


def _default_dim() -> int:
    from vl2spike_ros.models import default_vpr_weights, get_config, read_model_meta
    try:
        return int(read_model_meta(default_vpr_weights())["config"]["descriptor_dim"])
    except (FileNotFoundError, ValueError, KeyError):
        return int(get_config("spikformer_vpr").descriptor_dim)


def bench_factory(factory: str, base, queries, tmpdir, exact_ids=None) -> dict:
    """Build, save, load and search one index type; returns timings (ms / s)."""
    import numpy as np

    from vl2spike_ros.vpr.placemap import PlaceMap

    t0 = time.perf_counter()
    pm = PlaceMap(base.shape[1], {"variant": "bench"}, factory)
    pm.add(base, [{"frame": i} for i in range(len(base))])
    build_s = time.perf_counter() - t0
    pm.save(tmpdir / factory)
    t0 = time.perf_counter()
    pm = PlaceMap.load(tmpdir / factory)
    load_s = time.perf_counter() - t0
    if hasattr(pm.index, "hnsw"):
        pm.index.hnsw.efSearch = 64
    lat, ids = [], []
    for q in queries:
        t = time.perf_counter()
        _, i = pm.search(q[None], 5)
        lat.append((time.perf_counter() - t) * 1e3)
        ids.append(int(i[0, 0]))
    lat = np.asarray(lat)
    out = {"factory": factory, "build_s": build_s, "load_s": load_s,
           "search_ms": {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                         "p95": float(np.percentile(lat, 95))},
           "index_mb": sum(f.stat().st_size for f in (tmpdir / factory).iterdir()) / 2 ** 20}
    if exact_ids is not None:
        out["recall_at_1_vs_exact"] = float(np.mean(np.asarray(ids) == exact_ids))
    return out, np.asarray(ids)


def _handler(ns) -> int:
    import tempfile
    from pathlib import Path

    import faiss
    import numpy as np

    from vl2spike_ros.atomic import write_json_atomic

    faiss.omp_set_num_threads(ns.threads)
    dim = ns.dim or _default_dim()
    rng = np.random.default_rng(0)
    base = rng.normal(size=(ns.places, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    # queries near stored places (a robot revisiting), so exact vs approximate is meaningful
    pick = rng.integers(0, ns.places, ns.queries)
    q = base[pick] + 0.05 * rng.normal(size=(ns.queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    results, exact = {}, None
    with tempfile.TemporaryDirectory() as td:
        for f in [s.strip() for s in ns.factories.split(",") if s.strip()]:
            res, ids = bench_factory(f, base, q, Path(td), exact)
            if exact is None and f == "Flat":
                exact = ids
            results[f] = res
            print(f"{f}: search p50 {res['search_ms']['p50']:.3f} ms, p95 "
                  f"{res['search_ms']['p95']:.3f} ms, load {res['load_s']:.3f} s, build "
                  f"{res['build_s']:.1f} s" + (f", R@1 vs exact {res['recall_at_1_vs_exact']:.3f}"
                                               if "recall_at_1_vs_exact" in res else ""))
    out = {"places": ns.places, "dim": dim, "queries": ns.queries, "faiss_threads": ns.threads,
           "targets": {"search_ms": 1.0, "load_s": 1.0}, "indices": results}
    write_json_atomic(ns.json, out)
    return 0
