"""``vl2spike bench neuromorphic``: the place model's spiking stem outside spikingjelly.

Exports the packaged weights' spiking stem to NIR, runs the file in norse and snntorch on the
Nordland held-out frames and compares with spikingjelly (equivalence), measures the recall cost
of each model change (spike-OR max-pool, int8, IAF) and reports the chip fit. The work is in
:mod:`vl2spike_ros.bench.neuromorphic_run` (imported when the command runs, so that
``vl2spike --help`` does not load torch, spikingjelly and the NIR stack). Writes
``bench/results/neuromorphic.json``, ``.md`` and ``.png`` (``--plot-only`` redraws the PNG).
"""
from __future__ import annotations

from pathlib import Path

from vl2spike_ros.bench.results_plot import plot_neuromorphic, png_path, replot

RESULTS_JSON = "bench/results/neuromorphic.json"


def register(subparsers) -> None:
    """Add ``vl2spike bench neuromorphic``."""
    p = subparsers.add_parser("neuromorphic", help="NIR export checked in norse/snntorch; "
                              "int8/IAF recall cost; chip fit")
    p.add_argument("--weights", default=None, help="place model weights (default: packaged)")
    p.add_argument("--data-root", default=None, help="folder holding nordland/ (default: paths)")
    p.add_argument("--frames", type=int, default=0,
                   help="held-out frames per season (first N places; default 0 = all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=RESULTS_JSON, metavar="PATH", help="results JSON")
    p.add_argument("--md", default=None, metavar="PATH", help="default: JSON path with .md")
    p.add_argument("--plot-only", action="store_true",
                   help="only redraw the PNG (JSON path with .png) from the existing --json "
                        "(measures nothing)")
    p.set_defaults(func=_handler)


def _handler(ns) -> int:
    if ns.plot_only:
        print(replot("neuromorphic", ns.json))
        return 0
    import torch

    from vl2spike_ros.atomic import write_bytes_atomic, write_json_atomic

    from .neuromorphic_md import format_markdown
    from .neuromorphic_run import run_benchmark

    torch.set_num_threads(max(1, ns.threads))
    res = run_benchmark(ns.weights, ns.data_root, ns.frames)
    md = Path(ns.md) if ns.md else Path(ns.json).with_suffix(".md")
    write_json_atomic(ns.json, res)
    write_bytes_atomic(md, format_markdown(res).encode())
    plot_neuromorphic(res, png_path(ns.json))
    parts = [f"{k}: cos_min={v['cos_min']:.4f} max|dR@1|="
             f"{max(abs(d['r1']) for d in v['recall_delta_points'].values()):.2f}"
             for k, v in res["equivalence"].items()]
    print(f"neuromorphic: {'; '.join(parts)}; met={res['targets']['met']} -> {ns.json}, {md}, "
          f"{png_path(ns.json)}")
    return 0
