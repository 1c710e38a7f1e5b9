"""Summary, paired confidence intervals, markdown table and plot of ``vl2spike bench distill``.

Top-1 values in the JSON are fractions (0-1); the table and the plot show percent. Paired
differences (``arm - ce``, ``arm - kd``) are taken seed by seed (every arm of a seed shares the
training subset, the initialisation seed and the augmentation stream), with a two-sided
t-distribution confidence interval over the seeds.
"""
from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path
from typing import Any

from scipy import stats as sps

log = logging.getLogger(__name__)

CI_LEVEL = 0.95
PER_SEED_KEYS = ("test_top1", "val_top1", "firing_rate", "energy_mj", "steps", "run_wall_s",
                 "run_dir", "grad_norm_total_mean", "clip_bound_fraction")
REFERENCES = ("ce", "kd")   # paired differences are taken against these arms
UNITS = {"top1": "fraction of test images (0-1); the .md table and the plot show percent",
         "energy_mj": "millijoule per image (energy model of vl2spike_ros.energy)",
         "paired": "difference of top-1 fractions, arm minus reference, per seed"}


def paired_ci(a: list[float], b: list[float], level: float = CI_LEVEL) -> dict[str, Any]:
    """Mean of the paired differences ``a[i] - b[i]`` with a t confidence interval.

    Returns ``n``, ``mean``, ``sd`` (n-1), ``se``, ``t_crit``, ``ci`` ``[lo, hi]`` (None with
    fewer than 2 pairs), ``level``, ``per_seed`` and ``excludes_zero``.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_ci needs two equally long, non-empty lists ({len(a)}, {len(b)})")
    d = [x - y for x, y in zip(a, b)]
    return {**mean_ci(d, level), "per_seed": d}


def mean_ci(values: list[float], level: float = CI_LEVEL) -> dict[str, Any]:
    """Mean of ``values`` with a two-sided t confidence interval of the mean."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "se": None, "t_crit": None, "ci": None,
                "level": level, "excludes_zero": False}
    sd = statistics.stdev(values)
    se = sd / math.sqrt(n)
    t = float(sps.t.ppf(0.5 + level / 2, n - 1))
    lo, hi = mean - t * se, mean + t * se
    return {"n": n, "mean": mean, "sd": sd, "se": se, "t_crit": t, "ci": [lo, hi],
            "level": level, "excludes_zero": bool(lo > 0 or hi < 0)}


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {k: statistics.fmean(d[k] for d in dicts if k in d) for k in keys}


def summarise_arm(seeds: list[int], runs: dict, arm: str, overrides: dict) -> dict[str, Any]:
    """Per-arm numbers (the fields of earlier results are kept: ``top1_mean``, ``top1_std``...)."""
    rs = [runs[(arm, s)] for s in seeds]
    top = [r["test_top1"] for r in rs]
    ci = mean_ci(top)
    out = {
        "top1_mean": ci["mean"], "top1_std": ci["sd"] or 0.0, "top1_ci95": ci["ci"],
        "top1_runs": top,
        "per_seed": {str(s): {k: r.get(k) for k in PER_SEED_KEYS} for s, r in zip(seeds, rs)},
        "firing_rate": statistics.fmean(r["firing_rate"] for r in rs),
        "energy_mj": statistics.fmean(r.get("energy_mj", float("nan")) for r in rs),
        "overrides": overrides, "run_wall_s": [r.get("run_wall_s") for r in rs],
    }
    vals = [r["val_top1"] for r in rs if r.get("val_top1") is not None]
    if len(vals) == len(rs):
        out["val_top1_mean"] = statistics.fmean(vals)
    for key in ("grad_norm_total_mean", "clip_bound_fraction"):
        if all(r.get(key) is not None for r in rs):
            out[key] = statistics.fmean(r[key] for r in rs)
    grads = [r["grad_norm_mean"] for r in rs if r.get("grad_norm_mean")]
    if grads:
        out["grad_norm_mean"] = _mean_dicts(grads)
    return out


