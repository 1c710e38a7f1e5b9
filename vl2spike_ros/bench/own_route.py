"""Label-free adaptation to another environment, measured (``vl2spike bench own_route``).

For each cross-domain set (``<data root>/vpr_crossdomain/<set>/{ref,query}``): the recipe
``config/vpr/label_free_place_cnn.yaml`` distils the packaged default Spikformer from the
Nordland place CNN on the UNLABELED reference frames only, then fits a PCA-whitening on them;
recall is measured as ``vl2spike eval`` does (db = ref, queries = query; tolerance 2 frames for
gardens_point, 0 for essex3in1). The query frames are never trained on nor used for any choice.
Reported next to it: the packaged default, the teacher CNN, and the default with only the
PCA-whitening refitted (0 epochs: what the post-processing alone does).

Regenerate: ``nice -n 10 .venv/bin/vl2spike bench own_route`` (about 10 minutes on 1 thread);
``--plot-only`` redraws ``own_route.png`` from the JSON.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from vl2spike_ros.atomic import write_json_atomic
from vl2spike_ros.bench.results_plot import plot_own_route, png_path, replot
from vl2spike_ros.data.datasets import list_images
from vl2spike_ros.data.sources import load_source
from vl2spike_ros.models import default_vpr_weights
from vl2spike_ros.paths import data_root
from vl2spike_ros.train.route_run import MODEL_FILE, run_recipe
from vl2spike_ros.train.vpr_config import VPR_CONFIG_DIR, fill_paths, load_recipe
from vl2spike_ros.vpr.place import load_place_descriptor
from vl2spike_ros.vpr.runner import GroundTruth, MatchSettings, evaluate_sets, model_method

log = logging.getLogger(__name__)

SETS = {"gardens_point": 2, "essex3in1": 0}   # set -> frame tolerance of the ground truth
RECIPE = VPR_CONFIG_DIR / "label_free_place_cnn.yaml"
TEACHER = Path("bench/weights/vpr_teacher_cnn.safetensors")
OUT_JSON = Path("bench/results/own_route.json")
COMMAND = "nice -n 10 .venv/bin/vl2spike bench own_route"


def register(subparsers) -> None:
    p = subparsers.add_parser("own_route", help="label-free distillation onto the unlabeled "
                                                "reference frames of other environments")
    p.add_argument("--work", default="out/own_route", help="training outputs go here")
    p.add_argument("--teacher", default=str(TEACHER), help="place CNN teacher weights")
    p.add_argument("--json", default=str(OUT_JSON), help="results JSON (+ .md, .png next to it)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field (repeatable)")
    p.add_argument("--plot-only", action="store_true",
                   help="only redraw the PNG from the existing --json (measures nothing)")
    p.set_defaults(func=_run)


def recall(weights: str | Path, ref: Path, query: Path, tolerance: int) -> dict:
    """R@1/5/10 and PR-AUC of ``weights`` (db = ref, queries = query), as ``vl2spike eval``."""
    place = load_place_descriptor(weights)
    size = place.settings.img_size
    d, q = load_source(ref, size=size), load_source(query, size=size)
    res = evaluate_sets(model_method(place), d.images, q.images,
                        GroundTruth(tolerance, None, d.xy, q.xy), MatchSettings())
    return {"r1": round(res["recall"]["r1"], 2), "r5": round(res["recall"]["r5"], 2),
            "r10": round(res["recall"]["r10"], 2), "pr_auc": round(res["pr_auc"], 4)}


def _train(ref: Path, out: Path, teacher: str, overrides: dict, threads: int) -> float:
    recipe = load_recipe(RECIPE, overrides)
    recipe = fill_paths(recipe, {"teacher": teacher, "default": str(default_vpr_weights()),
                                 "weights_dir": str(Path(teacher).parent), "direct": ""})
    recipe = dataclasses.replace(recipe, threads=threads, progress=False,
                                 data=dataclasses.replace(recipe.data, paths=(str(ref),)))
    t0 = time.time()
    run_recipe(recipe, out)
    return round(time.time() - t0, 1)


def measure(root: Path, work: Path, teacher: str, threads: int,
            overrides: dict | None = None) -> dict:
    """Run every arm on every set; return the results dict."""
    res = {"command": COMMAND, "recipe": str(RECIPE.relative_to(RECIPE.parents[2])),
           "teacher": teacher, "threads": threads, "sets": {}}
    for name, tol in SETS.items():
        ref, query = (root / "vpr_crossdomain" / name / side for side in ("ref", "query"))
        row = {"tolerance": tol, "ref_frames": len(list_images(ref))}
        row["default"] = recall(None, ref, query, tol)
        row["teacher_cnn"] = recall(teacher, ref, query, tol)
        pca, free = work / name / "pca_only", work / name / "label_free"
        s0 = _train(ref, pca, teacher, {**(overrides or {}), "optim.epochs": 0}, threads)
        row["default_pca_refit"] = {**recall(pca / MODEL_FILE, ref, query, tol), "seconds": s0}
        s1 = _train(ref, free, teacher, overrides or {}, threads)
        row["label_free"] = {**recall(free / MODEL_FILE, ref, query, tol), "train_seconds": s1}
        res["sets"][name] = row
        log.info("%s: %s", name, row)
    return res


def to_markdown(res: dict) -> str:
    """Small results table (R@1 / PR-AUC per arm and set)."""
    arms = [("default", "packaged default (Nordland)"), ("teacher_cnn", "teacher: Nordland CNN"),
            ("default_pca_refit", "default + PCA-whitening refit on ref (no training)"),
            ("label_free", "label-free distilled on ref + PCA-whitening")]
    sets = list(res["sets"])
    lines = ["# Label-free distillation onto another environment's unlabeled frames", "",
             f"Regenerate: `{res['command']}` (recipe `{res['recipe']}`, {res['threads']} "
             "thread). db = ref, queries = query; the query frames are never trained on.", "",
             "| arm | " + " | ".join(
                 f"{s} R@1 (tol {res['sets'][s]['tolerance']}) / PR-AUC" for s in sets) + " |",
             "|---|" + "---|" * len(sets)]
    for key, text in arms:
        cells = [f"{res['sets'][s][key]['r1']:.1f} % / {res['sets'][s][key]['pr_auc']:.3f}"
                 for s in sets]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    secs = ", ".join(f"{s}: {res['sets'][s]['label_free']['train_seconds']:.0f} s "
                     f"({res['sets'][s]['ref_frames']} frames)" for s in sets)
    lines += ["", f"Training time (label-free run, teacher pass included): {secs}; wall clock "
              "on a shared 2-core machine, so it varies with the other jobs (the same run took "
              "64 to 335 s here).", ""]
    return "\n".join(lines)


def _run(ns) -> int:
    from vl2spike_ros.train.config import parse_overrides

    if ns.plot_only:
        print(replot("own_route", ns.json))
        return 0
    torch.set_num_threads(ns.threads)
    res = measure(data_root(), Path(ns.work), ns.teacher, ns.threads,
                  parse_overrides(ns.overrides))
    out = Path(ns.json)
    write_json_atomic(out, res)
    out.with_suffix(".md").write_text(to_markdown(res))
    plot_own_route(res, png_path(out))
    print(to_markdown(res))
    return 0
