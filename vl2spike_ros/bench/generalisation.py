"""Generalisation part of ``vl2spike bench vpr``: places the models never saw.

Besides the Nordland held-out segment (both directions, tolerance 1), every method is run on the
crossdomain sets under ``<data>/vpr_crossdomain/<name>/{ref,query}`` (ref = database, query i
shows ref place i): gardens_point at tolerance 2 and essex3in1 at tolerance 0 (the tolerances
of the data's README). They are validation of transfer: nothing is trained or chosen on them
here, and the Nordland held-out segment chose nothing either; what chose what is recorded per
method from its weights metadata (:func:`selection`). Frames are resized to 32x64 (INTER_AREA)
on load, as ``vl2spike eval`` does for these methods.

Per method and set: single-frame R@1/5/10, PR-AUC, recall at 95 % and 100 % precision. The
summary row of a method is its R@1 on the four sets (Nordland S->W, W->S, gardens_point,
essex3in1) and their plain mean. Student arms trained with several seeds (``<weights
stem>_seed<k>.safetensors`` next to the main file) are summarised as mean +- std over seeds,
with the paired difference distilled - control (paired by training seed).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CROSSDOMAIN = {"gardens_point": 2, "essex3in1": 0}   # set -> frame tolerance
CROSSDOMAIN_DIR = "vpr_crossdomain"
LOAD_SIZE = (32, 64)                                  # (H, W) on load, like `vl2spike eval`
NORDLAND_SETS = {"summer_to_winter": "Nordland S->W", "winter_to_summer": "Nordland W->S"}
SET_LABELS = {**NORDLAND_SETS, "gardens_point": "gardens_point", "essex3in1": "essex3in1"}
NORDLAND_TOL = "tol1"
MARGIN_OVER_SAME_POST = 5.0     # packaged mean R@1 >= HOG + the same whitening + this
DISTILL_MARGIN = 3.0            # distilled >= control + this (mean over >= MIN_SEEDS seeds)
MIN_SEEDS = 3
ENERGY_RATIO = 0.10             # packaged energy (spiking-hardware count) <= this x teacher
MIN_QUERIES_PER_S = 300
ARMS = {"control": "spikformer_continued", "distilled": "vl2spike"}
CHOSEN_ON = ("descriptor mode, schedule, whitening dim/shrink and the default weights: chosen on "
             "Nordland validation places (last 10 % of the training segment); whitening fitted "
             "on the other training places, both seasons; crossdomain sets and the Nordland "
             "held-out segment chose nothing")


def load_crossdomain(root: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Read ``{name: (database images, query images, tolerance)}`` from ``root``.

    ``root`` is the ``vpr_crossdomain`` folder; a missing set raises ``FileNotFoundError``.
    """
    from vl2spike_ros.data.sources import load_source

    out = {}
    for name, tol in CROSSDOMAIN.items():
        folder = Path(root) / name
        for side in ("ref", "query"):
            if not (folder / side).is_dir():
                raise FileNotFoundError(f"crossdomain set {folder / side} not found (expected "
                                        f"{CROSSDOMAIN_DIR}/<set>/ref and query folders)")
        out[name] = (load_source(folder / "ref", size=LOAD_SIZE).images,
                     load_source(folder / "query", size=LOAD_SIZE).images, tol)
    return out


def evaluate_crossdomain(method, sets: dict) -> dict:
    """Single-frame metrics of ``method`` on every crossdomain set (see module docstring)."""
    from vl2spike_ros.vpr.runner import GroundTruth, evaluate_sets

    out = {}
    for name, (db, q, tol) in sets.items():
        r = evaluate_sets(method, db, q, GroundTruth(tolerance=tol))
        out[name] = {**{k: r["recall"].get(k) for k in ("r1", "r5", "r10")}, "pr_auc": r["pr_auc"],
                     "recall_at_95p": r["recall_at_95p"],
                     "recall_at_100p": r["recall_at_100p"], "tolerance": tol,
                     "n_queries": r["n_queries"], "n_db": r["n_db"],
                     "queries_per_s": r["queries_per_s"]}
    return out


