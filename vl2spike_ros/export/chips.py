"""Neuron, synapse and memory counts of a spiking stem; fit to two small neuromorphic chips.

Counts are per conv + neuron pair of a :class:`~vl2spike_ros.export.spec.SpikingStem`; the
chip limits are the published ones below.

The limits are copied from the vendors' open-source toolchains (the packages themselves are not
installed: sinabs pins other ``nir``/``nirtorch`` versions and pulls ``samna``):

* SynSense Speck / DYNAP-CNN, from sinabs (github.com/synsense/sinabs):
  ``backend/dynapcnn/chips/dynapcnn.py`` ``get_constraints()`` -- 9 cores with kernel memory
  16, 16, 16, 32, 32, 64, 64, 16, 16 Ki entries, neuron memory 64, 64, 64, 32, 32, 16, 16, 16,
  16 Ki, bias memory 1024 each (Speck 2e/2f inherit this table); ``dynapcnn_layer.py``
  ``memory_summary()`` -- a layer needs ``c_in * 2^(ceil(log2(kh*kw)) + ceil(log2(c_out)))``
  kernel and ``c_out * 2^(ceil(log2(h)) + ceil(log2(w)))`` neuron entries;
  ``discretize.py`` -- 8-bit weights and biases, 16-bit thresholds/state. Cores are
  integrate-and-fire, event-driven, and take events (a DVS up to 128 x 128), not analog frames.
* SynSense Xylo Audio v2 (SYNS61201), from rockpool 3.1.0
  ``devices/xylo/syns61201/xylo_mapper.py``: at most 16 input channels, 1000 hidden neurons,
  8 output neurons; 8-bit weights (``xylo_samna.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .spec import Conv, Neuron, SpikingStem

__all__ = ["LayerCounts", "layer_counts", "speck_fit", "xylo_fit", "hardware_report"]

SPECK_KERNEL_MEMORY = (16384, 16384, 16384, 32768, 32768, 65536, 65536, 16384, 16384)
SPECK_NEURON_MEMORY = (65536, 65536, 65536, 32768, 32768, 16384, 16384, 16384, 16384)
SPECK_BIAS_MEMORY = 1024
SPECK_MAX_INPUT = (128, 128)
SPECK_SOURCE = ("sinabs backend/dynapcnn/chips/dynapcnn.py get_constraints, "
                "dynapcnn_layer.py memory_summary, discretize.py")
XYLO_MAX_INPUTS, XYLO_MAX_HIDDEN, XYLO_MAX_OUTPUTS = 16, 1000, 8
XYLO_SOURCE = "rockpool 3.1.0 devices/xylo/syns61201/xylo_mapper.py (Xylo Audio v2, SYNS61201)"
INT8_BYTES = 1


@dataclass(frozen=True)
class LayerCounts:
    """One conv + neuron pair: sizes, connections and memory (see module docstring)."""

    name: str
    kind: str
    in_shape: tuple[int, int, int]
    neuron_shape: tuple[int, int, int]
    neurons: int
    synapses: int          # connections with a non-zero weight that land inside the input
    max_fan_in: int
    weights: int           # dense kernel entries
    biases: int
    int8_bytes: int        # weights + biases at one byte each
    speck_kernel_memory: int
    speck_neuron_memory: int

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _valid_taps(c: Conv, in_shape: tuple[int, int, int]) -> torch.Tensor:
    """``[kh, kw]``: output positions at which each kernel tap lands inside the input."""
    kh, kw = c.weight.shape[-2:]
    basis = torch.eye(kh * kw).reshape(kh * kw, 1, kh, kw)
    ones = torch.ones(1, 1, *in_shape[1:])
    return F.conv2d(ones, basis, stride=c.stride, padding=c.padding).sum((0, 2, 3)).reshape(kh, kw)


def _pow2(n: int) -> int:
    return 2 ** math.ceil(math.log2(n)) if n > 1 else 1


def _counts(c: Conv, n: Neuron, in_shape, out_shape) -> LayerCounts:
    o, i, kh, kw = c.weight.shape
    nz = (c.weight != 0).float()
    synapses = int((nz * _valid_taps(c, in_shape)).sum())
    fan_in = int(nz.flatten(1).sum(1).max())
    c_in = i * c.groups
    return LayerCounts(
        name=n.name, kind=n.kind, in_shape=tuple(in_shape), neuron_shape=tuple(out_shape),
        neurons=math.prod(out_shape), synapses=synapses, max_fan_in=fan_in,
        weights=int(c.weight.numel()), biases=int(c.bias.numel()),
        int8_bytes=INT8_BYTES * int(c.weight.numel() + c.bias.numel()),
        speck_kernel_memory=c_in * _pow2(kh * kw) * _pow2(o),
        speck_neuron_memory=o * _pow2(out_shape[1]) * _pow2(out_shape[2]))


def layer_counts(stem: SpikingStem) -> list[LayerCounts]:
    """One :class:`LayerCounts` per conv + neuron pair, in forward order."""
    out, shapes = [], [stem.input_shape] + stem.shapes()
    for j, layer in enumerate(stem.layers):
        if isinstance(layer, Neuron):
            conv = stem.layers[j - 1] if j else None
            if not isinstance(conv, Conv):
                raise ValueError(f"{layer.name}: expected a conv before every neuron layer")
            out.append(_counts(conv, layer, shapes[j - 1], shapes[j + 1]))
    return out


def _assign_cores(layers: list[LayerCounts]) -> list[int] | None:
    """Speck core per layer (bipartite matching on memory fit), or None if impossible."""
    fits = [[k for k in range(len(SPECK_KERNEL_MEMORY))
             if lc.speck_kernel_memory <= SPECK_KERNEL_MEMORY[k]
             and lc.speck_neuron_memory <= SPECK_NEURON_MEMORY[k]
             and lc.biases <= SPECK_BIAS_MEMORY] for lc in layers]
    owner: dict[int, int] = {}

    def place(i: int, seen: set[int]) -> bool:
        for k in fits[i]:
            if k not in seen:
                seen.add(k)
                if k not in owner or place(owner[k], seen):
                    owner[k] = i
                    return True
        return False

    if not all(place(i, set()) for i in range(len(layers))):
        return None
    return [k for i in range(len(layers)) for k, v in owner.items() if v == i]


def speck_fit(stem: SpikingStem, layers: list[LayerCounts]) -> dict:
    """Memory fit on Speck's 9 DYNAP-CNN cores plus the conditions that memory does not cover."""
    cores = _assign_cores(layers)
    kinds = {lc.kind for lc in layers}
    conditions = [
        "first layer: the input is an analog standardised frame; Speck cores take events "
        "(DVS up to 128x128), so the first conv runs off-chip or the frame is event-encoded "
        "(not measured)",
        "neurons: cores are integrate-and-fire; LIF leak needs the IAF variant"
        + (" (this network has LIF neurons)" if "lif" in kinds else ""),
        "weights: 8-bit weights/biases, 16-bit thresholds (the int8 variant)",
        f"time: the chip is event-driven; the {stem.T} discrete steps become input windows",
    ]
    return {"chip": "Speck (DYNAP-CNN cores)", "source": SPECK_SOURCE,
            "memory_fits": cores is not None, "cores": cores,
            "cores_used": None if cores is None else len(cores),
            "cores_available": len(SPECK_KERNEL_MEMORY),
            "input_within_128x128": (stem.input_shape[1] <= SPECK_MAX_INPUT[0]
                                     and stem.input_shape[2] <= SPECK_MAX_INPUT[1]),
            "conditions": conditions}