def paired_table(arms: dict[str, dict], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """``{ref: {arm: paired_ci(arm, ref)}}`` for each reference arm present."""
    out: dict[str, dict[str, Any]] = {}
    for ref in REFERENCES:
        if ref not in arms:
            continue
        b = arms[ref]["top1_runs"]
        out[ref] = {a: paired_ci(r["top1_runs"], b) for a, r in arms.items()
                    if a not in REFERENCES[:REFERENCES.index(ref) + 1]}
    if len(seeds) < 2:
        log.warning("one seed: no confidence intervals")
    return out


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def _ci_text(ci: list[float] | None, signed: bool = False) -> str:
    return "-" if not ci else f"[{_pct(ci[0], signed)}, {_pct(ci[1], signed)}]"


def table_lines(res: dict) -> list[str]:
    """Markdown lines: arms, paired differences, per-term gradient norms, selection, budget."""
    lines = ["| arm | test top-1 (%) | 95 % CI | std | per seed | val top-1 (%) | firing rate "
             "| energy (mJ/img) |", "|---|---|---|---|---|---|---|---|"]
    for a, r in res["arms"].items():
        per = " / ".join(_pct(v) for v in r["top1_runs"])
        lines.append(f"| {a} | {_pct(r['top1_mean'])} | {_ci_text(r.get('top1_ci95'))} | "
                     f"{_pct(r['top1_std'])} | {per} | {_pct(r.get('val_top1_mean'))} | "
                     f"{r['firing_rate']:.4f} | {r['energy_mj']:.5f} |")
    t = res["teacher"]
    if t.get("top1") is not None:
        lines.append(f"| teacher ({t['teacher_id']}, zero-shot) | {_pct(t['top1'])} | - | - | - "
                     f"| {_pct(t.get('val_top1'))} | - | {t['energy_mj']:.5f} |")
    lines += ["", "Paired differences (percentage points, mean over seeds, "
              f"{int(100 * CI_LEVEL)} % t confidence interval; * = interval excludes 0):", "",
              "| arm | " + " | ".join(f"- {ref}" for ref in res["paired"]) + " |",
              "|---|" + "---|" * len(res["paired"])]
    for a in res["arms"]:
        cells = []
        for ref, table in res["paired"].items():
            p = table.get(a)
            cells.append("-" if p is None else f"{_pct(p['mean'], True)} "
                         f"{_ci_text(p['ci'], True)}{' *' if p['excludes_zero'] else ''}")
        if any(c != "-" for c in cells):
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines += _grad_lines(res["arms"]) + _selection_lines(res.get("selection", []))
    return lines + _budget_lines(res)


def _grad_lines(arms: dict) -> list[str]:
    terms = sorted({k for r in arms.values() for k in r.get("grad_norm_mean", {})})
    if not terms:
        return []
    lines = ["", "Mean gradient norm of each weighted term w.r.t. the student's parameters "
             "(|d term / d student|, logged every `optim.grad_norm_every` steps):", "",
             "| arm | " + " | ".join(terms) + " |", "|---|" + "---|" * len(terms)]
    for a, r in arms.items():
        g = r.get("grad_norm_mean", {})
        lines.append(f"| {a} | " + " | ".join(f"{g[k]:.3g}" if k in g else "-" for k in terms)
                     + " |")
    return lines


def _selection_lines(selection: list[dict]) -> list[str]:
    lines = []
    for grp in selection:
        vals = ", ".join(f"{c} {_pct(v)}" for c, v in grp["val_top1"].items())
        lines.append(f"- {grp['name']} (arm {grp['arm']}, seed {grp['seed']}, validation "
                     f"top-1 %): {vals} -> **{grp['winner']}**")
    if not lines:
        return []
    return ["", "Chosen on the validation split before the main runs:", "", *lines]


def _budget_lines(res: dict) -> list[str]:
    b = res["budget"]
    return ["", f"Budget: {b['train_images']} train images (one fixed subset for every seed: "
            f"{b['fixed_subset']}), {b['epochs']} epochs, batch {b['batch_size']}, "
            f"{b['steps_per_run']} steps/run, student {b['model']} {b['model_overrides']}, "
            f"seeds {res['seeds']}; test {b['test_images']} images. Teacher online: "
            f"{b['teacher_online']}; KD and SPL prompts the same: {b['kd_prompts_same_as_spl']}; "
            f"teacher disjoint from the student's images: "
            f"{res['teacher'].get('disjoint_from_student')}. "
            f"Wall clock of this invocation: {res['wall_clock_min']} min (finished runs are read "
            f"back from the work dir); the main runs' own wall time summed: "
            f"{res.get('runs_wall_s_total', 0.0) / 60:.1f} min, "
            f"{b.get('parallel_runs', 1)} at a time."]


def plot(res: dict, path: Path) -> None:
    """PNG: per-arm top-1 with CIs, paired differences with CIs, energy vs top-1."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vl2spike_ros.atomic import atomic_path

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    _plot_arms(ax1, res)
    _plot_paired(ax2, res)
    for a, r in res["arms"].items():
        ax3.errorbar(1e3 * r["energy_mj"], 100 * r["top1_mean"], yerr=_yerr(r), fmt="o",
                     capsize=3, label=a)
    ax3.set_xlabel("energy per image (µJ)")
    ax3.set_ylabel("test top-1 (%)")
    if res["teacher"].get("energy_mj") is not None:
        ax3.set_title(f"teacher: {res['teacher']['energy_mj']:.4f} mJ/img")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    log.info("plot -> %s", path)


def _yerr(r: dict) -> list[list[float]] | None:
    ci = r.get("top1_ci95")
    if not ci:
        return None
    return [[100 * (r["top1_mean"] - ci[0])], [100 * (ci[1] - r["top1_mean"])]]


def _plot_arms(ax, res: dict) -> None:
    names = list(res["arms"])
    for i, a in enumerate(names):
        r = res["arms"][a]
        ax.bar(i, 100 * r["top1_mean"], color="tab:blue", alpha=0.6)
        ax.errorbar(i, 100 * r["top1_mean"], yerr=_yerr(r), color="k", capsize=4)
        ax.plot([i] * len(r["top1_runs"]), [100 * v for v in r["top1_runs"]], "k.", ms=4)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    lo = min(min(r["top1_runs"]) for r in res["arms"].values())
    ax.set_ylim(max(0.0, 100 * lo - 5), None)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("arms: mean, 95 % CI, seeds (dots)")


def _plot_paired(ax, res: dict) -> None:
    rows = [(ref, a, p) for ref, t in res["paired"].items() for a, p in t.items()]
    for i, (ref, a, p) in enumerate(rows):
        colour = "tab:green" if ref == "ce" else "tab:purple"
        ci = p["ci"]
        err = None if not ci else [[100 * (p["mean"] - ci[0])], [100 * (ci[1] - p["mean"])]]
        ax.errorbar(100 * p["mean"], i, xerr=err, fmt="o", color=colour, capsize=3)
    ax.set_yticks(range(len(rows)), [f"{a} - {ref}" for ref, a, _ in rows], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    for x in (-1, 1):
        ax.axvline(x, color="grey", ls=":", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("paired difference (percentage points)")
    ax.set_title("paired differences, 95 % t CI (dotted: ±1 pt)")


def summarise(spec: dict, base: dict, arm_specs: dict, runs: dict, teacher: dict,
              extra: dict) -> dict[str, Any]:
    """Build the results: ``arms``, ``paired``, ``seeds``, ``teacher``, ``budget``, ``selection``.

    ``runs``: ``{(arm, seed): metrics}``; ``extra``: ``wall_s``, ``parallel``, ``selection``
    (records of the validation choices) and ``chosen`` (arm -> overrides they set).
    """
    from vl2spike_ros.train.config import config_from_dict

    seeds = [int(s) for s in spec["seeds"]]
    arms = {a: summarise_arm(seeds, runs, a, {**extra["chosen"].get(a, {}), **ov})
            for a, ov in arm_specs.items()}
    first = next(iter(arm_specs))
    cfg = config_from_dict(base, {**extra["chosen"].get(first, {}), **arm_specs[first]})
    run0 = runs[(first, seeds[0])]
    budget = {"train_images": run0.get("train_images"), "fixed_subset": cfg.data.subset_seed
              is not None, "subset_seed": cfg.data.subset_seed, "epochs": cfg.optim.epochs,
              "batch_size": cfg.optim.batch_size, "steps_per_run": run0["steps"],
              "test_images": teacher["test_images"], "model": cfg.model,
              "model_overrides": cfg.model_overrides, "seeds": seeds,
              "parallel_runs": extra["parallel"], "torch_threads_per_run": cfg.threads,
              "teacher_online": cfg.teacher.online, "device": cfg.device,
              "kd_prompts_same_as_spl": not cfg.teacher.kd_templates
              or tuple(cfg.teacher.kd_templates) == tuple(cfg.teacher.templates),
              "grad_clip": cfg.optim.grad_clip, "clip_mode": cfg.optim.clip_mode}
    wall = extra["wall_s"]
    runs_s = sum(sum(a.get("run_wall_s") or []) for a in arms.values())
    return {"seeds": seeds, "units": UNITS, "arms": arms, "paired": paired_table(arms, seeds),
            "teacher": teacher, "budget": budget, "selection": extra["selection"],
            "wall_clock_s": round(wall, 1), "wall_clock_min": round(wall / 60, 1),
            "runs_wall_s_total": round(runs_s, 1)}
