"""Nordland held-out benchmark.

Every method, both directions, tolerances 0/1/2, single-frame and sequence-consistent
matching, speed and energy per query.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from vl2spike_ros.vpr.evaluation import (correct_by_frames, evaluate_ranked, pr_curve)
from vl2spike_ros.vpr.matching import sequence_scores, topk

if TYPE_CHECKING:  # runner pulls in FAISS; keep this module importable without it (VPRTempo venv)
    from vl2spike_ros.vpr.runner import Method

log = logging.getLogger(__name__)
DIRECTIONS = {"summer_to_winter": ("summer", "winter"), "winter_to_summer": ("winter", "summer")}
NS = (1, 5, 10, 20)


def _metrics(scores, ids, tol) -> dict:
    r = evaluate_ranked(scores, correct_by_frames(ids, np.arange(len(ids)), tol), NS)
    return {**r["recall"], "pr_auc": r["pr_auc"], "recall_at_95p": r["recall_at_95p"],
            "recall_at_100p": r["recall_at_100p"]}


def _direction(scores: np.ndarray, ids: np.ndarray, sim: np.ndarray, tolerances,
               seq_len: int) -> tuple[dict, dict, dict]:
    """One direction: (single-frame metrics per tol, sequence metrics per tol, PR curve tol 1).

    ``scores``/``ids`` ``[Q, K]`` are the single-frame ranking, ``sim`` ``[Q, M]`` the full
    similarity (higher = more similar) used for sequence matching.
    """
    single = {f"tol{t}": _metrics(scores, ids, t) for t in tolerances}
    curve = pr_curve(scores[:, 0], correct_by_frames(ids[:, :1], np.arange(len(ids)), 1)[:, 0])
    s_seq, i_seq = topk(sequence_scores(sim, seq_len), max(NS))
    return single, {f"tol{t}": _metrics(s_seq, i_seq, t) for t in tolerances}, curve


def evaluate_method(method: Method, seasons: dict[str, np.ndarray], tolerances=(0, 1, 2),
                    seq_len: int = 5) -> tuple[dict, dict]:
    """(results dict, PR curves at tol 1 per direction) for one method on held-out seasons."""
    from vl2spike_ros.vpr.runner import rank

    desc, t_desc = {}, {}
    method.describe(next(iter(seasons.values()))[:1])  # warm-up (first-call overheads)
    for name, imgs in seasons.items():
        t0 = time.perf_counter()
        desc[name] = method.describe(imgs)
        t_desc[name] = time.perf_counter() - t0
    out, curves, qps = {"sequence": {"seq_len": seq_len}}, {}, []
    for dname, (qn, dbn) in DIRECTIONS.items():
        t0 = time.perf_counter()
        scores, ids = rank(method, desc[qn], desc[dbn], max(NS))
        t_search = time.perf_counter() - t0
        qps.append(len(ids) / (t_desc[qn] + t_search))
        sim = method.similarity(desc[qn], desc[dbn])
        out[dname], out["sequence"][dname], curves[dname] = _direction(scores, ids, sim,
                                                                       tolerances, seq_len)
    out["queries_per_s"] = float(np.mean(qps))
    out["descriptor_dim"] = int(desc[next(iter(desc))].shape[1])
    return out, curves


def evaluate_similarity(sims: dict[str, np.ndarray], query_seconds: dict[str, float],
                        tolerances=(0, 1, 2), seq_len: int = 5) -> tuple[dict, dict]:
    """Evaluate precomputed similarities like :func:`evaluate_method` (same result layout).

    ``sims[direction]`` is ``[Q, M]`` (query i shows database place i; higher = more similar)
    for every direction in :data:`DIRECTIONS`; ``query_seconds[direction]`` is the measured time
    to turn the Q query images into their similarity rows (queries/s = Q / seconds, averaged
    over the directions). Returns (results dict, PR curves at tol 1 per direction).
    """
    missing = [d for d in DIRECTIONS if d not in sims or d not in query_seconds]
    if missing:
        raise ValueError(f"precomputed similarities/timings missing for direction(s) {missing}")
    out, curves, qps = {"sequence": {"seq_len": seq_len}}, {}, []
    for dname in DIRECTIONS:
        sim = np.asarray(sims[dname], dtype=np.float32)
        if sim.ndim != 2 or sim.shape[0] > sim.shape[1] or not np.isfinite(sim).all():
            raise ValueError(f"{dname}: similarity must be a finite [Q, M] matrix with Q <= M "
                             f"(query i = place i), got shape {sim.shape}")
        if query_seconds[dname] <= 0:
            raise ValueError(f"{dname}: query time must be > 0 s, got {query_seconds[dname]}")
        scores, ids = topk(sim, max(NS))
        qps.append(len(sim) / query_seconds[dname])
        out[dname], out["sequence"][dname], curves[dname] = _direction(scores, ids, sim,
                                                                       tolerances, seq_len)
    out["queries_per_s"] = float(np.mean(qps))
    return out, curves


def model_energy(place, images: np.ndarray, n: int = 32) -> dict:
    """Measure energy per query (mJ) and firing rate of a place descriptor.

    ``place`` is a :class:`~vl2spike_ros.vpr.place.PlaceDescriptor` (Spikformer or CNN
    backbone), measured on ``n`` held-out images; counted densely (``energy_mj_per_query``)
    and with a whitening on spike rates counted as on spiking hardware
    (``..._spiking_hw``, see :func:`~vl2spike_ros.energy.counting.rate_projection_count`).
    """
    from vl2spike_ros import energy as en
    from vl2spike_ros.bench.energy_report import place_projection_count, spiking_hw_energy

    x = place.preprocess(images[:n])
    if place.is_spiking:   # counted through what matching uses: head + whitening
        r = en.student_energy(place.backbone, x, output=place)
        proj = place_projection_count(place, x)
        return {"energy_mj_per_query": r["energy_mj"],
                "energy_mj_per_query_spiking_hw": spiking_hw_energy(r["energy_mj"], proj),
                "rate_projection": proj, "firing_rate": r["firing_rate"],
                "sops": r["sops"], "macs": r["macs"]}
    r = en.teacher_energy(place, x)   # an ANN: dense either way
    return {"energy_mj_per_query": r["energy_mj"],
            "energy_mj_per_query_spiking_hw": r["energy_mj"], "macs": r["macs"]}


def markdown_table(res: dict) -> str:
    """Markdown summary (R@1 at tol 0/1/2, R@5/10 at tol 1, PR-AUC, speed, energy)."""
    head = ("| method | dir | R@1 tol0 | R@1 tol1 | R@1 tol2 | R@5 tol1 | R@10 tol1 | PR-AUC tol1 "
            "| R@1 tol1 seq | queries/s | energy mJ/query |\n|" + "---|" * 11 + "\n")
    rows = []
    for name, m in res["methods"].items():
        if "skipped" in m:
            rows.append(f"| {name} | skipped: {m['skipped']} |" + " |" * 9)
            continue
        for d, short in (("summer_to_winter", "S->W"), ("winter_to_summer", "W->S")):
            t = m[d]
            e = m.get("energy_mj_per_query")
            rows.append(
                f"| {name} | {short} | {t['tol0']['r1']:.1f} | {t['tol1']['r1']:.1f} | "
                f"{t['tol2']['r1']:.1f} | {t['tol1']['r5']:.1f} | {t['tol1']['r10']:.1f} | "
                f"{t['tol1']['pr_auc']:.3f} | {m['sequence'][d]['tol1']['r1']:.1f} | "
                f"{m['queries_per_s']:.0f} | {'n/a' if e is None else f'{e:.4f}'} |")
    return head + "\n".join(rows) + "\n"


def plot_curves(curves: dict[str, dict], path) -> None:
    """Two PR panels (S->W, W->S), one curve per method, tolerance +-1, single frame."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vl2spike_ros.atomic import atomic_path
    from vl2spike_ros.vpr.evaluation import pr_auc

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, d in zip(axes, DIRECTIONS):
        for name, c in curves.items():
            ax.step(c[d]["recall"], c[d]["precision"], where="post",
                    label=f"{name} (AUC {pr_auc(c[d]):.3f})")
        ax.set(title=f"Nordland held-out, {d.replace('_', ' ')}, tol +-1", xlabel="recall",
               ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def curves_to_json(curves: dict[str, dict]) -> dict:
    """PR curves per direction -> JSON-friendly lists (precision/recall, 6 decimals)."""
    return {d: {k: np.round(np.asarray(c[k], dtype=np.float64), 6).tolist()
                for k in ("precision", "recall")} for d, c in curves.items()}


_REQUIRED = ("r1", "r5", "r10", "r20", "pr_auc", "recall_at_100p")


def precomputed_result(obj: dict, source: str, seq_len: int | None = None,
                       n_places: int | None = None) -> tuple[dict, dict | None]:
    """Validate a method result produced elsewhere (e.g. VPRTempo in its own venv).

    ``obj`` has the per-method layout of :func:`evaluate_method` (optionally ``pr_curve_tol1``
    from :func:`curves_to_json`). Returns (result without the curves, curves or None). Raises
    ``ValueError`` naming ``source`` and the problem when the layout or protocol does not match.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a JSON object with per-method results")
    if "skipped" in obj:
        return dict(obj), None
    need = [f"{d}.tol{t}.{k}" for d in DIRECTIONS for t in (0, 1, 2) for k in _REQUIRED]
    need += [f"sequence.{d}.tol{t}.r1" for d in DIRECTIONS for t in (0, 1, 2)] + ["queries_per_s"]
    missing = [k for k in need if not _has(obj, k.split("."))]
    if missing:
        raise ValueError(f"{source}: not a VPR result in the benchmark layout; missing "
                         f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    if seq_len is not None and obj["sequence"].get("seq_len") != seq_len:
        raise ValueError(f"{source}: sequence matching used seq_len "
                         f"{obj['sequence'].get('seq_len')}, this benchmark uses {seq_len}")
    if n_places is not None and obj.get("n_places", n_places) != n_places:
        raise ValueError(f"{source}: evaluated on {obj.get('n_places')} places, this benchmark "
                         f"has {n_places}")
    res = {k: v for k, v in obj.items() if k != "pr_curve_tol1"}
    raw = obj.get("pr_curve_tol1")
    if raw is None:
        return res, None
    try:
        curves = {d: {k: np.asarray(raw[d][k], dtype=np.float64) for k in ("precision", "recall")}
                  for d in DIRECTIONS}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: malformed pr_curve_tol1 ({e!r})") from None
    return res, curves


def _has(obj, keys: list[str]) -> bool:
    for k in keys:
        if not isinstance(obj, dict) or k not in obj:
            return False
        obj = obj[k]
    return isinstance(obj, (int, float)) and not isinstance(obj, bool)
