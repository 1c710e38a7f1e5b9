"""Energy of the spiking student vs. dense teachers (45 nm, Horowitz 2014 costs).

Standard Spikformer accounting: the first layer sees real-valued pixels and is counted as MACs;
every later weight layer is driven by spikes and counted as synaptic operations (SOPs = spikes x
fan-out, i.e. ``T x firing rate x FLOPs``). ``E = E_MAC * MACs + E_AC * SOPs`` with
``E_MAC = 4.6 pJ`` and ``E_AC = 0.9 pJ`` (spikingjelly ``SimpleEnergyCostConfig.fp32()``).

Counting uses spikingjelly's ``op_counter`` (``SynOpCounter``, ``MACCounter`` under a
``DispatchCounterMode``) on a real forward pass, with one extension: Spikformer's residual
``x + f(x)`` sums spikes, so some weight layers receive integer spike *counts* (0, 1, 2, ...)
rather than 0/1 spikes. Those are counted as SOPs weighted by the count (each spike of a
multi-spike input accumulates the weight once) instead of as MACs. BatchNorm is treated as
folded into the preceding weights (not counted), as usual for this method. Dense teachers are
counted with ``MACCounter`` (all matmuls/convs incl. attention), energy = ``E_MAC * MACs``.
All reported numbers are per image.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from spikingjelly.activation_based import monitor, neuron
from spikingjelly.activation_based.op_counter import (
    DispatchCounterMode,
    MACCounter,
    SimpleEnergyCostConfig,
    SynOpCounter,
)

log = logging.getLogger(__name__)
aten = torch.ops.aten

__all__ = ["E_MAC_PJ", "E_AC_PJ", "student_energy", "teacher_energy", "spike_count_rules",
           "energy_mj", "rate_projection_count"]

_COST = SimpleEnergyCostConfig.fp32()
E_MAC_PJ: float = float(_COST.e_mac_pj)
E_AC_PJ: float = float(_COST.e_ac_pj)
_BN_TYPES = [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d]
_SDPA_OPS = [getattr(aten, n).default for n in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention") if hasattr(aten, n)]


def energy_mj(macs: float, sops: float) -> float:
    """``E_MAC * macs + E_AC * sops`` in millijoules."""
    return (E_MAC_PJ * macs + E_AC_PJ * sops) * 1e-9


# ----------------------------------------------------------------------------- counting rules
def _kind(x: Any) -> str:
    """'binary' (0/1 spikes), 'count' (non-negative integers: summed spikes) or 'real'."""
    if not torch.is_tensor(x):
        return "none"
    if x.dtype == torch.bool:
        return "binary"
    if not x.is_floating_point():
        return "real"
    if bool((x.eq(0) | x.eq(1)).all()):
        return "binary"
    if bool(((x >= 0) & x.eq(torch.round(x))).all()):
        return "count"
    return "real"


def _sum(x: torch.Tensor) -> int:
    return int(x.sum(dtype=torch.float64).item())


def _conv_count_sops(args: tuple) -> int:
    """Count the SOPs of a convolution driven by spike counts (sum of count x fan-out)."""
    x, w, _, stride, padding, dilation, _, _, groups = args[:9]
    with torch.no_grad():
        ones = torch.ones((groups, w.shape[1], *w.shape[2:]), dtype=torch.float64, device=x.device)
        occ = aten.convolution.default(x.double(), ones, None, stride, padding, dilation, False,
                                       [0] * len(stride), groups)
    return _sum(occ) * (int(w.shape[0]) // groups)


def _mm_count_sops(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> int | None:
    """Count the SOPs of a (batched) matmul ``x @ y`` with a spike-count operand.

    A count operand meeting real weights costs count x fan-out, two count tensors the sum of the
    output; None means spikingjelly's own rule applies (binary spikes, including binary x count,
    where the binary operand is the spike train).
    """
    kx, ky = _kind(x), _kind(y)
    if {kx, ky} == {"count"}:
        return _sum(out)
    if kx == "count" and ky == "real":
        return _sum(x) * int(y.shape[-1])
    if ky == "count" and kx == "real":
        return _sum(y) * int(x.shape[-2])
    return None


def spike_count_rules() -> tuple[dict, dict]:
    """Return extra rules ``(synop_rules, mac_rules)`` for spikingjelly's counters.

    They extend the counters to integer spike-count inputs (counted as SOPs, not MACs);
    binary/real cases use spikingjelly's rules.
    """
    base_syn, base_mac = SynOpCounter().rules, MACCounter().rules
    syn: dict[Any, Callable] = {}
    mac: dict[Any, Callable] = {}
    operands = {aten.mm.default: (0, 1), aten.bmm.default: (0, 1),
                aten.addmm.default: (1, 2), aten.baddbmm.default: (1, 2)}

    def mm_rules(op, i, j):
        def s(args, kwargs, out):
            n = _mm_count_sops(args[i], args[j], out)
            return base_syn[op](args, kwargs, out) if n is None else n

        def m(args, kwargs, out):
            if "count" in (_kind(args[i]), _kind(args[j])):
                return 0
            return base_mac[op](args, kwargs, out)
        return s, m

    for op, (i, j) in operands.items():
        syn[op], mac[op] = mm_rules(op, i, j)
    conv = aten.convolution.default

    def conv_syn(args, kwargs, out):
        if _kind(args[0]) == "count" and not args[6]:
            return _conv_count_sops(args)
        return base_syn[conv](args, kwargs, out)

    def conv_mac(args, kwargs, out):
        return 0 if _kind(args[0]) == "count" else base_mac[conv](args, kwargs, out)

    syn[conv], mac[conv] = conv_syn, conv_mac
    for op in _SDPA_OPS:
        mac[op] = _sdpa_macs
    return syn, mac


def _sdpa_macs(args, kwargs, out) -> int:
    """Fused attention ``softmax(q k^T) v``: q [B,H,L,E], k [B,H,S,E], v [B,H,S,Ev]."""
    q, k, v = args[:3]
    b_h = int(torch.tensor(q.shape[:-2]).prod())
    return b_h * int(q.shape[-2]) * int(k.shape[-2]) * (int(q.shape[-1]) + int(v.shape[-1]))


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """nn.MultiheadAttention's fused inference path hides its matmuls from the dispatcher."""
    mha = torch.backends.mha
    old = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(old)