def xylo_fit(stem: SpikingStem, layers: list[LayerCounts]) -> dict:
    """Xylo Audio v2 budget: input channels, hidden and output neurons."""
    inputs = math.prod(stem.input_shape)
    outputs = layers[-1].neurons
    hidden = sum(lc.neurons for lc in layers[:-1])
    fits = inputs <= XYLO_MAX_INPUTS and hidden <= XYLO_MAX_HIDDEN and outputs <= XYLO_MAX_OUTPUTS
    return {"chip": "Xylo Audio v2 (SYNS61201)", "source": XYLO_SOURCE, "fits": fits,
            "inputs": inputs, "max_inputs": XYLO_MAX_INPUTS, "hidden_neurons": hidden,
            "max_hidden_neurons": XYLO_MAX_HIDDEN, "output_neurons": outputs,
            "max_output_neurons": XYLO_MAX_OUTPUTS}


def hardware_report(stem: SpikingStem) -> dict:
    """Per-layer counts, totals and chip fits of ``stem`` (JSON-able)."""
    layers = layer_counts(stem)
    totals = {k: sum(getattr(lc, k) for lc in layers)
              for k in ("neurons", "synapses", "weights", "biases", "int8_bytes")}
    return {"input_shape": list(stem.input_shape), "time_steps": stem.T,
            "approximations": list(stem.approximations),
            "layers": [lc.to_dict() for lc in layers], "totals": totals,
            "speck": speck_fit(stem, layers), "xylo": xylo_fit(stem, layers)}
