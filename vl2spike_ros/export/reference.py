"""Run a :class:`~vl2spike_ros.export.spec.SpikingStem` in spikingjelly; spikes to descriptors.

This is our side of every comparison with another simulator.
The neurons are spikingjelly 2.0.0 ``LIFNode`` / ``IFNode`` in multi-step mode with the stem's
parameters, the convs plain ``nn.Conv2d`` with the folded weights: with ``maxpool="error"``
semantics (no approximation) this reproduces the source model's ``forward_stem`` exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from vl2spike_ros.vpr.whitening import Whitening

from .spec import IF, LIF, Conv, Neuron, SpikingStem

__all__ = ["ReferenceStem", "descriptor_from_spikes", "spike_rates"]


class _Threshold(nn.Module):
    """Stateless ``S = X > v_threshold`` over ``[T, ...]``."""

    def __init__(self, v_threshold: float) -> None:
        super().__init__()
        self.v_threshold = v_threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.v_threshold).to(x.dtype)


def _conv_module(c: Conv) -> nn.Conv2d:
    o, i, kh, kw = c.weight.shape
    m = nn.Conv2d(i * c.groups, o, (kh, kw), c.stride, c.padding, groups=c.groups, bias=True)
    with torch.no_grad():
        m.weight.copy_(c.weight)
        m.bias.copy_(c.bias)
    return m


def _neuron_module(n: Neuron) -> nn.Module:
    if n.kind == LIF:
        return neuron.LIFNode(tau=float(n.tau), decay_input=True, v_threshold=n.v_threshold,
                              v_reset=n.v_reset, step_mode="m")
    if n.kind == IF:
        return neuron.IFNode(v_threshold=n.v_threshold, v_reset=n.v_reset, step_mode="m")
    return _Threshold(n.v_threshold)


class ReferenceStem(nn.Module):
    """The spikingjelly network of a :class:`SpikingStem`.

    ``forward(x [B, C, H, W]) -> spikes [T, B, C', H', W']`` (the image is the input current
    at every step); :attr:`last_rates` holds the mean firing rate of every neuron layer of the
    latest forward (layer name -> float).
    """

    def __init__(self, stem: SpikingStem) -> None:
        super().__init__()
        self.stem = stem
        mods = [layer.SeqToANNContainer(_conv_module(x)) if isinstance(x, Conv)
                else _neuron_module(x) for x in stem.layers]
        self.layers = nn.ModuleList(mods)
        self.last_rates: dict[str, float] = {}
        self.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        y = x.unsqueeze(0).expand(self.stem.T, *x.shape)
        self.last_rates = {}
        for spec, mod in zip(self.stem.layers, self.layers):
            y = mod(y)
            if isinstance(spec, Neuron):
                self.last_rates[spec.name] = float(y.mean())
        return y


def spike_rates(spikes: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, H, W]`` spikes -> ``[B, C*H*W]`` rates (mean over T, flattened C, H, W)."""
    return spikes.float().mean(0).flatten(1)


def descriptor_from_spikes(spikes: torch.Tensor, whitening: Whitening | None) -> torch.Tensor:
    """Turn output spikes ``[T, B, ...]`` into place descriptors ``[B, D]``.

    Rates, L2 norm, then the whitening (``(z - mean) @ proj``, L2 norm) when given: the
    model's ``stem<n>`` path.
    """
    z = F.normalize(spike_rates(spikes), dim=-1)
    return whitening(z) if whitening is not None else z
