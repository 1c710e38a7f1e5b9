"""Nordland held-out benchmark: every method, both directions, tolerances 0/1/2, single-frame
and sequence-consistent matching, speed and energy per query.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from vl2spike_ros.vpr.evaluation import (correct_by_frames, evaluate_ranked, pr_curve)
from vl2spike_ros.vpr.matching import sequence_scores, topk
from vl2spike_ros.vpr.runner import Method, rank

log = logging.getLogger(__name__)
DIRECTIONS = {"summer_to_winter": ("summer", "winter"), "winter_to_summer": ("winter", "summer")}
NS = (1, 5, 10, 20)


def _metrics(scores, ids, tol) -> dict:
    r = evaluate_ranked(scores, correct_by_frames(ids, np.arange(len(ids)), tol), NS)
    return {**r["recall"], "pr_auc": r["pr_auc"], "recall_at_100p": r["recall_at_100p"]}


def evaluate_method(method: Method, seasons: dict[str, np.ndarray], tolerances=(0, 1, 2),
                    seq_len: int = 5) -> tuple[dict, dict]:
    """(results dict, PR curves at tol 1 per direction) for one method on held-out seasons."""
    desc, t_desc = {}, {}
    method.describe(next(iter(seasons.values()))[:1])  # warm-up (first-call overheads)
    for name, imgs in seasons.items():
        t0 = time.perf_counter()
        desc[name] = method.describe(imgs)
        t_desc[name] = time.perf_counter() - t0
    out, curves, qps = {}, {}, []
    for dname, (qn, dbn) in DIRECTIONS.items():
        t0 = time.perf_counter()
        scores, ids = rank(method, desc[qn], desc[dbn], max(NS))
        t_search = time.perf_counter() - t0
        qps.append(len(ids) / (t_desc[qn] + t_search))
        out[dname] = {f"tol{t}": _metrics(scores, ids, t) for t in tolerances}
        curves[dname] = pr_curve(scores[:, 0], correct_by_frames(ids[:, :1], np.arange(len(ids)), 1)[:, 0])
        sim = method.similarity(desc[qn], desc[dbn])
        s_seq, i_seq = topk(sequence_scores(sim, seq_len), max(NS))
        out.setdefault("sequence", {"seq_len": seq_len})[dname] = {
            f"tol{t}": _metrics(s_seq, i_seq, t) for t in tolerances}
    out["queries_per_s"] = float(np.mean(qps))
    out["descriptor_dim"] = int(desc[next(iter(desc))].shape[1])
    return out, curves


def model_energy(model, images: np.ndarray, n: int = 32) -> dict:
    """Energy per query (mJ) and firing rate of a Spikformer or CNN on ``n`` held-out images."""
    from vl2spike_ros import energy as en
    from vl2spike_ros.vpr.descriptors import model_input_spec, preprocess

    size, chans = model_input_spec(model)
    x = preprocess(images[:n], size, chans)
    if hasattr(model, "lif_nodes"):
        r = en.student_energy(model, x, output="descriptor")
        return {"energy_mj_per_query": r["energy_mj"], "firing_rate": r["firing_rate"],
                "sops": r["sops"], "macs": r["macs"]}
    r = en.teacher_energy(model.descriptor, x)
    return {"energy_mj_per_query": r["energy_mj"], "macs": r["macs"]}


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
