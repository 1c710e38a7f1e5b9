"""VPR evaluation: Recall@N, PR curve, PR-AUC, recall at 100 % precision, plots.

Ground truth by frame tolerance or metric radius. Recalls are percentages (0-100).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vl2spike_ros.vpr.matching import sequence_scores, topk

log = logging.getLogger(__name__)
DEFAULT_NS = (1, 5, 10, 20)


def correct_by_frames(ids: np.ndarray, gt: np.ndarray, tolerance: int) -> np.ndarray:
    """``ids [Q, K]`` retrieved place indices, ``gt [Q]`` true index -> bool ``[Q, K]``."""
    ids, gt = np.atleast_2d(ids), np.asarray(gt).reshape(-1, 1)
    if len(gt) != len(ids):
        raise ValueError(f"{len(ids)} queries but {len(gt)} ground-truth indices")
    return (ids >= 0) & (np.abs(ids - gt) <= tolerance)


def correct_by_radius(ids: np.ndarray, q_xy: np.ndarray, db_xy: np.ndarray,
                      radius: float) -> np.ndarray:
    """Metric ground truth, bool ``[Q, K]``: retrieved place within ``radius`` (m) of query."""
    ids = np.atleast_2d(ids)
    d = np.linalg.norm(db_xy[np.clip(ids, 0, None)] - q_xy[:, None, :], axis=-1)
    return (ids >= 0) & (d <= radius)


def has_positive_by_radius(q_xy: np.ndarray, db_xy: np.ndarray, radius: float) -> np.ndarray:
    """Return bool ``[Q]``: some database place lies within ``radius`` of each query."""
    out = np.zeros(len(q_xy), dtype=bool)
    for s in range(0, len(q_xy), 1024):
        d = np.linalg.norm(q_xy[s:s + 1024, None, :] - db_xy[None], axis=-1)
        out[s:s + 1024] = (d <= radius).any(axis=1)
    return out


def recall_at_n(correct: np.ndarray, ns=DEFAULT_NS,
                has_positive: np.ndarray | None = None) -> dict[int, float]:
    """Percent of queries (with a positive) whose top-N holds a correct place; N > K skipped."""
    correct = np.atleast_2d(correct)
    mask = np.ones(len(correct), bool) if has_positive is None else np.asarray(has_positive, bool)
    if not mask.any():
        raise ValueError("no query has a true match in the database; recall is undefined")
    hits = np.logical_or.accumulate(correct, axis=1)[mask]
    return {n: float(100.0 * hits[:, n - 1].mean()) for n in ns if n <= correct.shape[1]}


def pr_curve(best_scores: np.ndarray, best_correct: np.ndarray,
             has_positive: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Precision/recall over acceptance thresholds on each query's best score.

    At threshold t the queries with score >= t are accepted; precision = correct accepted /
    accepted, recall = correct accepted / queries with a true match. Starts at (0, 1).
    """
    s = np.asarray(best_scores, dtype=np.float64)
    c = np.asarray(best_correct, dtype=bool)
    n_pos = len(s) if has_positive is None else int(np.sum(has_positive))
    if n_pos == 0 or len(s) == 0:
        raise ValueError("PR curve needs queries with true matches")
    order = np.argsort(-s, kind="stable")
    s, c = s[order], c[order]
    tp, n = np.cumsum(c), np.arange(1, len(s) + 1)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each tied group
    precision = np.r_[1.0, tp[last] / n[last]]
    recall = np.r_[0.0, tp[last] / n_pos]
    return {"precision": precision, "recall": recall, "thresholds": np.r_[np.inf, s[last]]}


def pr_auc(curve: dict[str, np.ndarray]) -> float:
    """Area under the PR curve (step-wise, average-precision style), in [0, 1]."""
    r, p = curve["recall"], curve["precision"]
    return float(np.sum(np.diff(r) * p[1:]))


def recall_at_precision(curve: dict[str, np.ndarray], precision: float = 1.0) -> float:
    """Highest recall (percent) reached at precision >= ``precision``."""
    ok = curve["precision"] >= precision - 1e-12
    return float(100.0 * curve["recall"][ok].max()) if ok.any() else 0.0


