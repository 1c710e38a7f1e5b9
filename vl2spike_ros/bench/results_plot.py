"""PNG plots of the own_route, accept and neuromorphic benchmark results (from their JSON).

Each ``plot_*`` function takes the results dict the benchmark writes to its JSON and writes a
PNG atomically; the benchmarks call them after a run, and ``--plot-only`` on each benchmark
(or ``python -m vl2spike_ros.bench.results_plot BENCH JSON``) redraws the PNG from a committed
JSON without measuring anything. matplotlib is imported when a plot is drawn, so that
``vl2spike --help`` does not load it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vl2spike_ros.atomic import atomic_path

DPI = 110
OWN_ROUTE_ARMS = (("default", "packaged default (Nordland)"),
                  ("teacher_cnn", "teacher: Nordland CNN"),
                  ("default_pca_refit", "default + PCA-whitening refit on ref"),
                  ("label_free", "label-free distilled on ref + PCA-whitening"))
DIRECTIONS = (("summer_to_winter", "summer → winter"), ("winter_to_summer", "winter → summer"))
NEURO_VARIANTS = (("packaged", "packaged\n(max-pool on\nmembrane)"),
                  ("exported", "exported\n(spike-OR pool)"), ("int8", "int8"),
                  ("iaf", "IAF\n(no leak)"), ("int8-iaf", "int8 + IAF\n(Speck core)"))
NEURO_NIR = (("norse", "exported"), ("snntorch", "exported"), ("int8-iaf_norse", "int8-iaf"))
CROSS_COLOURS = {"gardens_point": "tab:green", "essex3in1": "tab:purple"}
CROSS_LABEL_OFFSET = {"gardens_point": (4, -9), "essex3in1": (-4, 3)}  # points, no overlap


def png_path(json_path: str | Path) -> Path:
    """Return the PNG path next to a results JSON (same name, ``.png``)."""
    return Path(json_path).with_suffix(".png")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def _label_bars(ax, bars, inside: bool = False) -> None:
    """Write each bar's height (one decimal) on top of it, or just inside its top."""
    for b in bars:
        ax.annotate(f"{b.get_height():.1f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="top" if inside else "bottom", fontsize=7,
                    xytext=(0, -7 if inside else 1), textcoords="offset points",
                    color="white" if inside else "black")


def plot_own_route(res: dict, path: str | Path) -> None:
    """Draw grouped bars: R@1 (percent) of each arm per cross-domain set (``own_route.json``)."""
    plt = _pyplot()
    sets = list(res["sets"])
    arms = [(k, t) for k, t in OWN_ROUTE_ARMS if any(k in res["sets"][s] for s in sets)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(arms))
    top = 0.0
    for i, (key, text) in enumerate(arms):
        vals = [res["sets"][s].get(key, {}).get("r1", 0.0) for s in sets]
        top = max(top, *vals)
        bars = ax.bar([j + (i - (len(arms) - 1) / 2) * width for j in range(len(sets))], vals,
                      width, label=text)
        _label_bars(ax, bars)
    ax.set_xticks(range(len(sets)),
                  [f"{s}\n(tolerance {res['sets'][s].get('tolerance', '?')} frames, "
                   f"{res['sets'][s].get('ref_frames', '?')} ref frames)" for s in sets])
    ax.set_ylabel("R@1 (%)")
    ax.set_ylim(0, top * 1.35 + 1)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Label-free adaptation to another environment: R@1, db = ref, queries = query"
                 "\n(query frames never trained on)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _save(plt, fig, path)


