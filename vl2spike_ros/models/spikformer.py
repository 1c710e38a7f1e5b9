"""Spikformer student on spikingjelly 2.0.0 (``activation_based``, multi-step LIF neurons).

Layout: a spiking conv stem (``SpikformerConv2dBNLIF`` stages + relative position conv, as in
Spikformer) turns an image into an ``(H/p) x (W/p)`` token grid of width ``D``; ``depth``
``SpikformerBlock`` s (spiking self-attention + spiking MLP) follow. Tokens are spike counts
(binary spikes plus residual sums). A mean over time and tokens gives the pooled feature that feeds
both the class head and the place-descriptor projection.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron
from spikingjelly.activation_based.model.spikformer import (
    SpikformerBlock,
    SpikformerConv2dBNLIF,
)

from .config import SpikformerConfig

log = logging.getLogger(__name__)

__all__ = ["SpikformerStudent", "SpikingStem", "Capture", "calibrate_bn"]

QKV_BN_BIAS_INIT = 0.5


class SpikingStem(nn.Module):
    """Spiking conv stem (Spikformer SPS): 4 conv-BN-LIF stages and a residual position conv.

    The stages have D/8, D/4, D/2, D channels; the last ``log2(patch_size)`` are max-pooled.

    ``forward(x_seq [T,B,C,H,W]) -> [T,B,D,H/p,W/p]``. ``forward_static(x [B,C,H,W], T)`` runs the
    first (real-valued input) conv+BN once and repeats its output over ``T``: same result as
    repeating the image, without ``T``-fold multiply-accumulates in the only MAC layer.
    """

    def __init__(self, cfg: SpikformerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        dims = [d // 8, d // 4, d // 2, d]
        pool_from = len(dims) - cfg.num_pool_stages
        in_c = cfg.in_chans
        stages = []
        for i, out_c in enumerate(dims):
            stages.append(SpikformerConv2dBNLIF(in_c, out_c, kernel_size=3, stride=1, padding=1,
                                                pool=i >= pool_from))
            in_c = out_c
        self.stages = nn.ModuleList(stages)
        self.rpe = SpikformerConv2dBNLIF(d, d, kernel_size=3, stride=1, padding=1, pool=False)

    def _rest(self, x_seq: torch.Tensor) -> torch.Tensor:
        for stage in self.stages[1:]:
            x_seq = stage(x_seq)
        return x_seq + self.rpe(x_seq)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self._rest(self.stages[0](x_seq))

    def forward_static(self, x: torch.Tensor, T: int) -> torch.Tensor:
        return self._rest(self._first_static(x, T))

    def _first_static(self, x: torch.Tensor, T: int) -> torch.Tensor:
        first = self.stages[0]
        y = first.conv_bn(x.unsqueeze(0))  # [1,B,C1,H1,W1]
        return first.neuron(y.expand(T, *y.shape[1:]))

    def forward_prefix(self, x: torch.Tensor, n: int, T: int) -> torch.Tensor:
        """Run the first ``n`` stages only (no position conv) and return their spikes.

        ``x [B,C,H,W]`` (repeated over ``T``) or ``[T,B,C,H,W]`` -> ``[T,B,C_n,h_n,w_n]``.
        """
        if not 1 <= n <= len(self.stages):
            raise ValueError(f"stem has {len(self.stages)} stages, asked for the first {n}")
        y = self._first_static(x, T) if x.ndim == 4 else self.stages[0](x)
        for stage in self.stages[1:n]:
            y = stage(y)
        return y

    def prefix_shape(self, n: int, img_size: tuple[int, int]) -> tuple[int, int, int]:
        """``(C, h, w)`` of :meth:`forward_prefix` ``(n)`` for an ``img_size`` (H, W) input."""
        stages = list(self.stages[:n])
        pools = sum(any(isinstance(m, nn.MaxPool2d) for m in st.modules()) for st in stages)
        c = [m for m in stages[-1].modules() if isinstance(m, nn.Conv2d)][0].out_channels
        return c, img_size[0] >> pools, img_size[1] >> pools


@dataclass
class Capture:
    """What one ``forward_features`` produced while ``model.capture()`` was active.

    ``v_seq``: LIF name -> membrane potentials ``[T, B, ...]``; ``spike_rates``: LIF name -> mean
    firing rate (0-d tensor); ``step_spike_rates``: LIF name -> ``[T]`` rate per step;
    ``step_sample_rates``: LIF name -> ``[T, B]`` rate per step and image;
    ``step_features``: ``[T, B, D]`` tokens pooled per time step. All keep their autograd graph.
    """

    v_seq: dict[str, torch.Tensor] = field(default_factory=dict)
    spike_rates: dict[str, torch.Tensor] = field(default_factory=dict)
    step_spike_rates: dict[str, torch.Tensor] = field(default_factory=dict)
    step_sample_rates: dict[str, torch.Tensor] = field(default_factory=dict)
    step_features: torch.Tensor | None = None

    def clear(self) -> None:
        self.v_seq.clear()
        self.spike_rates.clear()
        self.step_spike_rates.clear()
        self.step_sample_rates.clear()
        self.step_features = None


class SpikformerStudent(nn.Module):
    """Spikformer student.

    Inputs are float images ``[B,C,H,W]`` (repeated over ``T``) or sequences ``[T,B,C,H,W]``
    with ``(C,H,W) == (in_chans, *img_size)``.
    """

    def __init__(self, config: SpikformerConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = SpikingStem(config)
        self.blocks = nn.ModuleList(
            SpikformerBlock(config.embed_dim, config.num_heads, config.mlp_ratio)
            for _ in range(config.depth))
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        self.desc_norm = nn.LayerNorm(config.embed_dim)
        self.desc_proj = nn.Linear(config.embed_dim, config.descriptor_dim)
        self._capture: Capture | None = None
        self._init_weights()
        functional.set_step_mode(self, "m")

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.stem.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
        # q/k/v fire ~3% with a zero BN bias, too few for the spiking attention (threshold 0.5)
        # to ever fire, so its output projection would get no gradient. A bias of 0.5 gives
        # ~10% q/k/v rates and a live attention path at initialisation.
        for blk in self.blocks:
            nn.init.constant_(blk.attn.qkv_conv_bn[1].bias, QKV_BN_BIAS_INIT)

    def lif_nodes(self) -> Iterator[tuple[str, neuron.BaseNode]]:
        """``(name, node)`` for every spiking neuron layer, in forward order."""
        for name, m in self.named_modules():
            if isinstance(m, neuron.BaseNode):
                yield name, m

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        want = (cfg.in_chans, *cfg.img_size)
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{cfg.name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim not in (4, 5) or tuple(x.shape[-3:]) != want or 0 in x.shape:
            raise ValueError(
                f"{cfg.name}: expected input [B,{want[0]},{want[1]},{want[2]}] or "
                f"[T,B,{want[0]},{want[1]},{want[2]}], got shape {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{cfg.name}: expected a float tensor, got dtype {x.dtype}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B,C,H,W]`` or ``[T,B,C,H,W]`` -> spike tokens ``[T, B, N, D]``.

        Resets neuron state first (``_start``), so every call is independent.
        """
        self._start(x)
        y = self.stem.forward_static(x, self.config.T) if x.ndim == 4 else self.stem(x)
        for blk in self.blocks:
            y = blk(y)
        tokens = y.flatten(3).transpose(2, 3)  # [T,B,N,D]
        if self._capture is not None:
            self._fill_capture(tokens)
        return tokens

    def _start(self, x: torch.Tensor) -> None:
        """Check the input and reset every neuron.

        The one place state is reset, so each forward (full or stem-only) is independent.
        """
        self._check_input(x)
        functional.reset_net(self)

    def forward_stem(self, x: torch.Tensor, stages: int) -> torch.Tensor:
        """Return the spikes ``[T, B, C, h, w]`` of the first ``stages`` spiking conv stages.

        ``x`` is ``[B,C,H,W]`` or ``[T,B,C,H,W]``; a cheaper, higher-resolution view than the
        tokens.
        """
        self._start(x)
        return self.stem.forward_prefix(x, stages, self.config.T)

    def _fill_capture(self, tokens: torch.Tensor) -> None:
        cap = self._capture
        assert cap is not None
        cap.step_features = tokens.mean(dim=2)
        for name, node in self.lif_nodes():
            if node.v_seq is not None:
                cap.v_seq[name] = node.v_seq

    @staticmethod
    def pool(tokens: torch.Tensor) -> torch.Tensor:
        """``[T,B,N,D] -> [B,D]``: mean over time steps and tokens."""
        return tokens.mean(dim=(0, 2))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[T,B,N,D] -> logits [B, num_classes]``."""
        return self.head(self.pool(tokens))

    def descriptor_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[T,B,N,D] -> [B, descriptor_dim]`` float32, L2-normalised."""
        d = self.desc_proj(self.desc_norm(self.pool(tokens)))
        return F.normalize(d.float(), dim=-1)

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> place descriptors ``[B, descriptor_dim]`` (float32, unit L2 norm)."""
        return self.descriptor_from_tokens(self.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> class logits ``[B, num_classes]``."""
        return self.forward_head(self.forward_features(x))

    @contextlib.contextmanager
    def capture(self) -> Iterator[Capture]:
        """Record membrane potentials, spike rates and per-step features inside the block.

        The latest forward wins. Gradients flow through everything captured.
        """
        if self._capture is not None:
            raise RuntimeError("capture() is already active on this model")
        cap = Capture()
        nodes = list(self.lif_nodes())
        handles = []

        def make_hook(name: str):
            def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
                per_image = out.flatten(2).mean(dim=2)  # [T, B]
                step = per_image.mean(dim=1)  # [T] (every image has the same number of units)
                cap.step_sample_rates[name] = per_image
                cap.step_spike_rates[name] = step
                cap.spike_rates[name] = step.mean()
            return hook

        for name, node in nodes:
            node.store_v_seq = True
            handles.append(node.register_forward_hook(make_hook(name)))
        self._capture = cap
        try:
            yield cap
        finally:
            self._capture = None
            for h in handles:
                h.remove()
            for _, node in nodes:
                node.store_v_seq = False


@torch.no_grad()
def calibrate_bn(model: SpikformerStudent, batches: Iterable[torch.Tensor],
                 max_batches: int = 8, momentum: float | None = None) -> int:
    """Estimate BatchNorm running statistics from a few batches (train mode, no grad).

    A freshly created model in eval mode fires (almost) no spikes; this makes it fire as in
    training. Returns the number of batches used; restores the previous train/eval mode.
    ``momentum=None`` uses a cumulative average over the batches.
    """
    was_training = model.training
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    old = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = momentum
    model.train()
    n = 0
    try:
        for x in batches:
            if n >= max_batches:
                break
            model.forward_features(x)
            n += 1
    finally:
        for bn, m in zip(bns, old):
            bn.momentum = m
        model.train(was_training)
    if n == 0:
        raise ValueError("calibrate_bn: no batches given")
    log.debug("calibrated %d BatchNorm layers on %d batches", len(bns), n)
    return n
