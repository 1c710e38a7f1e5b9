"""``vl2spike bench vpr``: Nordland held-out comparison and generalisation.

SAD, HOG, HOG + learned whitening, VPRTempo, ANN teacher, Spikformer direct, equal-budget
control, Spikformer distilled (= vl2spike). Uses trained weights; ``--train`` retrains. The
targets compare vl2spike with the issue's baselines (SAD, HOG, VPRTempo). Every method is also
run on the crossdomain sets (places never seen; :mod:`vl2spike_ros.bench.generalisation`), and
extra training seeds of the student arms (``<stem>_seed<k>.safetensors``) are evaluated too.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)
WEIGHTS_DIR = Path("bench/weights")
TEACHER = "vpr_teacher_cnn.safetensors"
DIRECT = "vpr_spikformer_direct.safetensors"
DISTILLED = "vpr_spikformer_distilled.safetensors"
CONTINUED = "vpr_spikformer_direct_continued.safetensors"  # equal-budget control (no teacher)
VPRTEMPO_JSON = Path("bench/results/vprtempo_nordland.json")  # written by `make bench-vprtempo`
ISSUE_BASELINES = ("sad", "hog", "vprtempo")
TARGET_MARGIN_POINTS = 6.63  # vl2spike R@1 (tol 1) >= best issue baseline + this, each direction
TARGET_QUERIES_PER_S = 300
DIRECTION_NAMES = ("summer_to_winter", "winter_to_summer")


def register(subparsers) -> None:
    p = subparsers.add_parser("vpr", help="Nordland VPR benchmark (held-out 40 %%, both seasons)")
    p.add_argument("--json", default="bench/results/vpr_nordland.json", metavar="PATH",
                   help="results JSON")
    p.add_argument("--md", default=None, metavar="PATH", help="default: JSON path with .md")
    p.add_argument("--plot", default=None, metavar="PNG", help="default: <json stem>_pr.png")
    p.add_argument("--data-root", default=None, help="folder holding nordland/ (default: paths)")
    p.add_argument("--weights-dir", default=str(WEIGHTS_DIR), help="teacher + direct weights")
    p.add_argument("--vl2spike-weights", default=None,
                   help="distilled student (default: <weights-dir>/" + DISTILLED + ")")
    p.add_argument("--train", action="store_true", help="retrain teacher, direct and distilled")
    p.add_argument("--ckpt-dir", default="bench/weights/ckpt", help="resumable checkpoints")
    p.add_argument("--seq-len", type=int, default=5, help="sequence matching length")
    p.add_argument("--vprtempo-json", default=None,
                   help="results of VPRTempo run in its own venv (`make bench-vprtempo`; same "
                        f"JSON layout per method); default: {VPRTEMPO_JSON} when present")
    p.add_argument("--threads", type=int, default=1, help="torch threads for timing (default 1)")
    p.add_argument("--no-whitening", action="store_true",
                   help="evaluate the learned models without their fitted whitening (ablation)")
    p.add_argument("--model-card", default=None, metavar="MD",
                   help="also write a model card for the vl2spike weights here")
    p.add_argument("--from-json", default=None, metavar="JSON",
                   help="with --model-card: write the card from these saved results (and "
                        "bench/results/energy.json) without running the benchmark")
    p.add_argument("--crossdomain-root", default=None, metavar="DIR",
                   help="folder with the crossdomain sets (default: <data root>/vpr_crossdomain)")
    p.add_argument("--no-crossdomain", action="store_true",
                   help="Nordland only (no crossdomain sets, no generalisation summary)")
    p.set_defaults(func=_handler)


def _targets(methods: dict) -> dict:
    """Compare vl2spike with the best issue baseline per direction, and check its speed."""
    base = {k: v for k, v in methods.items() if k in ISSUE_BASELINES and "skipped" not in v}
    out = {"margin_points": TARGET_MARGIN_POINTS, "min_queries_per_s": TARGET_QUERIES_PER_S}
    if "vl2spike" not in methods or "skipped" in methods["vl2spike"] or not base:
        return out
    v = methods["vl2spike"]
    for d in DIRECTION_NAMES:
        best = max(base, key=lambda k: base[k][d]["tol1"]["r1"])
        b = base[best][d]["tol1"]["r1"]
        out[d] = {"best_baseline": best, "baseline_r1": b, "vl2spike_r1": v[d]["tol1"]["r1"],
                  "margin": v[d]["tol1"]["r1"] - b,
                  "met": v[d]["tol1"]["r1"] >= b + TARGET_MARGIN_POINTS}
    out["speed_met"] = v["queries_per_s"] >= TARGET_QUERIES_PER_S
    return out


def load_vprtempo(path: str | Path | None, seq_len: int,
                  n_places: int) -> tuple[dict, dict | None]:
    """Read the VPRTempo result (run in its own venv): (method result, PR curves or None).

    ``path=None`` uses :data:`VPRTEMPO_JSON` when present, else a ``skipped`` entry. An explicit
    path that is missing raises ``FileNotFoundError``; bad JSON or layout raises ``ValueError``.
    """
    import json

    from vl2spike_ros.bench.nordland import precomputed_result

    if path is None and not VPRTEMPO_JSON.is_file():
        why = (f"not run: VPRTempo needs its own venv and CPU training; run `make "
               f"bench-vprtempo` (writes {VPRTEMPO_JSON}) or pass --vprtempo-json")
        return {"skipped": why}, None
    p = Path(path) if path is not None else VPRTEMPO_JSON
    if not p.is_file():
        raise FileNotFoundError(f"VPRTempo results {p} not found (run `make bench-vprtempo`)")
    try:
        obj = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    res, curves = precomputed_result(obj, str(p), seq_len=seq_len, n_places=n_places)
    res.setdefault("source", str(p))
    return res, curves


def _train(ns, root, wdir: Path) -> dict:
    """Retrain teacher, direct and distilled students with the shipped recipes (resumable)."""
    from vl2spike_ros.train.vpr_all import main_train

    return main_train(root, wdir, ns.vl2spike_weights, None, ns.ckpt_dir)


def _hog_whitened(root: Path):
    """HOG + the learned whitening our models use, fitted the same way.

    Fitted on the training places of the training segment (validation places left out): a fair
    reference for whitened descriptors, not one of the issue's baselines.
    """
    import torch

    from vl2spike_ros.data.datasets import load_nordland
    from vl2spike_ros.train.recipes import VAL_FRACTION, split_val
    from vl2spike_ros.train.whiten import WHITEN_DIM, WHITEN_SHRINK
    from vl2spike_ros.vpr.baselines import cosine_similarity, hog_descriptors
    from vl2spike_ros.vpr.runner import Method
    from vl2spike_ros.vpr.whitening import fit_whitening

    s, w = (load_nordland(root, season, "train")[0] for season in ("summer", "winter"))
    s, w, _, _ = split_val(s, w, VAL_FRACTION)
    wh = fit_whitening(hog_descriptors(s), hog_descriptors(w), WHITEN_DIM, WHITEN_SHRINK)
    return Method("hog_whitened", lambda x: wh(torch.from_numpy(hog_descriptors(x))).numpy(),
                  cosine_similarity, faiss_ok=True)


def _methods(ns, wdir: Path, root: Path):
    from vl2spike_ros.models import default_vpr_weights
    from vl2spike_ros.vpr.place import load_place_descriptor
    from vl2spike_ros.vpr.runner import baseline_method, model_method

    yield "sad", baseline_method("sad"), None, None
    yield "hog", baseline_method("hog"), None, None
    yield "hog_whitened", _hog_whitened(root), None, None
    paths = {"teacher": wdir / TEACHER, "spikformer": wdir / DIRECT,
             "spikformer_continued": wdir / CONTINUED,
             "vl2spike": Path(ns.vl2spike_weights) if ns.vl2spike_weights else wdir / DISTILLED}
    if default_vpr_weights().is_file() and all(
            not p.is_file() or p.read_bytes() != default_vpr_weights().read_bytes()
            for p in paths.values()):
        paths["default"] = default_vpr_weights()   # packaged weights not among the rows above
    for name in ("spikformer_continued", "vl2spike"):   # extra training seeds of the arms
        for p in sorted(paths[name].parent.glob(paths[name].stem + "_seed*.safetensors")):
            paths[name + p.stem[len(paths[name].stem):]] = p
    for name, p in paths.items():
        if name == "spikformer_continued" and not p.is_file():
            continue
        if not p.is_file():
            yield name, None, f"weights {p} not found (run with --train)", None
            continue
        place = load_place_descriptor(p)
        if ns.no_whitening and place.whitening is not None:
            place = place.with_whitening(None)
            meta = {**place.model_meta(), "whitening": "disabled"}
        else:
            meta = place.model_meta()
        yield name, model_method(place, name), None, (place, meta, p)


def _protocol(ns, root: Path) -> dict:
    """Return the benchmark's protocol block (what was evaluated, how)."""
    from vl2spike_ros.data.datasets import NORDLAND_TRAIN_FRACTION as f

    return {"dataset": str(root),
            "split": f"held-out: last {1 - f:.0%} of places (train: first {f:.0%})",
            "tolerances_frames": [0, 1, 2], "recall_unit": "percent",
            "seq_len": ns.seq_len, "directions": "query season -> database season",
            "whitening": "disabled (ablation)" if ns.no_whitening else "as stored in the weights",
            "torch_threads": ns.threads}