def _sweep_xy(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["margin"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _acceptance_checks(ax_p, ax_r, res: dict) -> None:
    """Held-out and cross-domain operating points on the precision / recall panels."""
    held = res.get("held_out_check", {}).get("single_frame")
    if held:
        for ax, key in ((ax_p, "precision"), (ax_r, "recall")):
            if held.get(key) is not None:
                ax.plot(held["margin"], held[key], "D", color="tab:orange", ms=7,
                        label="Nordland held-out (check)")
    for name, check in res.get("crossdomain_check", {}).items():
        if "single_frame" not in check:
            continue
        rows = [check["single_frame"], *check.get("single_frame_larger_margins", [])]
        colour = CROSS_COLOURS.get(name, "tab:gray")
        offset = CROSS_LABEL_OFFSET.get(name, (4, -9))
        for ax, key in ((ax_p, "precision"), (ax_r, "recall")):
            ax.plot(*_sweep_xy(rows, key), "s--", color=colour, ms=5, lw=1,
                    label=f"{name} (cross-domain check)")
        for r in rows:
            if r.get("precision") is not None:
                ax_p.annotate(f"n={r['accepted']}", (r["margin"], r["precision"]), fontsize=6,
                              xytext=offset, textcoords="offset points", color=colour,
                              ha="right" if offset[0] < 0 else "left",
                              bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"})


def _off_map(ax, res: dict) -> None:
    xy = sorted((float(k.removeprefix("margin_")), v["accepted_percent"])
                for k, v in res.get("off_map_check", {}).items())
    if xy:
        ax.plot([m for m, _ in xy], [p for _, p in xy], "v:", color="tab:red", ms=6,
                label="off-map run: accepted % (all wrong)")


def plot_acceptance(res: dict, path: str | Path) -> None:
    """Precision and recall of accepted matches vs margin (``acceptance.json``), checks marked."""
    plt = _pyplot()
    sweep = res["validation_sweep_single_frame"]
    fig, (ax_p, ax_r) = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    ax_p.plot(*_sweep_xy(sweep, "precision"), "-", color="tab:blue",
              label="validation sweep (chooses)")
    ax_p.plot(*_sweep_xy(sweep, "precision_wilson_lower"), "--", color="tab:blue", lw=1,
              label="validation, 95 % Wilson lower bound")
    ax_r.plot(*_sweep_xy(sweep, "recall"), "-", color="tab:blue",
              label="validation sweep (chooses)")
    target = res.get("protocol", {}).get("target_precision")
    if target is not None:
        ax_p.axhline(100 * target, color="gray", lw=0.8, ls=":",
                     label=f"target precision {100 * target:.0f} %")
    _acceptance_checks(ax_p, ax_r, res)
    _off_map(ax_r, res)
    margin = res["chosen_margin"]
    for ax in (ax_p, ax_r):
        ax.axvline(margin, color="black", lw=1, label=f"chosen margin {margin:g}")
        ax.set_xlabel("acceptance margin")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 104)
    ax_p.set_ylabel("precision of accepted matches (%)")
    ax_r.set_ylabel("% of queries: correct and accepted (off-map: accepted)")
    ax_p.legend(fontsize=7, loc="lower right")
    ax_r.legend(fontsize=7, loc="upper right")
    ax_p.set_title("Precision (single frame, ±1 place; n = accepted matches)", fontsize=10)
    ax_r.set_title("Recall (single frame, ±1 place)", fontsize=10)
    fig.suptitle("Acceptance margin chosen on Nordland validation places; checks choose "
                 "nothing", fontsize=11)
    _save(plt, fig, path)


def plot_neuromorphic(res: dict, path: str | Path) -> None:
    """Draw grouped bars: R@1 per model variant and direction (``neuromorphic.json``).

    Runs of the NIR file in norse / snntorch are marked with a cross on the bar they match.
    """
    plt = _pyplot()
    methods = res["methods"]
    variants = [(k, t) for k, t in NEURO_VARIANTS if k in methods]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    width = 0.38
    for i, (d, text) in enumerate(DIRECTIONS):
        xs = [j + (i - 0.5) * width for j in range(len(variants))]
        bars = ax.bar(xs, [methods[k]["recall"][d]["r1"] for k, _ in variants], width,
                      label=f"{text}, spikingjelly")
        _label_bars(ax, bars, inside=True)
        pos = {k: x for (k, _), x in zip(variants, xs)}
        nir = [(pos[v], methods[k]["recall"][d]["r1"]) for k, v in NEURO_NIR
               if k in methods and v in pos]
        if nir:
            ax.plot([x for x, _ in nir], [y for _, y in nir], "kx", ms=8,
                    label="NIR file in norse / snntorch" if i == 0 else None)
    ax.set_xticks(range(len(variants)), [t for _, t in variants], fontsize=8)
    ax.set_ylabel("R@1 (%, ±1 frame, single frame)")
    top = max((b.get_height() for b in ax.patches), default=1.0)
    ax.set_ylim(0, top * 1.3)
    ax.legend(fontsize=8, loc="upper right", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    frames = res.get("frames_per_season", "?")
    ax.set_title(f"Neuromorphic export: R@1 per model change ({res.get('split', 'Nordland')}, "
                 f"{frames} frames/season)", fontsize=10)
    _save(plt, fig, path)


PLOTTERS = {"own_route": plot_own_route, "accept": plot_acceptance,
            "neuromorphic": plot_neuromorphic}


def replot(bench: str, json_path: str | Path, out: str | Path | None = None) -> Path:
    """Redraw the PNG of ``bench`` from its results JSON (next to it unless ``out``)."""
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: results JSON not found (run `vl2spike bench {bench}`)")
    target = Path(out) if out else png_path(path)
    PLOTTERS[bench](json.loads(path.read_text()), target)
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m vl2spike_ros.bench.results_plot BENCH JSON [--out PNG]``."""
    p = argparse.ArgumentParser(description="redraw a benchmark's PNG from its results JSON")
    p.add_argument("bench", choices=sorted(PLOTTERS), help="benchmark that wrote the JSON")
    p.add_argument("json", help="results JSON")
    p.add_argument("--out", default=None, help="PNG path (default: the JSON path with .png)")
    ns = p.parse_args(argv)
    print(replot(ns.bench, ns.json, ns.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
