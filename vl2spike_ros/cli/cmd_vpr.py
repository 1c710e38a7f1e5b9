"""``vl2spike vpr train``: train VPR models.

``--config RECIPE.yaml [--set k=v] [--data PATH ...] --out DIR [--resume]`` trains one place model
on any route (your own bags or image folders, Nordland) from a recipe (``config/vpr/``), with or
without place labels, from any teacher. The positional form trains the Nordland models:
ANN teacher, Spikformer direct, Spikformer distilled (warm-started from the direct student,
then InfoNCE + SVS terms from the teacher) and the equal-budget control (the direct student
continued for the same epochs without a teacher). ``all`` then copies whichever of distilled /
control scores better on the validation places to the packaged default weights. Resumes from
checkpoints.
"""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("vpr", help="train VPR models on Nordland (first 60 %% of places)")
    sub = p.add_subparsers(dest="vpr_cmd", metavar="ACTION")
    sub.required = True
    t = sub.add_parser("train", help="train from a recipe (--config), or the Nordland models: "
                                     "teacher / direct / control / distilled (default: all, "
                                     "then select the default)")
    t.add_argument("what", nargs="?", default=None,
                   choices=["all", "teacher", "direct", "distilled", "control", "select"],
                   help="Nordland factory step (default all; not with --config). `select` only "
                        "re-chooses the default from the trained control and distilled weights")
    t.add_argument("--config", default=None, metavar="RECIPE",
                   help="YAML recipe (config/vpr/): train one model into --out")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set optim.epochs=2 (repeatable)")
    t.add_argument("--data", action="append", default=[], metavar="PATH",
                   help="training traversal: image folder, ROS 2 bag or Nordland root "
                        "(repeatable; replaces data.paths of the recipe)")
    t.add_argument("--resume", action="store_true",
                   help="--config: continue from the checkpoint in --out")
    t.add_argument("--data-root", default=None, help="folder holding nordland/")
    t.add_argument("--weights-dir", default="bench/weights", help="teacher + direct weights")
    t.add_argument("--out", default=None,
                   help="--config: output folder (model.safetensors, ckpt/, train_log.csv, "
                        "tb/); else where `all` puts the selected default (default: packaged "
                        "default)")
    t.add_argument("--teacher", default=None, help="teacher weights (default: weights-dir)")
    t.add_argument("--ckpt-dir", default="bench/weights/ckpt",
                   help="per-epoch checkpoints (training resumes from here)")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    t.add_argument("--json", default=None, metavar="PATH", help="training summary JSON")
    t.add_argument("--seed", type=int, default=None,
                   help="control / distilled: train another training seed of that arm, written "
                        "next to it as <name>_seed<k>.safetensors (bench vpr pairs the seeds)")
    t.set_defaults(func=_train)
    w = sub.add_parser("whiten", help="fit a learned whitening for trained VPR weights on the "
                                      "Nordland training places and store it in the weights file")
    w.add_argument("weights", help="Spikformer or CNN VPR weights (.safetensors)")
    w.add_argument("--out", default=None, help="write here instead of updating WEIGHTS in place")
    w.add_argument("--descriptor", default=None, metavar="MODE",
                   help="switch the descriptor first: CNN 'map' | 'pooled'; Spikformer "
                        "'spatial' | 'pooled' | 'stem<n>' (spike rates after n stem stages)")
    w.add_argument("--dim", type=int, default=None, help="output dimension (default 256)")
    w.add_argument("--shrink", type=float, default=None, help="covariance shrinkage (default 0.3)")
    w.add_argument("--data-root", default=None, help="folder holding nordland/")
    w.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    w.add_argument("--json", default=None, metavar="PATH", help="write the report here")
    w.set_defaults(func=_whiten)


def _whiten(ns) -> int:
    import json

    import torch

    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.paths import nordland_root
    from vl2spike_ros.train.whiten import WHITEN_DIM, WHITEN_SHRINK, whiten_weights

    torch.set_num_threads(ns.threads)
    root = nordland_root(Path(ns.data_root) / "nordland" if ns.data_root else None)
    report = whiten_weights(ns.weights, root, ns.out, ns.descriptor,
                            dim=ns.dim or WHITEN_DIM, shrink=ns.shrink or WHITEN_SHRINK)
    print(json.dumps(report, indent=2))
    if ns.json:
        write_json_atomic(ns.json, report)
    return 0


def _train(ns) -> int:
    if ns.config is not None:
        return _train_recipe(ns)
    if ns.overrides or ns.data or ns.resume:
        raise ValueError("--set, --data and --resume go with --config RECIPE.yaml")
    import torch

    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.paths import nordland_root

    torch.set_num_threads(ns.threads)
    root = nordland_root(Path(ns.data_root) / "nordland" if ns.data_root else None)
    from vl2spike_ros.train.vpr_all import main_train

    out = main_train(root, Path(ns.weights_dir), ns.out, ns.teacher, ns.ckpt_dir,
                     ns.what or "all", ns.seed)
    for k, v in out.items():
        if k == "default":
            print(f"default weights: {v['chosen']} (validation R@1 {v['val_r1']})")
            continue
        last = v["history"][-1] if v["history"] else {}
        print(f"{k}: {v['train_seconds']:.0f} s, last epoch {last}")
    if ns.json:
        write_json_atomic(ns.json, out)
    return 0


def _train_recipe(ns) -> int:
    import dataclasses
    import json
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.models import default_vpr_weights
    from vl2spike_ros.train.config import parse_overrides
    from vl2spike_ros.train.route_run import run_recipe
    from vl2spike_ros.train.vpr_config import fill_paths, load_recipe

    if ns.what is not None:
        raise ValueError(f"give either --config or a Nordland step ({ns.what!r}), not both")
    if not ns.out:
        raise ValueError("--config needs --out DIR (the output folder)")
    recipe = load_recipe(ns.config, parse_overrides(ns.overrides))
    if ns.data:
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(
            recipe.data, paths=tuple(str(Path(p)) for p in ns.data)))
    wdir = Path(ns.weights_dir)
    teacher = ns.teacher or str(wdir / "vpr_teacher_cnn.safetensors")
    recipe = fill_paths(recipe, {"weights_dir": str(wdir), "teacher": teacher,
                                 "direct": str(wdir / "vpr_spikformer_direct.safetensors"),
                                 "default": str(default_vpr_weights())})
    if ns.threads and not recipe.threads:
        recipe = dataclasses.replace(recipe, threads=ns.threads)
    meta = run_recipe(recipe, ns.out, resume=ns.resume).meta
    if meta:
        last = (meta.get("history") or [{}])[-1]
        print(f"{meta['name']}: {meta['train_seconds']:.0f} s, {meta['data']['frames']} frames "
              f"({meta['data']['labels']}), last epoch {json.dumps(last)}")
        print(f"weights: {Path(ns.out) / 'model.safetensors'}")
        if ns.json:
            write_json_atomic(ns.json, {k: v for k, v in meta.items() if k != "recipe"})
    return 0
