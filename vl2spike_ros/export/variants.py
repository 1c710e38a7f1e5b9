"""Hardware-style variants of a :class:`~vl2spike_ros.export.spec.SpikingStem`.

* :func:`quantize` -- integer weights as SynSense's sinabs discretises a conv + spiking layer
  for DYNAP-CNN/Speck (``sinabs/backend/dynapcnn/discretize.py``): one scale per layer for
  weights *and* biases so that both fit signed ``weight_bits`` integers, the following
  neuron's threshold rounded on the same scale to ``state_bits``. Simulated in float
  (``round(w * s) / s``), so it measures the rounding, not integer overflow of the membrane.
  On the integer grid "fire when ``v >= m``" equals "``v > m - 1/2``"; the threshold is stored
  as ``(m - 1/2) / s`` so that float rounding and the two comparison conventions
  (spikingjelly ``>=``, NIR ``>``) cannot split a membrane that sits exactly on it.
* :func:`to_iaf` -- integrate-and-fire without leak: each ``lif`` becomes ``if`` with the
  preceding conv divided by ``tau`` (the same input gain ``X / tau``, only the leak removed);
  Speck and Loihi-style cores run IAF neurons.
"""
from __future__ import annotations

import torch

from .names import IAF, INT8, INT8_IAF, VARIANTS
from .spec import IF, LIF, Conv, Neuron, SpikingStem

__all__ = ["quantize", "to_iaf", "make_variant", "VARIANTS", "WEIGHT_BITS", "STATE_BITS"]

WEIGHT_BITS = 8   # DYNAPCNN_WEIGHT_PRECISION_BITS in sinabs (weights and biases)
STATE_BITS = 16   # DYNAPCNN_STATE_PRECISION_BITS in sinabs (thresholds, membrane)
TIE_MARGIN = 0.5  # half an integer step below the integer threshold


def discretization_scale(t: torch.Tensor, bits: int) -> float:
    """Largest scale that maps ``t`` into signed ``bits`` integers (sinabs' rule); inf for 0."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    t_min, t_max = float(t.min()), float(t.max())
    if t_min == 0.0 and t_max == 0.0:
        return float("inf")
    if abs(t_min) <= abs(t_max) * abs(lo / hi):
        return abs(hi / t_max)
    return abs(lo / t_min)


def _round(t: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.round(t * scale) / scale


def quantize(stem: SpikingStem, weight_bits: int = WEIGHT_BITS,
             state_bits: int = STATE_BITS) -> SpikingStem:
    """Put every conv + neuron pair on one integer scale (see the module docstring).

    Weights and biases get ``weight_bits``, the threshold ``state_bits``.
    """
    layers = list(stem.layers)
    for i, layer in enumerate(layers):
        if not isinstance(layer, Conv):
            continue
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        thr = torch.tensor([nxt.v_threshold if isinstance(nxt, Neuron) else 0.0])
        scale = min(discretization_scale(layer.weight, weight_bits),
                    discretization_scale(layer.bias, weight_bits),
                    discretization_scale(thr, state_bits))
        if scale == float("inf"):
            continue
        layers[i] = Conv(layer.name, _round(layer.weight, scale), _round(layer.bias, scale),
                         layer.stride, layer.padding, layer.groups, layer.source)
        if isinstance(nxt, Neuron):   # integer "v >= m" as "v > m - 1/2": see module doc
            thr_q = (float(torch.round(thr * scale)) - TIE_MARGIN) / scale
            layers[i + 1] = Neuron(nxt.name, nxt.kind, thr_q, nxt.tau, nxt.v_reset, nxt.source)
    return stem.replace_layers(layers, f"int{weight_bits} weights/biases, "
                                       f"int{state_bits} thresholds (sinabs discretisation)")


def to_iaf(stem: SpikingStem) -> SpikingStem:
    """Every ``lif`` as ``if`` (no leak) with its input conv divided by ``tau``."""
    layers = list(stem.layers)
    for i, layer in enumerate(layers):
        if not (isinstance(layer, Neuron) and layer.kind == LIF):
            continue
        conv = layers[i - 1]
        if not isinstance(conv, Conv):
            raise ValueError(f"{layer.name}: no conv before the neuron to carry 1/tau")
        layers[i - 1] = Conv(conv.name, conv.weight / layer.tau, conv.bias / layer.tau,
                             conv.stride, conv.padding, conv.groups, conv.source)
        layers[i] = Neuron(layer.name.replace(f"_{LIF}", f"_{IF}"), IF, layer.v_threshold,
                           None, layer.v_reset, layer.source)
    return stem.replace_layers(layers, "LIF -> IAF: leak removed, input gain 1/tau kept")


def make_variant(stem: SpikingStem, variant: str) -> SpikingStem:
    """``stem`` as ``variant`` (one of :data:`VARIANTS`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if variant in (IAF, INT8_IAF):
        stem = to_iaf(stem)
    return quantize(stem) if variant in (INT8, INT8_IAF) else stem
