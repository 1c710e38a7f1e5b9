"""``vl2spike distill``: distil a VLM teacher into a Spikformer student (VL2Spike: SVS + SPL)."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("distill",
                              help="train a Spikformer student by VL2Spike distillation")
    p.add_argument("--config", required=True, help="YAML config (see config/distill/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.epochs=2 (repeatable)")
    p.add_argument("--out", required=True,
                   help="output folder (model.safetensors, checkpoints, logs)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.set_defaults(func=_run)


def _run(ns) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vl2spike_ros.train.config import load_config, parse_overrides
    from vl2spike_ros.train.trainer import run_distill

    cfg = load_config(ns.config, parse_overrides(ns.overrides))
    res = run_distill(cfg, ns.out, resume=ns.resume)
    if res.metrics:
        print(json.dumps(res.metrics))
    return 0