def summary_row(m: dict) -> dict | None:
    """R@1 (and recall at 95/100 % precision) per set and their means; None if incomplete."""
    cross = m.get("crossdomain", {})
    if "skipped" in m or any(d not in m for d in NORDLAND_SETS) or \
            any(s not in cross for s in CROSSDOMAIN):
        return None
    per = {d: m[d][NORDLAND_TOL] for d in NORDLAND_SETS}
    per.update({s: cross[s] for s in CROSSDOMAIN})
    row = {s: float(v["r1"]) for s, v in per.items()}
    row["mean"] = float(np.mean([row[s] for s in per]))
    for k in ("recall_at_95p", "recall_at_100p"):
        vals = [v.get(k) for v in per.values()]
        row[k + "_mean"] = float(np.mean(vals)) if None not in vals else None
    return row


def _mean_std(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else None,
            "n": int(len(a))}


def seed_arms(summary: dict, seeds: dict) -> dict:
    """Mean +- std over seeds of each student arm and the paired difference.

    ``summary``: method -> :func:`summary_row`; ``seeds``: method -> training seed. Methods
    named ``<arm method>`` or ``<arm method>_seed<k>`` belong to that arm.
    """
    cols = [*SET_LABELS, "mean"]
    arms = {}
    for arm, base in ARMS.items():
        names = [n for n in summary if (n == base or n.startswith(base + "_seed"))
                 and summary[n] is not None]
        arms[arm] = {"methods": names, "seeds": [seeds.get(n) for n in names],
                     **{c: _mean_std([summary[n][c] for n in names]) for c in cols if names}}
    by_seed = {a: {seeds.get(n): n for n in arms[a]["methods"]} for a in ARMS}
    paired = sorted(s for s in by_seed["distilled"] if s is not None and s in by_seed["control"])
    diff = {"seeds": paired}
    if paired:
        diff.update({c: _mean_std([summary[by_seed["distilled"][s]][c]
                                   - summary[by_seed["control"][s]][c] for s in paired])
                     for c in cols})
    arms["distilled_minus_control"] = diff
    return arms


def targets(methods: dict, summary: dict, arms: dict, packaged: str) -> dict:
    """Check the generalisation targets for the ``packaged`` method."""
    out = {"packaged": packaged, "margin_over_hog_same_post": MARGIN_OVER_SAME_POST,
           "distill_margin": DISTILL_MARGIN, "min_seeds": MIN_SEEDS,
           "energy_ratio": ENERGY_RATIO, "min_queries_per_s": MIN_QUERIES_PER_S}
    p, hw, hog = summary.get(packaged), summary.get("hog_whitened"), summary.get("hog")
    if p is None:
        return {**out, "skipped": f"{packaged} not evaluated on every set"}
    if hw is not None:
        out["vs_hog_same_post"] = {"packaged_mean": p["mean"], "hog_same_post_mean": hw["mean"],
                                   "margin": p["mean"] - hw["mean"],
                                   "met": p["mean"] >= hw["mean"] + MARGIN_OVER_SAME_POST}
    if hog is not None:
        out["beats_plain_hog_every_set"] = {
            "margins": {s: p[s] - hog[s] for s in SET_LABELS},
            "met": all(p[s] > hog[s] for s in SET_LABELS)}
    d = arms.get("distilled_minus_control", {})
    n = len(d.get("seeds", []))
    out["distilled_vs_control"] = {"paired_seeds": n, "diff_mean": d.get("mean"),
                                   "met": n >= MIN_SEEDS and d["mean"]["mean"] >= DISTILL_MARGIN}
    pm, tm = methods.get(packaged, {}), methods.get("teacher", {})
    if "energy_mj_per_query_spiking_hw" in pm and "energy_mj_per_query" in tm:
        ratio = pm["energy_mj_per_query_spiking_hw"] / tm["energy_mj_per_query"]
        out["energy_vs_teacher"] = {
            "ratio_spiking_hw": ratio,
            "ratio_dense": pm["energy_mj_per_query"] / tm["energy_mj_per_query"],
            "met": ratio <= ENERGY_RATIO}
    if "queries_per_s" in pm:
        out["speed_met"] = pm["queries_per_s"] >= MIN_QUERIES_PER_S
    return out


