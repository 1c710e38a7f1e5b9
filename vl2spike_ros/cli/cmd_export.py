"""``vl2spike export nir|report``: the place model's spiking stem for neuromorphic tools.

``export nir WEIGHTS --out FILE.nir`` writes the spiking layers behind the descriptor as a NIR
graph (norse, snntorch, sinabs, rockpool, lava-dl read it), post-processing in its metadata;
``export report WEIGHTS`` prints neuron/synapse counts, int8 memory, Speck/Xylo fit and the
measured recall cost of int8 weights and leak-free IAF neurons.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from vl2spike_ros.export.names import MAXPOOL_POLICIES, VARIANTS

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add ``vl2spike export`` with ``nir`` and ``report``."""
    parser = subparsers.add_parser("export", help="export the spiking place model (NIR) and "
                                   "report its neuromorphic hardware fit")
    sub = parser.add_subparsers(dest="export_command", metavar="WHAT")
    sub.required = True
    for name, helptext in (("nir", "write the spiking stem as a NIR graph (.nir, HDF5)"),
                           ("report", "neurons, synapses, int8 memory, chip fit, int8/IAF "
                                      "recall cost")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("weights", nargs="?", default=None,
                       help="place model weights (.safetensors; default: packaged)")
        p.add_argument("--maxpool", choices=MAXPOOL_POLICIES, default=MAXPOOL_POLICIES[0],
                       help="max-pool on the membrane input (no NIR equivalent): move it after "
                            "the neuron as a spike OR (default) or refuse with an error")
        p.add_argument("--variant", choices=VARIANTS, default=VARIANTS[0],
                       help="float (default), int8 weights, IAF neurons, or both")
    nir_p, rep_p = sub.choices["nir"], sub.choices["report"]
    nir_p.add_argument("--out", required=True, metavar="FILE.nir", help="output NIR file")
    nir_p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    nir_p.set_defaults(func=_nir)
    rep_p.add_argument("--json", default=None, metavar="PATH", help="also write the report here")
    rep_p.add_argument("--no-measure", action="store_true",
                       help="counts and chip fit only (no recall measurement, no data needed)")
    rep_p.add_argument("--frames", type=int, default=0,
                       help="held-out Nordland frames per season to measure on (default: all)")
    rep_p.add_argument("--data-root", default=None, help="folder holding nordland/")
    rep_p.set_defaults(func=_report)


def _stem(ns):
    from vl2spike_ros.export.spec import extract_stem
    from vl2spike_ros.export.variants import make_variant
    from vl2spike_ros.vpr.place import load_place_descriptor

    place = load_place_descriptor(ns.weights)
    stem = make_variant(extract_stem(place, ns.maxpool), ns.variant)
    for note in stem.approximations:
        log.warning("export changes the model: %s", note)
    return place, stem


def _nir(ns) -> int:
    from vl2spike_ros.export.nir_io import DT_S, to_nir, write_nir

    out = Path(ns.out)
    if out.suffix != ".nir":
        raise ValueError(f"--out {out}: expected a .nir file name")
    if out.exists() and not ns.overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it")
    _, stem = _stem(ns)
    graph = to_nir(stem)
    write_nir(graph, out)
    shapes = " -> ".join(f"{layer.name} {'x'.join(map(str, s))}"
                         for layer, s in zip(stem.layers, stem.shapes()))
    print(f"export nir: {out} ({out.stat().st_size / 2**20:.1f} MiB, NIR "
          f"{graph.metadata['format']}, T={stem.T} steps of {DT_S} s): input "
          f"{'x'.join(map(str, stem.input_shape))} -> {shapes}; post-processing (rates, L2, "
          f"whitening) in metadata; changes: {'; '.join(stem.approximations) or 'none'}")
    return 0


def _report(ns) -> int:
    from vl2spike_ros.bench.neuromorphic_run import measure_costs
    from vl2spike_ros.bench.neuromorphic_md import costs_table, hardware_table
    from vl2spike_ros.export.chips import hardware_report

    place, stem = _stem(ns)
    report = {"weights": ns.weights or "packaged default", "variant": ns.variant,
              "hardware": hardware_report(stem)}
    lines = hardware_table(report["hardware"])
    if not ns.no_measure:
        report["measured"] = measure_costs(place, stem, ns.data_root, ns.frames)
        lines += ["", f"Measured on {report['measured']['frames_per_season']} held-out Nordland "
                  "frames per season (R@1 at +-1 frame):", ""]
        lines += costs_table(report["measured"])
    print("\n".join(lines))
    if ns.json:
        from vl2spike_ros.atomic import write_bytes_atomic
        write_bytes_atomic(ns.json, (json.dumps(report, indent=2) + "\n").encode())
    return 0