def acceptance_metrics(accepted: np.ndarray, correct: np.ndarray,
                       has_positive: np.ndarray | None = None) -> dict:
    """Precision and recall (percent) of the accepted best matches.

    ``accepted``/``correct`` bool ``[Q]`` (best match accepted / correct). Precision = correct
    accepted / accepted (None when nothing was accepted), recall = correct accepted / queries
    with a true match.
    """
    acc = np.asarray(accepted, dtype=bool).reshape(-1)
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    if len(acc) != len(ok):
        raise ValueError(f"{len(acc)} acceptance flags but {len(ok)} correctness flags")
    n_pos = len(ok) if has_positive is None else int(np.sum(has_positive))
    tp, n_acc = int(np.sum(acc & ok)), int(np.sum(acc))
    return {"accepted": n_acc, "correct_accepted": tp,
            "precision": 100.0 * tp / n_acc if n_acc else None,
            "recall": 100.0 * tp / n_pos if n_pos else None}


def evaluate_ranked(scores: np.ndarray, correct: np.ndarray, ns=DEFAULT_NS,
                    has_positive: np.ndarray | None = None) -> dict:
    """Metrics from ranked results (scores/correct ``[Q, K]``, best first)."""
    curve = pr_curve(scores[:, 0], correct[:, 0], has_positive)
    rec = recall_at_n(correct, ns, has_positive)
    return {"recall": {f"r{n}": v for n, v in rec.items()}, "pr_auc": pr_auc(curve),
            "recall_at_95p": recall_at_precision(curve, 0.95),
            "recall_at_100p": recall_at_precision(curve, 1.0), "n_queries": int(len(scores)),
            "_curve": curve}


def evaluate_aligned(sim: np.ndarray, gt: np.ndarray | None = None, tolerances=(0, 1, 2),
                     ns=DEFAULT_NS, seq_len: int = 1) -> dict[str, dict]:
    """Aligned sequences (query i shows place ``gt[i]``, default i): metrics per tolerance.

    Returns ``{"tol0": {...}, "tol1": {...}}``; ``seq_len > 1`` applies sequence matching.
    """
    sim = np.asarray(sim, dtype=np.float32)
    gt = np.arange(len(sim)) if gt is None else np.asarray(gt)
    if seq_len > 1:
        sim = sequence_scores(sim, seq_len)
    scores, ids = topk(sim, max(ns))
    return {f"tol{t}": evaluate_ranked(scores, correct_by_frames(ids, gt, t), ns)
            for t in tolerances}


GT_MODES = ("auto", "aligned", "radius", "none")


def select_ground_truth(gt: str, n_queries: int, n_places: int, query_xy: np.ndarray | None,
                        place_xy: np.ndarray | None, radius: float | None) -> str:
    """Choose the ground truth of a replay: ``"radius"``, ``"aligned"`` or ``"none"``.

    ``"radius"``: query and place positions within ``radius``; ``"aligned"``: query i shows
    place i. ``gt="auto"`` picks radius when both sides have positions and ``radius`` is given,
    aligned when the counts are equal, else none.
    """
    if gt not in GT_MODES:
        raise ValueError(f"ground truth must be one of {', '.join(GT_MODES)}, got {gt!r}")
    have_xy = radius is not None and place_xy is not None and query_xy is not None
    if gt == "auto":
        return "radius" if have_xy else "aligned" if n_queries == n_places else "none"
    if gt == "radius" and not have_xy:
        raise ValueError("--gt radius needs poses in the map and the bag, and --radius")
    return gt


def strip_curves(obj):
    """Copy of a metrics dict without the private ``_curve`` arrays (for JSON)."""
    if isinstance(obj, dict):
        return {k: strip_curves(v) for k, v in obj.items() if not str(k).startswith("_")}
    return obj


def plot_pr(curves: dict[str, dict], path: str | Path, title: str = "Precision-recall") -> None:
    """One PNG with a PR curve per name (curves from :func:`pr_curve`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vl2spike_ros.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, c in curves.items():
        ax.step(c["recall"], c["precision"], where="post", label=f"{name} (AUC {pr_auc(c):.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
