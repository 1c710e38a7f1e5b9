"""``vl2spike bench distill``: distillation arms x paired seeds on CIFAR-10 (JSON + table + plot).

A bench spec (``config/distill/bench_*.yaml``) holds ``base`` (a distill config shared by every
run), ``arms`` (dotted overrides per arm), ``seeds``, ``parallel`` and optionally:

- ``teacher_train``: options of ``vl2spike teacher train``; when ``base.teacher.path`` does not
  exist yet, the proxy teacher is trained there first, on the training images that no run of this
  spec trains or validates on (disjoint teacher).
- ``select``: groups chosen on the validation split before the main runs, in order; each group
  runs its ``candidates`` (dotted overrides) on one ``arm`` and ``seed`` and keeps the candidate
  with the best validation top-1 for the arms in ``applies_to`` (default: every arm).

Every run lives in ``<work>/runs/<key>``, ``key`` a hash of its resolved config: a finished run
(``metrics.json``) is read back, an interrupted one resumes from its last checkpoint, so a killed
benchmark restarts where it stopped and a selection run that equals a main run is not repeated.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"   # resolved config + labels, written when a run starts
METRICS = "metrics.json"         # written by the trainer when a run has finished


def register(subparsers) -> None:
    p = subparsers.add_parser("distill",
                              help="distillation arms on CIFAR-10 (JSON + table + plot)")
    p.add_argument("--config", default="config/distill/bench_cifar10_fair.yaml",
                   help="bench spec: base distill config, arms, seeds (config/distill/bench_*)")
    p.add_argument("--json", default="bench/results/distill_cifar10.json",
                   help="results JSON (plots and .md next to it)")
    p.add_argument("--work-dir", default=None,
                   help="run folders + teacher cache; keep it to resume "
                        "(default: $TMPDIR/vl2spike_bench_distill)")
    p.add_argument("--arms", default=None, help="comma-separated subset of arms")
    p.add_argument("--parallel", type=int, default=None, help="override runs at a time")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="dotted override of the base config (repeatable), e.g. device=cpu")
    p.set_defaults(func=_run)


def _run(ns) -> int:
    import tempfile

    from vl2spike_ros.train.config import parse_overrides

    work = Path(ns.work_dir or Path(tempfile.gettempdir()) / "vl2spike_bench_distill")
    arms = ns.arms.split(",") if ns.arms else None
    run_benchmark(ns.config, ns.json, work, arms=arms, parallel=ns.parallel,
                  overrides=parse_overrides(ns.set))
    return 0


def load_bench(path: str | Path) -> dict[str, Any]:
    """Read and check a bench spec (``seeds``, ``arms``, ``base``; optional ``select``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark config not found: {path}")
    spec = yaml.safe_load(path.read_text()) or {}
    for key in ("seeds", "arms", "base"):
        if key not in spec:
            raise ValueError(f"{path}: missing '{key}'")
    for i, grp in enumerate(spec.get("select") or []):
        for key in ("name", "arm", "candidates"):
            if key not in grp:
                raise ValueError(f"{path}: select[{i}] misses '{key}'")
        if grp["arm"] not in spec["arms"]:
            raise ValueError(f"{path}: select[{i}].arm {grp['arm']!r} is not an arm")
    if spec.get("select") and not spec["base"].get("eval_val", True):
        raise ValueError(f"{path}: select needs base.eval_val: true")
    return spec


def resolve(base: dict, overrides: dict) -> tuple[dict, str]:
    """Return the resolved config dict of ``base`` + dotted ``overrides`` and its run key."""
    from vl2spike_ros.train.config import config_from_dict, config_to_dict

    cfg = config_to_dict(config_from_dict(base, overrides))
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return cfg, hashlib.sha256(blob).hexdigest()[:12]


def _one_run(cfg_dict: dict, out: str, label: str) -> dict:
    """Train one run (or read its finished metrics, or resume it); returns its metrics."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.train.checkpoint import STATE_JSON
    from vl2spike_ros.train.config import config_from_dict
    from vl2spike_ros.train.trainer import run_distill

    out_p = Path(out)
    if (out_p / METRICS).is_file():
        metrics = json.loads((out_p / METRICS).read_text())
        if "run_wall_s" in metrics:
            return {**metrics, "run_dir": out, "cached": True}
    resume = (out_p / STATE_JSON).is_file()
    write_json_atomic(out_p / RUN_CONFIG, {"label": label, "config": cfg_dict})
    t0 = time.time()
    metrics = run_distill(config_from_dict(cfg_dict), out_p, resume=resume).metrics
    metrics["run_wall_s"] = round(time.time() - t0, 1)
    metrics["resumed"] = resume
    write_json_atomic(out_p / METRICS, metrics)
    return {**metrics, "run_dir": out}


class _Runner:
    """Submits runs to a process pool; identical resolved configs share one run folder."""

    def __init__(self, pool: ProcessPoolExecutor, work: Path):
        self.pool, self.work, self.futures = pool, work, {}

    def submit(self, base: dict, overrides: dict, label: str):
        cfg, key = resolve(base, overrides)
        if key not in self.futures:
            fut = self.pool.submit(_one_run, cfg, str(self.work / "runs" / key), label)
            fut.add_done_callback(lambda f: _log_done(f, label, key))
            self.futures[key] = fut
        return self.futures[key]


def _log_done(fut, label: str, key: str) -> None:
    if fut.exception() is not None:
        log.error("run %s (%s) failed: %s", label, key, fut.exception())
        return
    m = fut.result()
    log.info("run %s (%s) %s: test top-1 %.4f, val %s, %.0f s", label, key,
             "cached" if m.get("cached") else "done", m["test_top1"], m.get("val_top1"),
             m.get("run_wall_s", 0.0))


CHOSEN_ON = ("the validation split (data.val_fraction of the CIFAR-10 training images, carved off "
             "before the training subset; disjoint from it and from the test split); "
             "the test split chose nothing")


def _select(spec: dict, base: dict, runner: _Runner) -> tuple[dict[str, dict], list[dict]]:
    """Run the ``select`` groups in order; returns (arm -> chosen overrides, records)."""
    chosen: dict[str, dict] = {a: {} for a in spec["arms"]}
    records = []
    for grp in spec.get("select") or []:
        arm, seed = grp["arm"], int(grp.get("seed", spec["seeds"][0]))
        arm_ov = {**chosen[arm], **(spec["arms"][arm] or {})}
        futs = {c: runner.submit(base, {**arm_ov, **(ov or {}), "seed": seed},
                                 f"select {grp['name']}={c} {arm} seed{seed}")
                for c, ov in grp["candidates"].items()}
        val = {c: f.result()["val_top1"] for c, f in futs.items()}
        winner = max(val, key=lambda c: val[c])  # first listed wins a tie
        for a in grp.get("applies_to") or list(spec["arms"]):
            chosen[a].update(grp["candidates"][winner] or {})
        records.append({"name": grp["name"], "arm": arm, "seed": seed, "val_top1": val,
                        "chosen_on": CHOSEN_ON,
                        "winner": winner, "overrides": grp["candidates"][winner],
                        "applies_to": grp.get("applies_to") or list(spec["arms"])})
        log.info("select %s: %s -> %s", grp["name"], val, winner)
    return chosen, records


def _prepare_base(spec: dict, work: Path, overrides: dict | None) -> dict:
    from vl2spike_ros.train.config import apply_overrides

    base = apply_overrides(spec["base"], overrides)
    base.setdefault("teacher", {})["cache_dir"] = str(work / "teacher_cache")
    return base


def run_benchmark(config: str | Path, json_out: str | Path, work: Path,
                  arms: list[str] | None = None, parallel: int | None = None,
                  overrides: dict | None = None) -> dict:
    """Run selection + all arms x seeds; write ``json_out`` + ``.md`` + ``.png``; return it."""
    import multiprocessing as mp

    import torch

    from vl2spike_ros.bench import distill_teacher, distill_report

    spec = load_bench(config)
    base = _prepare_base(spec, work, overrides)
    arm_specs = {k: (v or {}) for k, v in spec["arms"].items() if not arms or k in arms}
    if not arm_specs:
        raise ValueError(f"no arms selected from {list(spec['arms'])}")
    torch.set_num_threads(int(base.get("threads", 0) or torch.get_num_threads()))
    t0 = time.time()
    distill_teacher.ensure_teacher(spec, base, config)
    teacher = distill_teacher.teacher_side(base, work / "teacher_cache", spec["seeds"])
    log.info("teacher: %s", teacher)
    n_par = parallel or int(spec.get("parallel", 1))
    with ProcessPoolExecutor(max_workers=n_par, mp_context=mp.get_context("spawn")) as pool:
        runner = _Runner(pool, work)
        chosen, selection = _select(spec, base, runner)
        futs = {(a, s): runner.submit(base, {**chosen[a], **arm_specs[a], "seed": s},
                                      f"{a} seed{s}")
                for s in spec["seeds"] for a in arm_specs}  # seed by seed: whole seeds first
        runs = {k: f.result() for k, f in futs.items()}
    result = distill_report.summarise(spec, base, arm_specs, runs, teacher,
                                      {"wall_s": time.time() - t0, "parallel": n_par,
                                       "selection": selection, "chosen": chosen})
    write_outputs(result, Path(json_out))
    return result


def write_outputs(result: dict, json_out: Path) -> None:
    """Write the JSON, the markdown table (``.md``) and the plot (``.png``) next to each other."""
    from vl2spike_ros.atomic import write_bytes_atomic, write_json_atomic
    from vl2spike_ros.bench import distill_report

    write_json_atomic(json_out, result)
    md = "\n".join(distill_report.table_lines(result)) + "\n"
    write_bytes_atomic(json_out.with_suffix(".md"), md.encode())
    distill_report.plot(result, json_out.with_suffix(".png"))
    for suffix in (".json", ".md", ".png"):  # atomic temp files are created 0600
        json_out.with_suffix(suffix).chmod(0o644)
    print(md)
