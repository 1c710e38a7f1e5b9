"""``vl2spike bench speed``: CPU latency/throughput of the student(s) vs the CLIP image tower.

Measured side by side in one process with ``torch.set_num_threads(threads)`` on the same input
frames (Nordland 32x64 grey for the VPR student; the teacher gets them upsampled to 224 RGB).
Each model runs in every mode (eager ``inference_mode``; channels-last; ``torch.compile`` for the
students unless ``--no-compile``); the fastest mode is the headline, all modes are reported.
Not a test: numbers depend on the machine and on whatever else runs on it (load is recorded).
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

DEFAULT_VARIANTS = ("spikformer_vpr",)
TARGET_FPS_B1 = 100.0
TARGET_SPEEDUP = 5.0


def register(subparsers) -> None:
    p = subparsers.add_parser("speed", help="batch-1 latency and batch-32 throughput: "
                                            "student vs CLIP ViT-B/32 on this CPU")
    p.add_argument("--json", type=Path, default=None, help="write results JSON here")
    p.add_argument("--plot", type=Path, default=None, help="PNG (default: next to --json)")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                   help="student variants (first one is the headline 'student')")
    p.add_argument("--weights", default=None, help="student weights for the first variant")
    p.add_argument("--clip-arch", default="ViT-B-32", help="open_clip image tower to compare")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--batch", type=int, default=32, help="batch size for throughput")
    p.add_argument("--seconds", type=float, default=4.0,
                   help="time budget per (model, mode, batch size) measurement")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="skip the torch.compile mode of the students (compiling takes ~20-60 s "
                        "per model and batch size on 2 cores)")
    p.add_argument("--data-root", default=None,
                   help="folder holding nordland/ (default: $VL2SPIKE_DATA_ROOT or "
                        "../shared/data)")
    p.set_defaults(func=run)


def _time_calls(fn: Callable[[Any], Any], x, seconds: float, min_iters: int, max_iters: int,
                warmup: int) -> list[float]:
    """Wall-clock seconds of repeated ``fn(x)`` calls (after ``warmup`` untimed calls)."""
    import torch

    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        times: list[float] = []
        t_end = time.perf_counter() + seconds
        while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() < t_end):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return times


def _stats(times: list[float], batch: int) -> dict[str, float]:
    import numpy as np

    t = np.asarray(times) * 1e3
    return {"latency_ms_p50": float(np.median(t)), "latency_ms_p95": float(np.percentile(t, 95)),
            "latency_ms_min": float(t.min()), "iters": int(len(t)),
            "fps": float(batch * 1e3 / np.median(t))}


def _modes(model, compile_: bool) -> dict[str, Callable]:
    """Callables to time: eager, channels-last, optionally compiled (keys = mode names)."""
    import copy

    import torch

    fn = model.descriptor if hasattr(model, "descriptor") else model
    modes = {"eager": fn}
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cl_fn = cl.descriptor if hasattr(cl, "descriptor") else cl
    modes["channels_last"] = lambda x: cl_fn(x.contiguous(memory_format=torch.channels_last))
    if compile_:
        modes["compile"] = torch.compile(fn, dynamic=False)
    return modes


def measure_model(model, x1, xb, seconds: float, compile_: bool, heavy: bool) -> dict:
    """Batch-1 latency and batch-``len(xb)`` throughput of ``model`` in every mode."""
    out: dict[str, Any] = {"modes": {}}
    for name, fn in _modes(model, compile_).items():
        t0 = time.perf_counter()
        try:
            b1 = _time_calls(fn, x1, seconds, 5 if heavy else 20, 2000, 2 if heavy else 10)
            bb = _time_calls(fn, xb, seconds, 2 if heavy else 3, 200, 1)
        except Exception as exc:  # a mode that fails (e.g. compile) is reported, not fatal
            log.warning("mode %s failed: %s", name, exc)
            out["modes"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        s1, sb = _stats(b1, 1), _stats(bb, len(xb))
        out["modes"][name] = {"fps_batch1": s1["fps"], "latency_ms_p50": s1["latency_ms_p50"],
                              "latency_ms_p95": s1["latency_ms_p95"],
                              "iters_batch1": s1["iters"],
                              f"fps_batch{len(xb)}": sb["fps"], "iters_batchN": sb["iters"],
                              "wall_s": round(time.perf_counter() - t0, 1)}
    ok = {k: v for k, v in out["modes"].items() if "error" not in v}
    if not ok:
        raise RuntimeError("every mode failed: " + str(out["modes"]))
    best = max(ok, key=lambda k: ok[k]["fps_batch1"])
    best_b = max(ok, key=lambda k: ok[k][f"fps_batch{len(xb)}"])
    out.update({k: v for k, v in ok[best].items() if k != "wall_s"})
    out[f"fps_batch{len(xb)}"] = ok[best_b][f"fps_batch{len(xb)}"]
    out["mode"], out["mode_batchN"] = best, best_b
    return out


def _frames(data_root: str | None, n: int):
    """Real Nordland frames (uint8 [n,32,64]) if the data is there, else seeded noise."""
    import numpy as np

    from vl2spike_ros.data.datasets import load_nordland_spread
    from vl2spike_ros.paths import data_root as _root

    root = Path(data_root) if data_root else _root(required=False)
    if root is not None and (root / "nordland").is_dir():
        return load_nordland_spread(root / "nordland", n), "nordland"
    return np.random.default_rng(0).integers(0, 256, (n, 32, 64), dtype=np.uint8), "random"


def _busy_processes(n: int = 5) -> list[str]:
    """List the ``n`` most CPU-hungry other processes (``ps``): what shared the CPU."""
    import subprocess

    try:
        out = subprocess.run(["ps", "-eo", "pid=,pcpu=,args=", "--sort=-pcpu"],
                             capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.split(None, 1) for line in out.splitlines() if line.strip()]
    return [r[1][:120] for r in rows if len(r) == 2 and r[0] != str(os.getpid())][:n]


def _student(variant: str, weights: str | None):
    """Return (module to time, its backbone config, weights description, input normalisation).

    VPR weights are timed through what matching uses: their place descriptor (descriptor mode +
    whitening), with their input normalisation.
    """
    from vl2spike_ros import models
    from vl2spike_ros.vpr.place import load_place_descriptor

    if weights is None and variant == "spikformer_vpr" and models.default_vpr_weights().is_file():
        weights = str(models.default_vpr_weights())
    if weights is not None:
        m = models.load_model(weights)  # the file's own config (e.g. its descriptor size)
        if m.config.name != variant:
            raise ValueError(f"{weights} holds variant {m.config.name!r}, not {variant!r}")
        if "vpr" in models.read_model_meta(weights)["metadata"]:
            place = load_place_descriptor(weights)
            return (place, m.config, f"{weights} (place descriptor)",
                    place.settings.input_norm)
        return m, m.config, str(weights), "image"
    m = models.create_model(variant).eval()
    return m, m.config, "random (speed does not depend on weights)", "image"


def run_speed(variants: list[str], weights: str | None = None, clip_arch: str = "ViT-B-32",
              threads: int = 2, batch: int = 32, seconds: float = 4.0, compile_: bool = False,
              data_root: str | None = None) -> dict:
    """Measure students and the CLIP tower side by side; returns the result dict."""
    import torch
    from tqdm import tqdm

    from vl2spike_ros.bench.energy_report import ClipImageTower, student_input, teacher_input

    if not variants:
        raise ValueError("no student variants given")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    frames, source = _frames(data_root, batch)
    load_before = os.getloadavg()
    res: dict[str, Any] = {"students": {}, "threads": threads, "batch": batch,
                           "input": f"{source} frames 32x64 grey", "seconds_per_measure": seconds,
                           "load_avg_before": [round(v, 2) for v in load_before],
                           "busy_processes_before": _busy_processes()}
    jobs = [("student", v) for v in variants] + [("teacher", clip_arch)]
    for kind, name in tqdm(jobs, desc="bench speed", unit="model", disable=None):
        if kind == "student":
            model, cfg, wdesc, norm = _student(name, weights if name == variants[0] else None)
            x = student_input(frames, cfg, norm)
            heavy = cfg.img_size[0] * cfg.img_size[1] > 128 * 128
            r = measure_model(model, x[:1], x, seconds, compile_, heavy)
            r.update(weights=wdesc, img_size=list(cfg.img_size), T=cfg.T)
            res["students"][name] = r
        else:
            tower = ClipImageTower(name).eval()
            x = teacher_input(frames)
            # compiling ViT-B/32 takes minutes on 2 cores: the teacher runs eager/channels-last
            r = measure_model(tower, x[:1], x, seconds, False, heavy=True)
            r.update(name=f"open_clip {name} image tower (random weights; speed does not depend "
                          "on weight values)", input=f"32x64 upsampled to {tower.size} RGB")
            res["teacher"] = r
    res["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
    s, t = res["students"][variants[0]], res["teacher"]
    key = f"fps_batch{batch}"
    res["student"] = {"variant": variants[0], **s}
    res["speedup"] = s["fps_batch1"] / t["fps_batch1"]
    res["speedup_batchN"] = s[key] / t[key]
    res["targets"] = {"student_fps_batch1": TARGET_FPS_B1, "speedup": TARGET_SPEEDUP,
                      "met_fps": s["fps_batch1"] >= TARGET_FPS_B1,
                      "met_speedup": res["speedup"] >= TARGET_SPEEDUP}
    res["env"] = {"torch": torch.__version__, "python": platform.python_version(),
                  "cpu_count": os.cpu_count(), "machine": platform.machine()}
    return res


def format_table(res: dict) -> str:
    key = f"fps_batch{res['batch']}"
    rows = [("model", "mode", "b1 p50 ms", "b1 p95 ms", "b1 fps", f"b{res['batch']} fps")]
    teacher = "teacher " + res["teacher"]["name"].split(" (")[0]
    named = [(n, r) for n, r in res["students"].items()] + [(teacher, res["teacher"])]
    for n, r in named:
        for mode, m in r["modes"].items():
            if "error" in m:
                rows.append((n, mode, "error", "", "", ""))
                continue
            star = "*" if mode == r["mode"] else ""
            rows.append((n, mode + star, f"{m['latency_ms_p50']:.2f}",
                         f"{m['latency_ms_p95']:.2f}", f"{m['fps_batch1']:.1f}",
                         f"{m[key]:.1f}"))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(x) for c, x in zip(r, w)) for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    lines.append(f"speedup student/teacher: batch-1 {res['speedup']:.1f}x, batch-{res['batch']} "
                 f"{res['speedup_batchN']:.1f}x  (* = fastest batch-1 mode; "
                 f"{res['threads']} threads; load avg before {res['load_avg_before']}, after "
                 f"{res['load_avg_after']})")
    return "\n".join(lines)


def plot_speed(res: dict, path) -> None:
    """Plot grouped bars: batch-1 fps and batch-N fps per model (best mode), log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vl2spike_ros.atomic import atomic_path

    key = f"fps_batch{res['batch']}"
    names = list(res["students"]) + ["CLIP " + res["teacher"]["name"].split()[1]]
    recs = list(res["students"].values()) + [res["teacher"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(names))
    ax.bar([i - 0.2 for i in xs], [r["fps_batch1"] for r in recs], 0.4, label="batch 1")
    ax.bar([i + 0.2 for i in xs], [r[key] for r in recs], 0.4, label=f"batch {res['batch']}")
    ax.set_xticks(list(xs), names)
    ax.set_yscale("log")
    ax.set_ylabel("images / s (CPU)")
    ax.set_title(f"speed on {res['threads']} CPU threads: student {res['speedup']:.1f}x teacher "
                 "(batch 1)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run(ns: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vl2spike_ros.atomic import write_json_atomic

    res = run_speed(ns.variants, weights=ns.weights, clip_arch=ns.clip_arch, threads=ns.threads,
                    batch=ns.batch, seconds=ns.seconds, compile_=ns.compile,
                    data_root=ns.data_root)
    plot = ns.plot or (ns.json.with_name(ns.json.stem + ".png") if ns.json else None)
    if plot is not None:
        plot_speed(res, plot)
        res["plot"] = str(plot)
    print(format_table(res))
    if ns.json is not None:
        write_json_atomic(ns.json, res)
        print(f"wrote {ns.json}" + (f" and {plot}" if plot else ""))
    return 0
