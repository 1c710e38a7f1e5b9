"""NIR export and import of a :class:`~vl2spike_ros.export.spec.SpikingStem`, other simulators.

NIR is the Neuromorphic Intermediate Representation (``nir`` 1.0); the file is run back in
norse and snntorch through their NIR importers.

Time: spikingjelly counts discrete steps; NIR neurons are continuous-time ODEs. One step is
:data:`DT_S` seconds (1e-4 s: snntorch's NIR importer hard-codes that step, norse takes it as a
parameter). With forward Euler at that step the NIR equations reproduce spikingjelly's:

* ``lif`` -> ``nir.LIF(tau = tau_steps * dt, r = 1, v_leak = v_reset, v_threshold, v_reset)``:
  ``tau dv/dt = (v_leak - v) + r I`` gives ``v += (I - (v - v_reset)) / tau_steps`` per step,
  spikingjelly's ``decay_input=True`` charge; hard reset to ``v_reset``;
* ``if`` -> ``nir.IF(r = 1, v_threshold, v_reset)``; importers add the input once per step
  (``v += I``), as spikingjelly's ``IFNode``;
* ``threshold`` (the spike OR after a moved max-pool) -> ``nir.LIF`` with ``tau = dt``: the
  membrane equals the input every step (no memory), threshold 0.5 on integer spike counts;
* the image is the input current at every one of the ``T`` steps (direct encoding).

Threshold: NIR and norse fire on ``v > v_threshold``, spikingjelly on ``v >= v_threshold``;
they differ only when the membrane hits the threshold exactly (measure zero for real-valued
input; rounding of ``dt / tau`` can flip a neuron sitting at the threshold, which is what the
equivalence tolerance covers).

The non-spiking post-processing is in the graph's metadata (``postprocess`` text plus
``whitening_mean [D]`` and ``whitening_proj [D, K]`` arrays): rates over T, flatten (C, H, W),
L2 norm, ``(z - mean) @ proj``, L2 norm.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import nir
import numpy as np
import torch

from vl2spike_ros.atomic import atomic_path
from vl2spike_ros.vpr.whitening import Whitening

from .spec import IF, LIF, THRESHOLD, Conv, Neuron, SpikingStem

log = logging.getLogger(__name__)

__all__ = ["DT_S", "FORMAT", "to_nir", "stem_from_nir", "write_nir", "read_nir", "run_norse",
           "run_snntorch", "SIMULATORS"]

DT_S = 1e-4
FORMAT = "vl2spike_ros.nir_export/1"
INPUT, OUTPUT = "input", "output"
POSTPROCESS = ("rates = mean over the T steps of the output spikes; z = rates flattened in "
               "(C, H, W) order, divided by its L2 norm; y = (z - whitening_mean) @ "
               "whitening_proj; descriptor = y / ||y||_2 (no whitening arrays: descriptor = z)")
MAPPING = {
    "time": f"one spikingjelly step = dt = {DT_S} s; forward Euler at dt reproduces it",
    "lif": "spikingjelly LIFNode(decay_input=True, hard reset) -> nir.LIF(tau=tau_steps*dt, "
           "r=1, v_leak=v_reset, v_threshold, v_reset)",
    "if": "spikingjelly IFNode (hard reset) -> nir.IF(r=1, v_threshold, v_reset)",
    "threshold": "stateless spike OR -> nir.LIF(tau=dt, r=1): membrane = input each step, "
                 "threshold 0.5 on spike counts",
    "batchnorm": "BatchNorm2d (eval statistics) folded into the preceding Conv2d weight and bias",
    "decay_input": "LIFNode(decay_input=False) -> preceding conv scaled by tau",
    "reset": "hard reset to v_reset in the same step as the spike (no refractory period); "
             "detach_reset and surrogate functions only affect training: dropped",
    "threshold_compare": "spikingjelly fires on v >= v_threshold, NIR on v > v_threshold",
}


def _full(shape, value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _neuron_node(n: Neuron, shape: tuple[int, int, int], dt: float) -> nir.NIRNode:
    ones, reset, thr = _full(shape, 1.0), _full(shape, n.v_reset), _full(shape, n.v_threshold)
    if n.kind == IF:
        return nir.IF(r=ones, v_threshold=thr, v_reset=reset)
    tau = n.tau * dt if n.kind == LIF else dt
    return nir.LIF(tau=_full(shape, tau), r=ones, v_leak=reset, v_threshold=thr, v_reset=reset)


def _metadata(stem: SpikingStem, dt: float) -> dict:
    meta = {"format": FORMAT, "dt_s": float(dt), "time_steps": int(stem.T),
            "input": (f"{stem.source.get('input_norm', 'image')}-standardised frame "
                      f"{list(stem.input_shape)} (C, H, W), the input current at every step"),
            "postprocess": POSTPROCESS, "mapping": dict(MAPPING),
            "approximations": "\n".join(stem.approximations) or "none",
            "source": {k: str(v) for k, v in stem.source.items()}}
    if stem.whitening is not None:
        stored = stem.whitening.to_tensors()   # float16 projection when lossless enough
        meta["whitening_mean"] = stored["vpr_whitening.mean"].numpy()
        meta["whitening_proj"] = stored["vpr_whitening.proj"].numpy()
    return meta


def to_nir(stem: SpikingStem, dt: float = DT_S) -> nir.NIRGraph:
    """Build the NIR chain ``input -> layer ... -> output`` (node names = layer names)."""
    nodes = {INPUT: nir.Input(input_type=np.array(stem.input_shape))}
    edges, prev, shape = [], INPUT, stem.input_shape
    for layer, out_shape in zip(stem.layers, stem.shapes()):
        if isinstance(layer, Conv):
            nodes[layer.name] = nir.Conv2d(
                input_shape=tuple(shape[1:]), weight=layer.weight.numpy().astype(np.float32),
                stride=layer.stride, padding=layer.padding, dilation=(1, 1),
                groups=layer.groups, bias=layer.bias.numpy().astype(np.float32))
        else:
            nodes[layer.name] = _neuron_node(layer, out_shape, dt)
        edges.append((prev, layer.name))
        prev, shape = layer.name, out_shape
    nodes[OUTPUT] = nir.Output(output_type=np.array(shape))
    edges.append((prev, OUTPUT))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=_metadata(stem, dt))


def _chain(graph: nir.NIRGraph) -> list[str]:
    nxt = dict(graph.edges)
    if len(nxt) != len(graph.edges) or INPUT not in graph.nodes:
        raise ValueError("NIR graph is not a single chain starting at 'input'")
    order, name = [], nxt.get(INPUT)
    while name is not None and name != OUTPUT:
        if name in order:
            raise ValueError("NIR graph has a cycle")
        order.append(name)
        name = nxt.get(name)
    return order


def _layer_from_node(name: str, node: nir.NIRNode, dt: float) -> Conv | Neuron:
    def one(a) -> float:
        vals = np.unique(np.asarray(a, dtype=np.float64))
        if len(vals) != 1:
            raise ValueError(f"node {name}: per-neuron parameters differ; not a vl2spike export")
        return float(vals[0])

    if isinstance(node, nir.Conv2d):
        return Conv(name, torch.from_numpy(np.asarray(node.weight, np.float32)),
                    torch.from_numpy(np.asarray(node.bias, np.float32)),
                    tuple(int(s) for s in np.broadcast_to(node.stride, 2)),
                    tuple(int(p) for p in np.broadcast_to(node.padding, 2)), int(node.groups))
    if isinstance(node, nir.LIF):
        tau_steps = one(node.tau) / dt
        if abs(tau_steps - 1.0) < 1e-6:
            return Neuron(name, THRESHOLD, one(node.v_threshold))
        return Neuron(name, LIF, one(node.v_threshold), tau_steps, one(node.v_reset))
    if isinstance(node, nir.IF):
        return Neuron(name, IF, one(node.v_threshold), None, one(node.v_reset))
    raise ValueError(f"node {name}: {type(node).__name__} is not written by vl2spike export")


def stem_from_nir(graph: nir.NIRGraph) -> SpikingStem:
    """Read back the :class:`SpikingStem` that a graph written by :func:`to_nir` describes."""
    meta = graph.metadata or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"NIR graph metadata.format is {meta.get('format')!r}, expected "
                         f"{FORMAT!r} (not written by vl2spike export)")
    dt = float(meta["dt_s"])
    layers = tuple(_layer_from_node(n, graph.nodes[n], dt) for n in _chain(graph))
    whitening = None
    if "whitening_mean" in meta:
        whitening = Whitening(torch.from_numpy(np.asarray(meta["whitening_mean"], np.float32)),
                              torch.from_numpy(np.asarray(meta["whitening_proj"], np.float32)))
    approx = meta.get("approximations", "none")
    shape = tuple(int(s) for s in np.asarray(graph.nodes[INPUT].input_type["input"]))
    return SpikingStem(layers, shape, int(meta["time_steps"]), whitening,
                       () if approx == "none" else tuple(approx.split("\n")),
                       dict(meta.get("source", {})))


def write_nir(graph: nir.NIRGraph, path: str | Path) -> Path:
    """Write ``graph`` to ``path`` (HDF5, gzip) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)
    return path


