"""``vl2spike bench distill``: CE vs classic KD vs SVS vs SPL vs full VL2Spike at one budget.

Runs every arm for every seed (``parallel`` runs at a time, each in its own process), then
writes the JSON, a markdown table and a PNG plot. Teacher features are computed once up front.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("distill",
                              help="distillation arms on CIFAR-10 (JSON + table + plot)")
    p.add_argument("--config", default="config/distill/bench_cifar10.yaml",
                   help="distillation config shared by every arm")
    p.add_argument("--json", default="bench/results/distill_cifar10.json",
                   help="results JSON (plots and .md next to it)")
    p.add_argument("--work-dir", default=None,
                   help="run folders + teacher cache (default: $TMPDIR/vl2spike_bench_distill)")
    p.add_argument("--arms", default=None, help="comma-separated subset of arms")
    p.add_argument("--parallel", type=int, default=None, help="override runs at a time")
    p.set_defaults(func=_run)


def _run(ns) -> int:
    import tempfile

    work = Path(ns.work_dir or Path(tempfile.gettempdir()) / "vl2spike_bench_distill")
    arms = ns.arms.split(",") if ns.arms else None
    run_benchmark(ns.config, ns.json, work, arms=arms, parallel=ns.parallel)
    return 0


def _load_bench(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark config not found: {path}")
    spec = yaml.safe_load(path.read_text())
    for key in ("seeds", "arms", "base"):
        if key not in spec:
            raise ValueError(f"{path}: missing '{key}'")
    return spec


def _one_run(base: dict, overrides: dict, out: str) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    from vl2spike_ros.train.config import config_from_dict
    from vl2spike_ros.train.trainer import run_distill

    cfg = config_from_dict(base, overrides)
    t0 = time.time()
    metrics = run_distill(cfg, out).metrics
    metrics["run_wall_s"] = round(time.time() - t0, 1)
    return metrics


def _teacher_side(base: dict, cache_dir: Path) -> dict[str, Any]:
    """Teacher zero-shot top-1 on the bench test subset + its energy; fills the feature cache."""
    import torch

    from vl2spike_ros.train.config import config_from_dict
    from vl2spike_ros.train.distill_data import build_data
    from vl2spike_ros.train.features import cached_features
    from vl2spike_ros.train.teachers import build_teacher
    from vl2spike_ros.energy import teacher_energy

    cfg = config_from_dict(base)
    data = build_data(cfg.data, 0)
    tc = cfg.teacher
    teacher = build_teacher(tc.kind, tc.name, tc.pretrained, tc.path)
    for seed in {0, 1}:  # the train subset depends on the seed
        cached_features(teacher, build_data(cfg.data, seed).train, cache_dir)
    text = teacher.class_embeddings(data.classes, tc.templates)
    feats = cached_features(teacher, data.test, cache_dir)
    labels = torch.from_numpy(data.test.labels)
    top1 = float(((feats @ text.T).argmax(-1) == labels).float().mean())
    x = torch.from_numpy(data.test.images[:16]).permute(0, 3, 1, 2).float() / 255
    e = teacher_energy(teacher.encode_image, x)
    return {"teacher_id": teacher.teacher_id, "top1": top1, "energy_mj": e["energy_mj"],
            "macs": e["macs"], "test_images": len(data.test)}


def run_benchmark(config: str | Path, json_out: str | Path, work: Path,
                  arms: list[str] | None = None, parallel: int | None = None) -> dict:
    """Run all arms x seeds; write ``json_out`` + ``.md`` + ``.png``; return the result dict."""
    from vl2spike_ros.atomic import write_json_atomic

    spec = _load_bench(config)
    base = dict(spec["base"])
    base["teacher"] = {**base.get("teacher", {}), "cache_dir": str(work / "teacher_cache")}
    arm_specs = {k: (v or {}) for k, v in spec["arms"].items() if not arms or k in arms}
    if not arm_specs:
        raise ValueError(f"no arms selected from {list(spec['arms'])}")
    import torch

    torch.set_num_threads(int(base.get("threads", 0) or torch.get_num_threads()))
    t0 = time.time()
    teacher = _teacher_side(base, work / "teacher_cache")
    log.info("teacher: %s", teacher)
    jobs = [(a, s) for s in spec["seeds"] for a in arm_specs]
    n_par = parallel or int(spec.get("parallel", 1))
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=n_par, mp_context=mp.get_context("spawn")) as pool:
        futs = {(a, s): pool.submit(_one_run, base, {**arm_specs[a], "seed": s},
                                    str(work / f"{a}_seed{s}")) for a, s in jobs}
        runs = {k: f.result() for k, f in futs.items()}
    result = _summarise(spec, base, arm_specs, runs, teacher, time.time() - t0, n_par)
    write_json_atomic(json_out, result)
    _write_table(result, Path(json_out).with_suffix(".md"))
    _plot(result, Path(json_out).with_suffix(".png"))
    for suffix in (".json", ".md", ".png"):  # atomic temp files are created 0600
        Path(json_out).with_suffix(suffix).chmod(0o644)
    print(Path(json_out).with_suffix(".md").read_text())
    return result


def _summarise(spec, base, arm_specs, runs, teacher, wall_s, n_par) -> dict:
    arms = {}
    for a in arm_specs:
        rs = [runs[(a, s)] for s in spec["seeds"]]
        top = [r["test_top1"] for r in rs]
        arms[a] = {
            "top1_mean": statistics.fmean(top),
            "top1_std": statistics.stdev(top) if len(top) > 1 else 0.0,
            "top1_runs": top, "firing_rate": statistics.fmean(r["firing_rate"] for r in rs),
            "energy_mj": statistics.fmean(r.get("energy_mj", float("nan")) for r in rs),
            "overrides": arm_specs[a], "run_wall_s": [r["run_wall_s"] for r in rs],
        }
    o, d = base.get("optim", {}), base.get("data", {})
    budget = {"train_images": d.get("train_limit"), "epochs": o.get("epochs"),
              "batch_size": o.get("batch_size"), "test_images": teacher["test_images"],
              "model": base.get("model"), "model_overrides": base.get("model_overrides", {}),
              "seeds": spec["seeds"], "parallel_runs": n_par,
              "torch_threads_per_run": base.get("threads"),
              "steps_per_run": runs[next(iter(runs))]["steps"]}
    return {"arms": arms, "teacher": teacher, "budget": budget,
            "wall_clock_s": round(wall_s, 1), "wall_clock_min": round(wall_s / 60, 1)}


def _write_table(res: dict, path: Path) -> None:
    from vl2spike_ros.atomic import write_bytes_atomic

    t, b = res["teacher"], res["budget"]
    lines = ["| arm | top-1 mean (%) | top-1 std | firing rate | energy (mJ/img) |",
             "|---|---|---|---|---|"]
    for a, r in res["arms"].items():
        lines.append(f"| {a} | {100 * r['top1_mean']:.2f} | {100 * r['top1_std']:.2f} | "
                     f"{r['firing_rate']:.4f} | {r['energy_mj']:.5f} |")
    lines.append(f"| teacher ({t['teacher_id']}, zero-shot) | {100 * t['top1']:.2f} | - | - | "
                 f"{t['energy_mj']:.5f} |")
    lines += ["", f"Budget: {b['train_images']} train images, {b['epochs']} epochs, batch "
              f"{b['batch_size']}, {b['steps_per_run']} steps/run, student {b['model']} "
              f"{b['model_overrides']}, seeds {b['seeds']}; "
              f"test subset {b['test_images']} images. "
              f"Wall clock: {res['wall_clock_min']} min."]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def _plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vl2spike_ros.atomic import atomic_path

    names = list(res["arms"])
    mean = [100 * res["arms"][a]["top1_mean"] for a in names]
    std = [100 * res["arms"][a]["top1_std"] for a in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.bar(names, mean, yerr=std, capsize=4, color="tab:blue")
    ax1.axhline(100 * res["teacher"]["top1"], color="tab:red", ls="--",
                label="teacher (zero-shot)")
    ax1.set_ylabel("CIFAR-10 top-1 (%)")
    ax1.set_title("Distillation arms (mean ± std over seeds)")
    ax1.legend()
    for a in names:
        ax2.errorbar(1e3 * res["arms"][a]["energy_mj"], 100 * res["arms"][a]["top1_mean"],
                     yerr=100 * res["arms"][a]["top1_std"], fmt="o", capsize=3, label=a)
    ax2.set_xlabel("energy per image (µJ)")
    ax2.set_ylabel("top-1 (%)")
    ax2.set_title(f"teacher: {res['teacher']['energy_mj']:.4f} mJ/img")
    ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    log.info("plot -> %s", path)