def _top_scopes(counter, exclude: tuple[str, ...] = ("Global",)) -> dict[str, int]:
    """Sum counts per top-level module scope (spikingjelly names scopes by module class/path)."""
    out = {}
    for scope, recs in counter.get_counts().items():
        if scope not in exclude and scope.count(".") <= 1:
            out[scope] = int(sum(recs.values()))
    return out


# ----------------------------------------------------------------------------- student
@torch.no_grad()
def student_energy(model: nn.Module, images: torch.Tensor,
                   output: str | Callable[[torch.Tensor], Any] = "descriptor") -> dict:
    """Per-image energy of a SpikformerStudent on ``images [B,C,H,W]`` (eval mode).

    ``output``: ``"descriptor"`` (``model.descriptor``: features + pooled projection),
    ``"logits"``, or a callable ``images -> output`` that runs the model (e.g. the VPR place
    descriptor with its spatial head and whitening, which then count as MACs).
    Returns ``energy_mj, sops, macs_first_layer, macs_other, macs, firing_rate,
    per_layer_firing_rate, sops_by_scope, T, batch, e_mac_pj, e_ac_pj``.
    """
    if not callable(output) and output not in ("descriptor", "logits"):
        raise ValueError(f"output must be 'descriptor', 'logits' or a callable, got {output!r}")
    was_training = model.training
    model.eval()
    first_conv = model.stem.stages[0].conv_bn.block[0]
    syn_rules, mac_rules = spike_count_rules()
    syn = SynOpCounter(extra_rules=syn_rules, extra_ignore_modules=_BN_TYPES)
    mac = MACCounter(extra_rules=mac_rules, extra_ignore_modules=_BN_TYPES)
    mac_first = MACCounter(extra_rules=mac_rules, extra_ignore_modules=_BN_TYPES)
    spikes = monitor.OutputMonitor(model, neuron.BaseNode,
                                   lambda s: (float(s.sum()), int(s.numel())))
    try:
        with DispatchCounterMode([syn, mac]):
            fn = output if callable(output) else (
                model.descriptor if output == "descriptor" else model.forward)
            fn(images)
        with DispatchCounterMode([mac_first]):  # the first layer alone, on the same input
            first_conv(images)
        rates = {}
        for name in spikes.monitored_layers:
            recs = spikes[name]
            rates[name] = sum(r[0] for r in recs) / max(1, sum(r[1] for r in recs))
        total_spikes = sum(r[0] for r in spikes.records)
        total_neurons = sum(r[1] for r in spikes.records)
    finally:
        spikes.close()
        model.train(was_training)
    b = int(images.shape[0] if images.ndim == 4 else images.shape[1])
    macs_all = mac.get_total() / b
    macs_first = mac_first.get_total() / b
    sops = syn.get_total() / b
    return {
        "energy_mj": energy_mj(macs_all, sops),
        "sops": sops,
        "macs_first_layer": macs_first,
        "macs_other": macs_all - macs_first,
        "macs": macs_all,
        "firing_rate": total_spikes / max(1, total_neurons),
        "per_layer_firing_rate": rates,
        "sops_by_scope": {k: v / b for k, v in _top_scopes(syn).items()},
        "T": int(model.config.T), "batch": b,
        "output": output if isinstance(output, str) else getattr(output, "__name__", "callable"),
        "e_mac_pj": E_MAC_PJ, "e_ac_pj": E_AC_PJ,
    }


