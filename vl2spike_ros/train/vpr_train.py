"""Contrastive (InfoNCE) training of place descriptors on frame-aligned traversals.

Positives: the same place (+-``pos_tolerance`` frames) in the other traversal; in-batch
negatives, excluding places within ``exclude_radius`` frames (near-duplicates). Inputs are
preprocessed tensors ``[N, C, H, W]`` (see :func:`vl2spike_ros.vpr.descriptors.preprocess`).
Checkpoints every epoch in the common format of :mod:`vl2spike_ros.train.checkpoint` and
resumes from them.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vl2spike_ros.train import checkpoint

log = logging.getLogger(__name__)

# loss_fn(model, xa [B,C,H,W], xp [B,C,H,W], pa [B], pp [B]) -> dict of named terms + "total"
LossFn = Callable[..., dict]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07
    pos_tolerance: int = 1
    exclude_radius: int = 3
    shift_px: float = 3.0
    seed: int = 0


def augment(x: torch.Tensor, gen: torch.Generator, shift_px: float = 3.0) -> torch.Tensor:
    """Random translation/scale, contrast/brightness and noise on ``[B, C, H, W]``."""
    b, _, h, w = x.shape
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    scale = 1.0 + (u(b) - 0.5) * 0.16
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = (u(b) - 0.5) * 2 * shift_px * 2 / w
    theta[:, 1, 2] = (u(b) - 0.5) * 2 * shift_px * 0.5 * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    x = x * (0.75 + 0.5 * u(b, 1, 1, 1)) + (u(b, 1, 1, 1) - 0.5) * 0.4
    return x + 0.05 * torch.randn(x.shape, generator=gen)


def info_nce(za: torch.Tensor, zp: torch.Tensor, pa: torch.Tensor, pp: torch.Tensor,
             temperature: float, exclude_radius: float) -> torch.Tensor:
    """Symmetric InfoNCE on L2-normalised ``[B, D]`` pairs.

    ``pa/pp``: place indices ``[B]`` or positions ``[B, 2]``; in-batch pairs within
    ``exclude_radius`` of each other (frames or metres) are not used as negatives.
    """
    logits = za.float() @ zp.float().t() / temperature
    if pa.ndim == 2:
        near = torch.cdist(pa.double(), pp.double()) <= exclude_radius
    else:
        near = (pa[:, None] - pp[None, :]).abs() <= exclude_radius
    eye = torch.eye(len(za), dtype=torch.bool, device=za.device)
    logits = logits.masked_fill(near & ~eye, -1e4)
    target = torch.arange(len(za), device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def contrastive_loss(cfg: TrainConfig) -> LossFn:
    """Plain InfoNCE on ``model.descriptor``."""
    def fn(model, xa, xp, pa, pp) -> dict:
        z = model.descriptor(torch.cat([xa, xp]))
        loss = info_nce(z[:len(xa)], z[len(xa):], pa, pp, cfg.temperature, cfg.exclude_radius)
        return {"nce": loss, "total": loss}
    return fn


def sample_batch(a: torch.Tensor, b: torch.Tensor, n: int, cfg: TrainConfig,
                 gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Anchors from a random traversal, positives from the other one (+-pos_tolerance)."""
    idx = torch.randperm(n, generator=gen)[:cfg.batch_size]
    jit = torch.randint(-cfg.pos_tolerance, cfg.pos_tolerance + 1, (len(idx),), generator=gen)
    pidx = (idx + jit).clamp(0, n - 1)
    flip = torch.rand(len(idx), generator=gen) < 0.5
    xa = torch.where(flip[:, None, None, None], b[idx], a[idx])
    xp = torch.where(flip[:, None, None, None], a[pidx], b[pidx])
    return (augment(xa, gen, cfg.shift_px), augment(xp, gen, cfg.shift_px), idx, pidx)


