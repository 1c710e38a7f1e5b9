"""``vl2spike bench speed``: CPU latency/throughput of the student(s) vs the CLIP image tower.

Measured side by side in one process with ``torch.set_num_threads(threads)`` on the same input
frames (Nordland 32x64 grey for the VPR student; the teacher gets them upsampled to 224 RGB).
Each model runs in every mode (eager ``inference_mode``; channels-last; optionally
``torch.compile``); the fastest batch-1 mode is the headline, all modes are reported.
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
    p.add_argument("--clip-arch", default="ViT-B-32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32, help="batch size for throughput")
    p.add_argument("--seconds", type=float, default=4.0,
                   help="time budget per (model, mode, batch size) measurement")
    p.add_argument("--compile", action="store_true",
                   help="also try torch.compile (slow to compile: ~1-2 min per model on 2 cores)")
    p.add_argument("--data-root", default=None)
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
            fn(x1) if name != "compile" else None
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

    from vl2spike_ros.energy import load_nordland_frames
    from vl2spike_ros.paths import data_root as _root

    root = Path(data_root) if data_root else _root(required=False)
    if root is not None and (root / "nordland").is_dir():
        return load_nordland_frames(root / "nordland", n), "nordland"
    return np.random.default_rng(0).integers(0, 256, (n, 32, 64), dtype=np.uint8), "random"
