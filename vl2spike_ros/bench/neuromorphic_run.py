"""Implementation of ``vl2spike bench neuromorphic``: the spiking stem outside spikingjelly.

Exports the packaged weights' spiking stem to NIR, reads the file back and runs it in norse and
snntorch on the Nordland held-out frames (both seasons), then compares with spikingjelly:

* equivalence -- the same exported network in spikingjelly vs each simulator: per-frame cosine
  of the final descriptors (target >= 0.99 on every frame), output spikes, per-layer firing
  rates, Recall@1 (target: within 0.5 points in both directions);
* model changes, each against the network before it: the exported network (max-pool on the
  membrane moved after the neuron as a spike OR) vs the packaged model, int8 weights, IAF
  neurons without leak, and both (what a Speck core runs), measured as held-out recall;
* the hardware report (neurons, synapses, int8 memory, Speck / Xylo fit).

The command (:mod:`vl2spike_ros.bench.neuromorphic`) writes the JSON and markdown; about
1.5-2.5 minutes on one thread for all 2 x 1,430 frames.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vl2spike_ros.data.datasets import load_nordland
from vl2spike_ros.export.chips import hardware_report
from vl2spike_ros.export.nir_io import (DT_S, SIMULATORS, read_nir, stem_from_nir, to_nir,
                                        write_nir)
from vl2spike_ros.export.reference import ReferenceStem, descriptor_from_spikes
from vl2spike_ros.export.spec import SpikingStem, extract_stem
from vl2spike_ros.export.variants import make_variant
from vl2spike_ros.paths import nordland_root
from vl2spike_ros.vpr.evaluation import correct_by_frames, recall_at_n
from vl2spike_ros.vpr.place import PlaceDescriptor, load_place_descriptor

log = logging.getLogger(__name__)

COS_TARGET = 0.99
RECALL_TOLERANCE_POINTS = 0.5
DIRECTIONS = {"summer_to_winter": ("summer", "winter"), "winter_to_summer": ("winter", "summer")}
NS = (1, 5)
FRAME_TOLERANCE = 1
BATCH = 256
VARIANT_ROWS = (("int8", "int8 weights/biases (sinabs discretisation)"),
                ("iaf", "IAF neurons, no leak"),
                ("int8-iaf", "int8 + IAF (what a Speck core runs)"))


@dataclass
class Run:
    """One way of computing the place descriptor, run on every season.

    ``desc``: descriptors ``season -> [N, D]``; ``rates``: mean firing rate per neuron layer;
    ``spikes``: output spike counts ``season -> [N, C*H*W]`` (uint8).
    """

    label: str
    desc: dict[str, torch.Tensor] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0


def load_heldout(data_root: str | None, frames: int) -> dict[str, np.ndarray]:
    """Held-out Nordland frames per season (place i of both seasons = the same place)."""
    root = nordland_root(data_root)
    out = {s: load_nordland(root, s, "test")[0] for s in ("summer", "winter")}
    if frames > 0:
        if frames < 2 * FRAME_TOLERANCE + 2:
            raise ValueError(f"--frames must be at least {2 * FRAME_TOLERANCE + 2}")
        out = {s: v[:frames] for s, v in out.items()}
    return out


def recall(desc: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """R@1/R@5 (%) at +-1 frame in both directions from descriptors per season."""
    out = {}
    for name, (q, db) in DIRECTIONS.items():
        ids = torch.topk(desc[q] @ desc[db].T, max(NS), dim=1).indices.numpy()
        hits = correct_by_frames(ids, np.arange(len(ids)), FRAME_TOLERANCE)
        out[name] = {f"r{n}": v for n, v in recall_at_n(hits, NS).items()}
    return out


def _collect(run: Run, season: str, parts: list, rates: list[dict]) -> None:
    run.desc[season] = torch.cat([p[0] for p in parts])
    run.spikes[season] = torch.cat([p[1] for p in parts])
    for name in rates[0]:
        run.rates[name] = float(np.mean([r[name] for r in rates]))


def run_stem(label: str, simulate: Callable, stem: SpikingStem,
             x: dict[str, torch.Tensor]) -> Run:
    """Describe every season with ``simulate(x [B,C,H,W]) -> (spikes [T,B,...], rates)``."""
    run, t0 = Run(label), time.perf_counter()
    for season, xs in x.items():
        parts, rates = [], []
        for s in range(0, len(xs), BATCH):
            spikes, r = simulate(xs[s:s + BATCH])
            parts.append((descriptor_from_spikes(spikes, stem.whitening),
                          (spikes.float().sum(0).flatten(1)).to(torch.uint8)))
            rates.append(r)
        _collect(run, season, parts, rates)
    run.seconds = time.perf_counter() - t0
    return run


def reference_run(label: str, stem: SpikingStem, x: dict[str, torch.Tensor]) -> Run:
    """:func:`run_stem` in spikingjelly (:class:`ReferenceStem`)."""
    ref = ReferenceStem(stem)

    def simulate(xb: torch.Tensor):
        return ref(xb), dict(ref.last_rates)
    return run_stem(label, simulate, stem, x)


def packaged_run(place: PlaceDescriptor, x: dict[str, torch.Tensor]) -> Run:
    """Describe every season with the packaged place model itself (its ``forward``)."""
    run, t0 = Run("packaged model, spikingjelly (max-pool on the membrane)"), time.perf_counter()
    with torch.inference_mode():
        for season, xs in x.items():
            run.desc[season] = torch.cat([place(xs[s:s + BATCH])
                                          for s in range(0, len(xs), BATCH)])
    run.seconds = time.perf_counter() - t0
    return run


def compare(a: Run, b: Run) -> dict:
    """Per-frame cosine of ``b`` against ``a``, recall of both and its difference (points)."""
    cos = torch.cat([(a.desc[s] * b.desc[s]).sum(1) for s in a.desc]).numpy()
    ra, rb = recall(a.desc), recall(b.desc)
    out = {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
           "cos_p01": float(np.quantile(cos, 0.01)),
           "frames_below_target": int((cos < COS_TARGET).sum()), "frames": int(len(cos)),
           "recall_delta_points": {d: {k: rb[d][k] - ra[d][k] for k in ra[d]} for d in ra}}
    if a.spikes and b.spikes:
        diff = sum(int((a.spikes[s] != b.spikes[s]).sum()) for s in a.spikes)
        total = sum(a.spikes[s].numel() for s in a.spikes)
        out["output_count_mismatch_fraction"] = diff / total
        out["rate_abs_diff"] = {k: abs(a.rates[k] - b.rates.get(k, float("nan")))
                                for k in a.rates}
    return out


def equivalence_met(cmp: dict) -> bool:
    """Every frame at cosine >= 0.99 and R@1 within 0.5 points in both directions."""
    return cmp["frames_below_target"] == 0 and all(
        abs(v["r1"]) <= RECALL_TOLERANCE_POINTS for v in cmp["recall_delta_points"].values())


def measure_variants(stem: SpikingStem, x: dict[str, torch.Tensor],
                     exported: Run | None = None) -> tuple[dict[str, Run], dict]:
    """Run the exported network and its int8 / IAF variants in spikingjelly.

    Returns the runs and the cost of each variant against the exported float network.
    """
    runs = {"exported": exported or reference_run("exported network, spikingjelly", stem, x)}
    costs = {}
    for key, label in VARIANT_ROWS:
        runs[key] = reference_run(f"{label}, spikingjelly", make_variant(stem, key), x)
        costs[f"{key}_vs_exported"] = compare(runs["exported"], runs[key])
    return runs, costs


def measure_costs(place: PlaceDescriptor, stem: SpikingStem, data_root: str | None,
                  frames: int) -> dict:
    """Measure held-out recall of the packaged model, the export and its variants.

    Returns the recall of each and the cost of each change (what ``vl2spike export report``
    prints).
    """
    x = {s: place.preprocess(v) for s, v in load_heldout(data_root, frames).items()}
    runs, costs = measure_variants(stem, x)
    runs["packaged"] = packaged_run(place, x)
    costs["spike_or_vs_packaged"] = compare(runs["packaged"], runs["exported"])
    return {"frames_per_season": len(x["summer"]), "costs": costs,
            "recall": {k: recall(r.desc) for k, r in runs.items()}}


def _simulator_runs(stem: SpikingStem, path: Path, x: dict,
                    simulators: tuple[str, ...]) -> tuple[dict[str, Run], dict]:
    """Write ``stem`` to ``path``, read it back, run it in the named NIR simulators."""
    write_nir(to_nir(stem), path)
    graph = read_nir(path)
    back = stem_from_nir(graph)
    same = len(back.layers) == len(stem.layers) and all(
        torch.equal(getattr(a, "weight", torch.zeros(0)), getattr(b, "weight", torch.zeros(0)))
        and a.name == b.name for a, b in zip(stem.layers, back.layers))
    runs = {name: run_stem(f"exported network, {name} (NIR file)",
                           lambda xb, f=fn: f(graph, xb), back, x)
            for name, fn in SIMULATORS.items() if name in simulators}
    info = {"file_bytes": path.stat().st_size, "nodes": list(graph.nodes),
            "round_trip_layers_identical": bool(same)}
    return runs, info


def _versions() -> dict:
    from importlib.metadata import version
    return {p: version(p) for p in ("torch", "spikingjelly", "nir", "nirtorch", "norse",
                                    "snntorch")}


def run_benchmark(weights: str | None, data_root: str | None, frames: int) -> dict:
    """Everything the JSON holds (see the module docstring)."""
    t0 = time.perf_counter()
    place = load_place_descriptor(weights)
    x = {s: place.preprocess(v) for s, v in load_heldout(data_root, frames).items()}
    stem = extract_stem(place)
    iaf8 = make_variant(stem, "int8-iaf")
    variant_runs, costs = measure_variants(stem, x)
    runs = {"packaged": packaged_run(place, x), **variant_runs}
    with tempfile.TemporaryDirectory() as td:
        sims, nir_info = _simulator_runs(stem, Path(td) / "stem.nir", x, tuple(SIMULATORS))
        # snntorch 1.0.0 imports nir.IF as a leaky neuron (beta 0.9): norse only for IAF
        sims8, _ = _simulator_runs(iaf8, Path(td) / "stem_int8_iaf.nir", x, ("norse",))
    runs.update(sims)
    runs["int8-iaf_norse"] = sims8["norse"]
    runs["int8-iaf_norse"].label = "int8 + IAF, norse (NIR file)"
    costs["spike_or_vs_packaged"] = compare(runs["packaged"], runs["exported"])
    equiv = {name: compare(runs["exported"], runs[name]) for name in SIMULATORS}
    equiv["int8-iaf_norse"] = compare(runs["int8-iaf"], runs["int8-iaf_norse"])
    for v in equiv.values():
        v["met"] = equivalence_met(v)
    return {
        "weights": weights or "packaged default", "weights_sha256_16": place.weights_hash,
        "frames_per_season": len(x["summer"]), "split": "Nordland held-out (last 40 % of places)",
        "recall": f"R@N % at +-{FRAME_TOLERANCE} frame, single frame",
        "time_steps": stem.T, "dt_s": DT_S, "approximations": list(stem.approximations),
        "nir": nir_info,
        "methods": {k: {"label": r.label, "recall": recall(r.desc), "rates": r.rates,
                        "seconds": r.seconds} for k, r in runs.items()},
        "equivalence": equiv, "costs": costs, "hardware": hardware_report(stem),
        "targets": {"cos_per_frame": COS_TARGET, "recall_within_points": RECALL_TOLERANCE_POINTS,
                    "met": all(v["met"] for v in equiv.values())},
        "conditions": {"threads": torch.get_num_threads(), "versions": _versions(),
                       "seconds": time.perf_counter() - t0}}