def selection(name: str, weights: str | Path | None) -> dict:
    """Which data chose what for one method (read from its weights metadata when it has any)."""
    if weights is None:
        fixed = {"sad": "the issue's SAD settings (32x64, 8-px patches); nothing chosen",
                 "hog": "the issue's HOG settings (32x64, 4-px cells); nothing chosen",
                 "hog_whitened": "HOG + a whitening fitted like the models' (Nordland training "
                                 "places without the validation places; dim/shrink as the "
                                 "models')"}
        return {"chosen_on": fixed.get(name, "external result; see its source")}
    from vl2spike_ros.models import read_model_meta

    md = read_model_meta(weights)["metadata"]
    vpr = md.get("vpr", {})
    wh = vpr.get("whitening", {})
    out = {"weights": str(weights), "seed": md.get("train_config", {}).get("seed"),
           "descriptor": vpr.get("descriptor"), "chosen_on": CHOSEN_ON,
           "whitening_fitted_on_places": wh.get("fitted_on_places"),
           "validation_r1_whitened": wh.get("val_r1_whitened")}
    if "selected_as_default" in md:
        out["selected_as_default"] = md["selected_as_default"]
    return out


def report(methods: dict, packaged: str, weights: dict) -> dict:
    """Build the ``generalisation`` block of the bench JSON (summary, arms, targets, selection).

    ``weights``: method -> weights path (None for methods without weights).
    """
    summary = {n: summary_row(m) for n, m in methods.items()}
    seeds = {n: (selection(n, w).get("seed") if w else None) for n, w in weights.items()}
    arms = seed_arms(summary, seeds)
    return {"sets": {**{d: {"tolerance": 1, "source": "Nordland held-out segment"}
                        for d in NORDLAND_SETS},
                     **{s: {"tolerance": t, "source": f"{CROSSDOMAIN_DIR}/{s} (ref = database)"}
                        for s, t in CROSSDOMAIN.items()}},
            "mean_definition": "plain mean of the R@1 on the four sets",
            "summary": summary, "arms": arms,
            "targets": targets(methods, summary, arms, packaged),
            "selection": {n: selection(n, w) for n, w in weights.items()}}


def _cell(v: dict | float | None) -> str:
    if v is None:
        return "–"
    if isinstance(v, dict):
        return f"{v['mean']:.1f}" + (f" ± {v['std']:.1f}" if v.get("std") is not None else "")
    return f"{v:.1f}"


def markdown(gen: dict, methods: dict) -> str:
    """README-ready table: R@1 per set, mean, recall at 95/100 % precision, energy, speed."""
    head = ("| method | " + " | ".join(SET_LABELS.values()) + " | mean | R@95%P | R@100%P "
            "| mJ/query dense / spiking-hw | queries/s |\n|" + "---|" * 10 + "\n")
    rows = []
    for name, s in gen["summary"].items():
        if s is None:
            continue
        m = methods[name]
        e = m.get("energy_mj_per_query")
        energy = "–" if e is None else f"{e:.4f} / {m['energy_mj_per_query_spiking_hw']:.4f}"
        rows.append(f"| {name} | " + " | ".join(_cell(s[c]) for c in SET_LABELS)
                    + f" | {_cell(s['mean'])} | {_cell(s['recall_at_95p_mean'])} | "
                    f"{_cell(s['recall_at_100p_mean'])} | {energy} | "
                    f"{m.get('queries_per_s', 0):.0f} |")
    for arm in ("control", "distilled", "distilled_minus_control"):
        a = gen["arms"].get(arm, {})
        if "mean" in a:
            n = a["mean"]["n"]
            rows.append(f"| {arm} ({n} seed{'s' if n != 1 else ''}) | "
                        + " | ".join(_cell(a[c]) for c in SET_LABELS)
                        + f" | {_cell(a['mean'])} | | | | |")
    return head + "\n".join(rows) + "\n"
