"""``vl2spike energy`` / ``vl2spike bench energy``: the command (light imports).

The report itself (models, teachers, counting) is :mod:`vl2spike_ros.bench.energy_report`,
imported only when the command runs, so ``vl2spike --help`` stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers, name: str = "energy"):
    """Add the energy report's parser as ``name``; returns it."""
    p = subparsers.add_parser(
        name, help="energy per image of the spiking student vs the CLIP teacher (45 nm)",
        description="Measure per-layer firing rates, SOPs and first-layer MACs of a student on "
                    "real images and compare its energy with CLIP ViT-B/32 (dense MACs) at the "
                    "same input.")
    p.add_argument("--variant", default=None,
                   help="student variant (default: spikformer_vpr, or the one in --weights)")
    p.add_argument("--weights", default=None,
                   help="trained student .safetensors (default: packaged VPR weights if present, "
                        "else random weights with BatchNorm calibrated on real images)")
    p.add_argument("--data-root", default=None, help="folder with nordland/ and cifar10.tar")
    p.add_argument("--num-images", type=int, default=32, help="images to measure on")
    p.add_argument("--clip-arch", default="ViT-B-32", help="open_clip teacher architecture")
    p.add_argument("--no-proxy", action="store_true", help="skip the proxy teacher")
    p.add_argument("--json", type=Path, default=None, help="write all numbers to this JSON")
    p.add_argument("--plot", type=Path, default=None,
                   help="per-layer firing-rate PNG (default: next to --json)")
    p.set_defaults(func=run)
    return p


def register(subparsers) -> None:
    """``vl2spike bench energy`` (same as ``vl2spike energy``)."""
    add_parser(subparsers)


def run(ns: argparse.Namespace) -> int:
    """Measure, print the table, write JSON and plot."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.bench.energy_report import energy_report, format_table, plot_firing_rates

    torch.manual_seed(0)
    report = energy_report(variant=ns.variant, weights=ns.weights, data_root=ns.data_root,
                           num_images=ns.num_images, clip_arch=ns.clip_arch,
                           proxy=not ns.no_proxy)
    plot = ns.plot
    if plot is None and ns.json is not None:
        plot = ns.json.with_name(ns.json.stem + "_firing_rates.png")
    if plot is not None:
        plot_firing_rates(report, plot)
        report["plot"] = str(plot)
    print(format_table(report))
    if ns.json is not None:
        write_json_atomic(ns.json, report)
        print(f"wrote {ns.json}" + (f" and {plot}" if plot else ""))
    elif plot is not None:
        print(f"wrote {plot}")
    return 0