def read_nir(path: str | Path) -> nir.NIRGraph:
    """Read a NIR file; FileNotFoundError / ValueError with the file name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIR file {path} not found")
    try:
        return nir.read(str(path))
    except Exception as exc:  # h5py/nir raise many types for a bad file
        raise ValueError(f"{path}: not a readable NIR file ({type(exc).__name__}: {exc})") from exc


def _neuron_names(graph: nir.NIRGraph) -> list[str]:
    return [n for n in _chain(graph) if isinstance(graph.nodes[n], (nir.LIF, nir.IF))]


def _record(module: torch.nn.Module, names: list[str]) -> tuple[dict, list]:
    """Forward hooks summing spikes per neuron node (outputs may be ``(z, state)``)."""
    sums: dict[str, list[float]] = {n: [0.0, 0.0] for n in names}

    def hook_for(name: str):
        def hook(_m, _inp, out) -> None:
            z = out[0] if isinstance(out, tuple) else out
            sums[name][0] += float(z.sum())
            sums[name][1] += z.numel()
        return hook

    handles = [getattr(module, n).register_forward_hook(hook_for(n)) for n in names]
    return sums, handles


def _run(net: torch.nn.Module, graph: nir.NIRGraph, x: torch.Tensor, T: int,
         stateful: bool) -> tuple[torch.Tensor, dict[str, float]]:
    sums, handles = _record(net, _neuron_names(graph))
    outs, state = [], None
    try:
        with torch.no_grad():
            for _ in range(T):
                y = net(x, state) if stateful else net(x)
                if isinstance(y, tuple):
                    y, state = y[0], y[1]
                outs.append(y)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(outs), {n: s / max(c, 1) for n, (s, c) in sums.items()}


def run_norse(graph: nir.NIRGraph, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Simulate ``graph`` with norse's NIR importer.

    ``x [B, C, H, W]`` is presented at each of ``metadata.time_steps`` steps; returns (output
    spikes ``[T, B, ...]``, mean rate per neuron node).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.jit / nirtorch.load deprecation notices
        import norse.torch as norse
        net = norse.from_nir(graph, dt=float(graph.metadata["dt_s"]))
    return _run(net.eval(), graph, x, int(graph.metadata["time_steps"]), stateful=True)


def run_snntorch(graph: nir.NIRGraph, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """As :func:`run_norse` with snntorch's importer (``dt`` fixed at 1e-4 s there)."""
    if abs(float(graph.metadata["dt_s"]) - DT_S) > 1e-12:
        raise ValueError(f"snntorch's NIR importer assumes dt = {DT_S} s; file has "
                         f"{graph.metadata['dt_s']}")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        import snntorch.utils
        from snntorch.import_nir import import_from_nir
        net = import_from_nir(graph)   # prints its weight-scaling notes: silenced
    snntorch.utils.reset(net)
    return _run(net.eval(), graph, x, int(graph.metadata["time_steps"]), stateful=False)


SIMULATORS = {"norse": run_norse, "snntorch": run_snntorch}
