"""The spiking part of a place model as a flat list of layers (what the NIR export writes).

:func:`extract_stem` reads a :class:`~vl2spike_ros.vpr.place.PlaceDescriptor` with a
``stem<n>`` descriptor (the Spikformer's first ``n`` spiking conv stages) into a
:class:`SpikingStem`: :class:`Conv` layers (BatchNorm folded in) and :class:`Neuron` layers in
discrete time, plus the non-spiking post-processing (rates, L2 norm, whitening).

Semantics of one step ``t`` (``V`` starts at ``v_reset``; same as spikingjelly 2.0.0):

* ``lif``: ``H = V + (X - (V - v_reset)) / tau``; ``S = H >= v_threshold``; ``V = v_reset`` where
  ``S`` else ``H`` (spikingjelly ``LIFNode`` with ``decay_input=True``, hard reset);
* ``if``: ``H = V + X``, same spike and reset (``IFNode``);
* ``threshold``: ``S = X > v_threshold``, no state (used for the spike OR below).

How each spikingjelly piece is mapped (also written into the NIR file's metadata):

* ``Conv2d`` (no bias) + ``BatchNorm2d`` (eval statistics) -> one conv with
  ``w' = w * g / sqrt(var + eps)`` and ``b' = beta - mean * g / sqrt(var + eps)``;
* ``LIFNode(decay_input=False)`` -> ``lif`` with the preceding conv scaled by ``tau``
  (``V - (V - v_reset)/tau + X == V + (tau*X - (V - v_reset))/tau``); soft reset
  (``v_reset=None``) and other neuron classes are refused;
* ``detach_reset`` and the surrogate function only shape gradients: ignored;
* ``MaxPool2d`` on the membrane input (before the neuron) has no NIR node (NIR 1.0 has sum and
  average pooling only) and cannot be rewritten exactly. ``maxpool="spike-or"`` moves it after
  the neuron as a max over *spikes* (an OR): a ones-conv per channel with the same kernel,
  stride and padding counts the spikes in each window, a ``threshold`` unit at 0.5 fires when
  the count is >= 1. Identical at the first step (``max(x) >= th`` iff some ``x >= th``),
  not later: this changes the model; its recall cost is measured (``vl2spike bench
  neuromorphic``).
  ``maxpool="error"`` refuses it instead.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Union

import torch
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based.model.spikformer import SpikformerConv2dBNLIF
from torch import nn

from vl2spike_ros.models.schema import SPIKFORMER
from vl2spike_ros.vpr.descriptors import stem_stages
from vl2spike_ros.vpr.place import PlaceDescriptor
from vl2spike_ros.vpr.whitening import Whitening

from .names import MAXPOOL_ERROR, MAXPOOL_POLICIES, MAXPOOL_SPIKE_OR

log = logging.getLogger(__name__)

__all__ = ["Conv", "Neuron", "SpikingStem", "UnsupportedLayerError", "extract_stem",
           "MAXPOOL_POLICIES", "LIF", "IF", "THRESHOLD"]

LIF, IF, THRESHOLD = "lif", "if", "threshold"
NEURON_KINDS = (LIF, IF, THRESHOLD)
OR_THRESHOLD = 0.5  # spike counts are integers: "> 0.5" is "at least one spike"
SUPPORTED = ("Conv2d, BatchNorm2d right after a Conv2d, MaxPool2d before a neuron "
             f"(maxpool='{MAXPOOL_SPIKE_OR}'), LIFNode (hard reset), IFNode (hard reset)")


class UnsupportedLayerError(ValueError):
    """A layer of the model has no faithful NIR mapping (the message names it)."""


@dataclass(frozen=True)
class Conv:
    """2-d convolution ``weight [O, I/groups, kh, kw]``, ``bias [O]`` (float32)."""

    name: str
    weight: torch.Tensor
    bias: torch.Tensor
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    source: str = ""

    def out_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """``(C, H, W)`` in -> ``(O, H', W')`` out."""
        c, h, w = shape
        o, i, kh, kw = self.weight.shape
        if c != i * self.groups:
            raise ValueError(f"{self.name}: expects {i * self.groups} input channels, got {c}")
        (sh, sw), (ph, pw) = self.stride, self.padding
        return int(o), (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


@dataclass(frozen=True)
class Neuron:
    """Spiking neurons of ``kind`` lif | if | threshold (semantics: module docstring).

    ``tau`` is in time steps (lif only).
    """

    name: str
    kind: str
    v_threshold: float
    tau: float | None = None
    v_reset: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in NEURON_KINDS:
            raise ValueError(f"{self.name}: unknown neuron kind {self.kind!r}")
        if self.kind == LIF and not (self.tau and self.tau > 1.0):
            raise ValueError(f"{self.name}: a lif neuron needs tau > 1 step, got {self.tau}")


Layer = Union[Conv, Neuron]


@dataclass(frozen=True)
class SpikingStem:
    """Layers in forward order for input ``[C, H, W]`` presented at each of ``T`` steps.

    The descriptor is ``normalize(flatten(mean_t spikes_t))`` of the last layer, then
    ``whitening`` when present. ``approximations`` lists every change against the source
    model (empty: exact); ``source`` describes where it came from (JSON-able).
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, int, int]
    T: int
    whitening: Whitening | None = None
    approximations: tuple[str, ...] = ()
    source: dict = dataclasses.field(default_factory=dict)

    def shapes(self) -> list[tuple[int, int, int]]:
        """Output shape ``(C, H, W)`` of every layer."""
        out, shape = [], self.input_shape
        for layer in self.layers:
            shape = layer.out_shape(shape) if isinstance(layer, Conv) else shape
            out.append(shape)
        return out

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return self.shapes()[-1]

    def replace_layers(self, layers: list[Layer], note: str | None = None) -> "SpikingStem":
        """Return a copy with other layers (and ``note`` added to the approximations)."""
        notes = self.approximations + ((note,) if note else ())
        return dataclasses.replace(self, layers=tuple(layers), approximations=notes)


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of ``conv`` followed by ``bn`` in eval mode, as one conv (float32)."""
    w = conv.weight.detach().float()
    b = (conv.bias.detach().float() if conv.bias is not None
         else torch.zeros(w.shape[0], dtype=torch.float32))
    if bn is None:
        return w.clone(), b.clone()
    scale = (bn.weight.detach().float() if bn.affine else torch.ones_like(b)) / torch.sqrt(
        bn.running_var.detach().float() + bn.eps)
    shift = bn.bias.detach().float() if bn.affine else torch.zeros_like(b)
    return w * scale[:, None, None, None], (b - bn.running_mean.detach().float()) * scale + shift


def ungroup(w: torch.Tensor, groups: int) -> torch.Tensor:
    """Rewrite a grouped conv weight ``[O, I/g, kh, kw]`` as groups=1 ``[O, I, kh, kw]``.

    Block-diagonal, the same convolution; nir 1.0.8's shape inference reads C_in from the
    weight, so grouped convs do not pass its type check.
    """
    if groups == 1:
        return w
    o, ig, kh, kw = w.shape
    dense, og = torch.zeros(o, ig * groups, kh, kw, dtype=w.dtype), o // groups
    for g in range(groups):
        dense[g * og:(g + 1) * og, g * ig:(g + 1) * ig] = w[g * og:(g + 1) * og]
    return dense


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _neuron_layer(name: str, node: nn.Module) -> tuple[str, float, float | None, bool]:
    """(kind, v_threshold, tau, decay_input) of a spikingjelly node, or UnsupportedLayerError."""
    kind = {sj_neuron.LIFNode: LIF, sj_neuron.IFNode: IF}.get(type(node))
    if kind is None:
        raise UnsupportedLayerError(f"{name}: {type(node).__name__} is not supported by the NIR "
                                    f"export (supported: {SUPPORTED})")
    if node.v_reset is None:
        raise UnsupportedLayerError(f"{name}: {type(node).__name__} with soft reset "
                                    "(v_reset=None) has no NIR equivalent (NIR resets to v_reset)")
    tau = float(node.tau) if kind == LIF else None
    return kind, float(node.v_threshold), tau, bool(getattr(node, "decay_input", True))


class _StageReader:
    """Turns the leaf modules of one stem stage into :class:`Conv`/:class:`Neuron` layers."""

    def __init__(self, stage_name: str, label: str, maxpool: str) -> None:
        self.stage_name, self.label, self.maxpool = stage_name, label, maxpool
        self.conv: nn.Conv2d | None = None
        self.bn: nn.BatchNorm2d | None = None
        self.pool: tuple[str, nn.MaxPool2d] | None = None
        self.src: list[str] = []
        self.layers: list[Layer] = []
        self.notes: list[str] = []

    def feed(self, name: str, m: nn.Module) -> None:
        full = f"{self.stage_name}.{name}"
        if isinstance(m, nn.Conv2d) and self.conv is None:
            if (isinstance(m.padding, str) or _pair(m.dilation) != (1, 1)
                    or m.padding_mode != "zeros"):
                raise UnsupportedLayerError(f"{full}: Conv2d with dilation, string padding or "
                                            "non-zero padding mode is not supported by the export")
            self.conv, self.src = m, [full]
        elif isinstance(m, nn.BatchNorm2d) and self.conv is not None and self.bn is None:
            self.bn = m
            self.src.append(full)
        elif isinstance(m, nn.MaxPool2d) and self.conv is not None and self.pool is None:
            self._maxpool(full, m)
        elif isinstance(m, sj_neuron.BaseNode):
            self._neuron(full, m)
        elif not isinstance(m, nn.Identity):
            raise UnsupportedLayerError(f"{full}: {type(m).__name__} is not supported here by "
                                        f"the NIR export (supported: {SUPPORTED})")

    def _maxpool(self, full: str, m: nn.MaxPool2d) -> None:
        if self.maxpool == MAXPOOL_ERROR:
            raise UnsupportedLayerError(
                f"{full}: MaxPool2d on the membrane input has no NIR equivalent (NIR 1.0 has no "
                f"max pooling); use --maxpool {MAXPOOL_SPIKE_OR} to move it after the "
                "neuron as a max over spikes (changes the model; cost: vl2spike bench "
                "neuromorphic)")
        if m.dilation not in (1, (1, 1)) or m.ceil_mode:
            raise UnsupportedLayerError(f"{full}: MaxPool2d with dilation/ceil_mode is not "
                                        "supported by the NIR export")
        self.pool = (full, m)

    def _neuron(self, full: str, node: nn.Module) -> None:
        kind, v_th, tau, decay_input = _neuron_layer(full, node)
        if self.conv is None:
            raise UnsupportedLayerError(f"{full}: a neuron must follow a Conv2d in the export")
        w, b = fold_bn(self.conv, self.bn)
        w = ungroup(w, int(self.conv.groups))
        if kind == LIF and not decay_input:   # input not divided by tau: fold tau into the conv
            w, b = w * tau, b * tau
        self.layers.append(Conv(f"{self.label}_conv", w, b, _pair(self.conv.stride),
                                _pair(self.conv.padding), 1, " + ".join(self.src)))
        self.layers.append(Neuron(f"{self.label}_{kind}", kind, v_th, tau,
                                  float(node.v_reset), full))
        if self.pool is not None:
            self._spike_or(*self.pool, channels=int(w.shape[0]))
        self.conv, self.bn, self.pool, self.src = None, None, None, []

    def _spike_or(self, full: str, m: nn.MaxPool2d, channels: int) -> None:
        k = _pair(m.kernel_size)
        stride = _pair(m.stride if m.stride is not None else m.kernel_size)
        # channel c counts the spikes of channel c in each window (a per-channel ones kernel)
        count = ungroup(torch.ones(channels, 1, *k), channels)
        self.layers.append(Conv(f"{self.label}_pool_count", count, torch.zeros(channels), stride,
                                _pair(m.padding), 1, full))
        self.layers.append(Neuron(f"{self.label}_pool_or", THRESHOLD, OR_THRESHOLD, source=full))
        self.notes.append(f"{full}: MaxPool2d {k[0]}x{k[1]}/{stride[0]} on the membrane input "
                          "moved after the neuron as a max over spikes (spike OR)")


def _units(module: nn.Module, prefix: str = ""):
    """Yield ``(name, module)`` of the leaf modules in registration (= forward) order.

    A spiking neuron counts as a leaf (its surrogate-function child only matters for training).
    """
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, sj_neuron.BaseNode) or not list(child.children()):
            yield full, child
        else:
            yield from _units(child, full + ".")


def extract_stem(place: PlaceDescriptor, maxpool: str = MAXPOOL_SPIKE_OR) -> SpikingStem:
    """Read the spiking layers behind ``place``'s ``stem<n>`` descriptor (eval BatchNorm).

    Raises :class:`UnsupportedLayerError` naming the first layer that cannot be expressed, and
    ``ValueError`` for a place model whose descriptor is not ``stem<n>``.
    """
    if maxpool not in MAXPOOL_POLICIES:
        raise ValueError(f"maxpool policy must be one of {MAXPOOL_POLICIES}, got {maxpool!r}")
    s = place.settings
    n = stem_stages(s.mode)
    if s.kind != SPIKFORMER or not n:
        raise UnsupportedLayerError(
            f"NIR export covers Spikformer 'stem<n>' descriptors (spiking conv stages); this "
            f"place model is a {s.kind} with descriptor {s.mode!r} (spiking self-attention and "
            "the CNN have no NIR equivalent here)")
    backbone = place.backbone
    layers: list[Layer] = []
    notes: list[str] = []
    for i, stage in enumerate(backbone.stem.stages[:n]):
        name = f"stem.stages.{i}"
        if type(stage) is not SpikformerConv2dBNLIF:
            raise UnsupportedLayerError(f"{name}: {type(stage).__name__} is not a "
                                        "SpikformerConv2dBNLIF stage")
        reader = _StageReader(name, f"stage{i}", maxpool)
        for sub, m in _units(stage):
            reader.feed(sub, m)
        if reader.conv is not None or not reader.layers:
            raise UnsupportedLayerError(f"{name}: stage does not end in a spiking neuron")
        layers += reader.layers
        notes += reader.notes
    cfg = backbone.config
    return SpikingStem(tuple(layers), (int(cfg.in_chans), *map(int, cfg.img_size)), int(cfg.T),
                       place.whitening, tuple(notes),
                       {"variant": cfg.name, "descriptor": s.mode, "input_norm": s.input_norm,
                        "weights_sha256_16": place.weights_hash or ""})