def _evaluate_all(ns, wdir: Path, root: Path, seasons: dict,
                  cross: dict | None) -> tuple[dict, dict, dict]:
    """Evaluate every method on the held-out ``seasons`` and the crossdomain sets.

    Returns (results, PR curves, method -> weights path or None).
    """
    from vl2spike_ros.bench.generalisation import evaluate_crossdomain
    from vl2spike_ros.bench.nordland import evaluate_method, model_energy

    results, curves, weights = {}, {}, {}
    for name, method, skipped, model_info in _methods(ns, wdir, root):
        if method is None:
            results[name] = {"skipped": skipped}
            continue
        log.info("evaluating %s", name)
        r, c = evaluate_method(method, seasons, seq_len=ns.seq_len)
        if cross:
            r["crossdomain"] = evaluate_crossdomain(method, cross)
        weights[name] = None if model_info is None else model_info[2]
        if model_info is not None:
            model, meta, p = model_info
            r.update(model_energy(model, seasons["summer"]))
            r.update({"weights": str(p), "model": meta,
                      "params": int(sum(t.numel() for t in model.parameters()))})
        results[name] = r
        curves[name] = c
        print(f"{name}: R@1 tol1 S->W {r['summer_to_winter']['tol1']['r1']:.1f}% "
              f"W->S {r['winter_to_summer']['tol1']['r1']:.1f}%, {r['queries_per_s']:.0f} q/s")
    return results, curves, weights