# ----------------------------------------------------------------------------- teacher
@torch.no_grad()
def teacher_energy(module: nn.Module | Callable[[torch.Tensor], Any],
                   images: torch.Tensor) -> dict:
    """Measure the per-image dense energy of a teacher (ANN) on ``images``.

    All MACs count (convs, matmuls, attention). ``module`` is an ``nn.Module`` or a callable
    taking the image batch.
    """
    _, mac_rules = spike_count_rules()
    mac = MACCounter(extra_rules=mac_rules)
    was = getattr(module, "training", None)
    if isinstance(module, nn.Module):
        module.eval()
    try:
        with _mha_fastpath_off(), DispatchCounterMode([mac]) as mode:
            module(images)
        skipped = mode.get_unsupported(mac)
    finally:
        if isinstance(module, nn.Module) and was:
            module.train()
    fused = [k for k in skipped if "attention" in k or "_native_multi_head" in k]
    if fused:
        raise RuntimeError(f"teacher uses fused ops the MAC counter cannot see: {fused}")
    b = int(images.shape[0])
    macs = mac.get_total() / b
    return {"energy_mj": energy_mj(macs, 0.0), "macs": macs, "batch": b,
            "macs_by_scope": {k: v / b for k, v in _top_scopes(mac).items()},
            "e_mac_pj": E_MAC_PJ}


# ----------------------------------------------------------------------------- rate projections
@torch.no_grad()
def rate_projection_count(spikes: torch.Tensor, out_dim: int) -> dict:
    """Count a linear map applied to spike rates, per image, both ways.

    ``spikes`` ``[T, B, ...]``: the spike trains (0/1, or non-negative integer counts) whose
    time average, the rate vector ``r = mean_t(s_t)`` of ``D`` values per image, is
    L2-normalised, centred and projected by ``W [D, out_dim]`` (the place descriptor's
    whitening). Dense count: ``D x out_dim`` MACs. Spiking hardware: the projection commutes
    with the time average, ``W . mean_t(s_t) = mean_t(W . s_t)``, so every input spike
    accumulates one weight row (``spikes x out_dim`` ACs); the rest is real-valued and counted
    as MACs: the squared norm over active inputs (one per active input), then per output the
    ``1 / (T |r|)`` scale, the stored mean's projection (a constant) and the final L2 norm
    (``3 x out_dim``).

    Returns ``in_dim, out_dim, spikes, active_inputs, dense_macs, acs, macs,
    energy_mj_dense, energy_mj_spiking``.
    """
    if spikes.ndim < 3 or out_dim < 1:
        raise ValueError(f"need spikes [T, B, ...] and out_dim >= 1, got {list(spikes.shape)} "
                         f"and {out_dim}")
    s = spikes.detach().double().flatten(2)                      # [T, B, D]
    if bool((s < 0).any()) or not bool(s.eq(torch.round(s)).all()):
        raise ValueError("spikes must be 0/1 or non-negative integer spike counts")
    b, d = int(s.shape[1]), int(s.shape[2])
    n_spikes = float(s.sum()) / b
    active = float((s.sum(0) > 0).sum()) / b
    acs = n_spikes * out_dim
    macs = active + 3.0 * out_dim
    dense = float(d * out_dim)
    return {"in_dim": d, "out_dim": int(out_dim), "spikes": n_spikes, "active_inputs": active,
            "dense_macs": dense, "acs": acs, "macs": macs,
            "energy_mj_dense": energy_mj(dense, 0.0), "energy_mj_spiking": energy_mj(macs, acs)}