class WithLoss(nn.Module):
    """A network and its trainable loss module (e.g. an SVS projector) as one trainable unit.

    One optimiser covers both (network parameters first); checkpoints keep the network as a
    weights file and the loss module in the trainer state.
    """

    def __init__(self, model: nn.Module, loss: nn.Module):
        super().__init__()
        self.model, self.loss = model, loss
        self.config = model.config

    def loss_fn(self, _self, xa, xp, pa, pp) -> dict:
        """Apply the loss module to the network (a :data:`LossFn`)."""
        return self.loss(self.model, xa, xp, pa, pp)


def _parts(trainee: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Split what :func:`train_descriptor` trains into (network, trainable loss state)."""
    if isinstance(trainee, WithLoss):
        return trainee.model, trainee.loss
    return trainee, nn.Module()


def _resume(ckpt: Path | None, model: nn.Module, opt, sched, cfg: TrainConfig) -> tuple[int, list]:
    """Return (first epoch, history so far) from the checkpoint folder ``ckpt`` (fresh: 0, [])."""
    info = checkpoint.read_state_json(ckpt) if ckpt is not None else None
    if info is None:
        return 0, []
    if info.get("config") != dataclasses.asdict(cfg):
        raise ValueError(f"checkpoint {ckpt} was written with other settings "
                         f"{info.get('config')}; delete it or train with the same settings")
    net, aux = _parts(model)
    checkpoint.load_checkpoint(ckpt, net, aux, opt, sched)
    log.info("resumed %s at epoch %d", ckpt, info["epoch"])
    return int(info["epoch"]), list(info["history"])


def _save(ckpt: Path, model: nn.Module, opt, sched, history: list[dict], cfg: TrainConfig) -> None:
    net, aux = _parts(model)
    info = {"epoch": history[-1]["epoch"], "history": history, "config": dataclasses.asdict(cfg)}
    checkpoint.save_checkpoint(ckpt, net, aux, opt, sched, info)


def optimise_epoch(step_terms: Callable[[], dict], opt: torch.optim.Optimizer, sched,
                   steps: int, desc: str, show: bool = True) -> dict[str, float]:
    """Run ``steps`` optimiser steps of ``step_terms() -> {name: loss tensor, "total": ...}``.

    Shared by every VPR training loop; returns the mean of each named term over the epoch.
    The progress bar shows only on a terminal (and only when ``show``).
    """
    sums: dict[str, float] = {}
    for _ in tqdm(range(steps), desc=desc, leave=False, mininterval=5,
                  disable=None if show else True):
        terms = step_terms()
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        sched.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) / steps
    return sums


def train_descriptor(model: torch.nn.Module, trav_a: torch.Tensor, trav_b: torch.Tensor,
                     cfg: TrainConfig, ckpt: str | Path | None = None,
                     loss_fn: LossFn | None = None,
                     val_fn: Callable[[torch.nn.Module], dict] | None = None) -> list[dict]:
    """Train ``model`` (a network or a :class:`WithLoss`) on two aligned traversals.

    ``trav_a``/``trav_b`` are ``[N, C, H, W]``; the checkpoint folder ``ckpt`` is resumed when
    it holds one. Returns the per-epoch history.
    """
    if trav_a.shape != trav_b.shape:
        raise ValueError(f"traversals differ in shape: {tuple(trav_a.shape)} vs "
                         f"{tuple(trav_b.shape)}")
    n = len(trav_a)
    steps = max(1, math.ceil(2 * n / cfg.batch_size))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                            lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps,
                                                pct_start=0.1)
    ckpt = Path(ckpt) if ckpt else None
    start, history = _resume(ckpt, model, opt, sched, cfg)
    loss_fn = loss_fn or contrastive_loss(cfg)
    for epoch in range(start, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        model.train()
        t0 = time.time()
        sums = optimise_epoch(lambda: loss_fn(model, *sample_batch(trav_a, trav_b, n, cfg, gen)),
                              opt, sched, steps, f"epoch {epoch + 1}/{cfg.epochs}")
        rec = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 2), **sums}
        if val_fn is not None:
            rec.update(val_fn(model))
        history.append(rec)
        log.info("epoch %s", rec)
        if ckpt is not None:
            _save(ckpt, model, opt, sched, history, cfg)
    return history


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