def _write_results(ns, res: dict, curves: dict) -> str:
    """Write JSON, Markdown table, PR plot (and model card); return the Markdown table."""
    import json

    from vl2spike_ros.atomic import write_bytes_atomic, write_json_atomic
    from vl2spike_ros.bench.nordland import markdown_table, plot_curves

    out = Path(ns.json)
    write_json_atomic(out, res)
    md = markdown_table(res)
    if "generalisation" in res:
        from vl2spike_ros.bench.generalisation import markdown
        gen = res["generalisation"]
        md += ("\n## Generalisation: R@1 % on places never seen (single frame)\n\n"
               + markdown(gen, res["methods"]) + "\n```json\n"
               + json.dumps(gen["targets"], indent=2) + "\n```\n")
    text = ("# Nordland VPR benchmark (held-out 40 %)\n\nRecall in percent.\n\n" + md
            + "\n```json\n" + json.dumps(res["targets"], indent=2) + "\n```\n")
    write_bytes_atomic(Path(ns.md) if ns.md else out.with_suffix(".md"), text.encode())
    plot_curves(curves, Path(ns.plot) if ns.plot else out.with_name(out.stem + "_pr.png"))
    if ns.model_card:
        from vl2spike_ros.bench.model_card import write_model_card
        from vl2spike_ros.models import default_vpr_weights
        write_model_card(ns.model_card, res, default_vpr_weights())
    return md


def _crossdomain(ns) -> dict:
    """Load the crossdomain sets (``--crossdomain-root`` or the data root's)."""
    from vl2spike_ros.bench.generalisation import CROSSDOMAIN_DIR, load_crossdomain
    from vl2spike_ros.paths import resolve_data_path

    root = ns.crossdomain_root or (Path(ns.data_root) / CROSSDOMAIN_DIR if ns.data_root
                                   else None)
    return load_crossdomain(resolve_data_path(root, CROSSDOMAIN_DIR))


def _handler(ns) -> int:
    import torch

    from vl2spike_ros.data.datasets import load_nordland
    from vl2spike_ros.paths import nordland_root

    if ns.from_json:
        if not ns.model_card:
            raise SystemExit("vl2spike bench vpr: --from-json only writes the model card; "
                             "give --model-card MD")
        from vl2spike_ros.bench.model_card import card_from_json
        card_from_json(ns.model_card, ns.from_json)
        print(f"wrote {ns.model_card}")
        return 0
    if ns.no_whitening and ns.model_card:
        raise SystemExit("vl2spike bench vpr: --model-card describes the weights as shipped; "
                         "do not combine it with --no-whitening")
    torch.set_num_threads(ns.threads)
    root = nordland_root(Path(ns.data_root) / "nordland" if ns.data_root else None)
    wdir = Path(ns.weights_dir)
    res = {"protocol": _protocol(ns, root), "methods": {}}
    if ns.train:
        res["train_seconds"] = _train(ns, root, wdir)
    seasons = {s: load_nordland(root, s, "test")[0] for s in ("summer", "winter")}
    res["protocol"]["n_places"] = int(len(seasons["summer"]))
    vt = load_vprtempo(ns.vprtempo_json, ns.seq_len, len(seasons["summer"]))  # fail before work
    cross = None if ns.no_crossdomain else _crossdomain(ns)
    res["methods"], curves, weights = _evaluate_all(ns, wdir, root, seasons, cross)
    res["methods"]["vprtempo"], c = vt
    if c is not None:
        curves["vprtempo"] = c
    res["targets"] = _targets(res["methods"])
    if cross:
        from vl2spike_ros.bench.generalisation import report
        packaged = "default" if "default" in res["methods"] else "vl2spike"
        res["generalisation"] = report(res["methods"], packaged, weights)
    print(_write_results(ns, res, curves))
    return 0
