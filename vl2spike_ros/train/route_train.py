"""``vl2spike vpr train --config``: train a place model on any route from a YAML recipe.

Pipeline: load the route (:mod:`vl2spike_ros.data.routes`) at the student's input size ->
teacher targets, cached (:mod:`vl2spike_ros.train.route_teacher`) -> training (InfoNCE where the
route has place labels, SVS against the teacher where there is one; label-free: SVS alone) ->
post-processing fitted on the training frames (learned whitening with labels, PCA-whitening
without) -> ``OUT/model.safetensors`` + ``.json``, loadable by ``map build``, ``eval``,
``replay`` and the node. ``OUT/ckpt/`` holds the per-epoch checkpoint (``--resume``),
``OUT/train_log.csv`` and ``OUT/tb/`` the metrics. CPU, CUDA (bf16 autocast) and torchrun DDP
(one process per device; gloo on CPU, nccl on CUDA; each rank samples its own batches).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vl2spike_ros.data.routes import BAGS, Route
from vl2spike_ros.train import checkpoint
from vl2spike_ros.train.metrics_log import MetricsLog
from vl2spike_ros.train.route_teacher import TeacherTargets
from vl2spike_ros.train.vpr_train import TrainConfig, augment, info_nce, optimise_epoch

log = logging.getLogger(__name__)

CKPT_DIR = "ckpt"


class RouteSampler:
    """Training batches of a route: anchors, one positive each, teacher targets.

    ``x``: preprocessed frames ``[M, C, H, W]``. Labeled: the positive is drawn among the
    anchor's positives (another traversal); unlabeled: a second augmented view of the anchor.
    """

    def __init__(self, x: torch.Tensor, route: Route, targets: TeacherTargets | None,
                 batch_size: int, shift_px: float):
        self.x, self.targets, self.shift_px = x, targets, shift_px
        self.anchors = torch.from_numpy(route.anchors())
        self.positives = route.positives
        coords = route.coords if route.coords is not None else np.arange(len(x), dtype=float)
        self.coords = torch.from_numpy(np.asarray(coords, dtype=np.float64))
        self.batch = min(batch_size, len(self.anchors))

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.anchors) / self.batch))

    def sample(self, gen: torch.Generator, device) -> tuple:
        """Return ``(xa, xp, pa, pp, targets)`` on ``device``; targets (global, grid) or None."""
        ia = self.anchors[torch.randperm(len(self.anchors), generator=gen)[:self.batch]]
        if self.positives is None:
            ip = ia
        else:
            pick = [self.positives[int(i)] for i in ia]
            ip = torch.as_tensor([int(p[int(torch.randint(len(p), (1,), generator=gen))])
                                  for p in pick], dtype=torch.int64)
        xa = augment(self.x[ia], gen, self.shift_px).to(device)
        xp = augment(self.x[ip], gen, self.shift_px).to(device)
        tg = None
        if self.targets is not None:
            (ga, ma), (gp, mp) = self.targets.take(ia, device), self.targets.take(ip, device)
            tg = (torch.cat([ga, gp]), torch.cat([ma, mp]) if ma is not None else None)
        return xa, xp, self.coords[ia].to(device), self.coords[ip].to(device), tg


class CNNInfoNCE(nn.Module):
    """InfoNCE on a CNN's pooled descriptor (no teacher): ``(model, xa, xp, pa, pp, targets)``."""

    def __init__(self, temperature: float, margin: float):
        super().__init__()
        self.temperature, self.margin = temperature, margin

    def forward(self, model, xa, xp, pa, pp, targets=None) -> dict[str, torch.Tensor]:
        z = model.descriptor(torch.cat([xa, xp]))
        loss = info_nce(z[:len(xa)], z[len(xa):], pa, pp, self.temperature, self.margin)
        return {"nce": loss, "total": loss}


class Trainee(nn.Module):
    """Network + trainable loss module; ``forward(batch)`` returns the loss terms (DDP-able)."""

    def __init__(self, model: nn.Module, loss: nn.Module):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, xa, xp, pa, pp, targets=None) -> dict[str, torch.Tensor]:
        return self.loss(self.model, xa, xp, pa, pp, targets)


@dataclass
class LoopContext:
    """Where and how the loop runs (device, ranks, outputs)."""

    device: torch.device
    out: Path
    recipe_json: dict[str, Any]
    resume: bool = False
    bf16: bool = True
    progress: bool = True
    tensorboard: bool = True
    rank: int = 0
    world: int = 1
    val_fn: Callable[[], dict] | None = None


def _resume_state(ctx: LoopContext, trainee: Trainee, opt, sched) -> tuple[int, list[dict]]:
    """Return (first epoch, history): from ``OUT/ckpt`` with ``--resume``, else fresh."""
    ck = ctx.out / CKPT_DIR
    info = checkpoint.read_state_json(ck)
    if info is None:
        if ctx.resume:
            log.warning("--resume: no checkpoint in %s; starting fresh", ck)
        return 0, []
    if not ctx.resume:
        if ctx.rank == 0:
            log.warning("%s holds a checkpoint; starting fresh (pass --resume to continue)", ck)
        return 0, []
    if info.get("recipe") != ctx.recipe_json:
        raise ValueError(f"--resume: the checkpoint in {ck} was written with another recipe; "
                         "train with the same recipe and --data, or delete it")
    checkpoint.load_checkpoint(ck, trainee.model, trainee.loss, opt, sched, str(ctx.device))
    return int(info["epoch"]), list(info["history"])


def fit(trainee: Trainee, sampler: RouteSampler, cfg: TrainConfig,
        ctx: LoopContext) -> list[dict]:
    """Train for ``cfg.epochs``; per-epoch checkpoint, CSV/TensorBoard row; returns history.

    ``cfg.epochs == 0`` trains nothing (e.g. only fit the post-processing of ``init_from``).
    """
    if cfg.epochs <= 0:
        return []
    steps = sampler.steps_per_epoch
    opt = torch.optim.AdamW([p for p in trainee.parameters() if p.requires_grad],
                            lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps,
                                                pct_start=0.1)
    start, history = _resume_state(ctx, trainee, opt, sched)
    runner = trainee
    if ctx.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        dev = [ctx.device.index] if ctx.device.type == "cuda" else None
        runner = DDP(trainee, device_ids=dev, find_unused_parameters=True)
    logger = MetricsLog(ctx.out, ctx.rank == 0, ctx.tensorboard)
    amp = ctx.device.type == "cuda" and ctx.bf16
    try:
        for epoch in range(start, cfg.epochs):
            gen = torch.Generator().manual_seed((cfg.seed * 1000 + epoch) * ctx.world + ctx.rank)
            trainee.train()
            t0 = time.time()

            def step_terms() -> dict:
                with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=amp):
                    return runner(*sampler.sample(gen, ctx.device))

            sums = optimise_epoch(step_terms, opt, sched, steps, f"epoch {epoch + 1}/{cfg.epochs}",
                                  show=ctx.progress and ctx.rank == 0)
            rec = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 2), **sums,
                   "lr": sched.get_last_lr()[0]}
            if ctx.val_fn is not None and ctx.rank == 0:
                rec.update(ctx.val_fn())
            history.append(rec)
            log.info("epoch %s", rec)
            logger.log((epoch + 1) * steps, {k: v for k, v in rec.items() if k != "epoch"})
            if ctx.rank == 0:
                checkpoint.save_checkpoint(ctx.out / CKPT_DIR, trainee.model, trainee.loss, opt,
                                           sched, {"epoch": epoch + 1, "history": history,
                                                   "recipe": ctx.recipe_json})
    finally:
        logger.close()
    return history


def margin_of(route: Route, cfg: TrainConfig) -> float:
    """In-batch negatives lie beyond this: metres for bags, frames (``exclude_radius``) else."""
    return route.margin if route.kind == BAGS else float(cfg.exclude_radius)


def dist_setup(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the torchrun process group (WORLD_SIZE > 1); returns (rank, world, device)."""
    from vl2spike_ros.train.trainer import _dist_init
    return _dist_init(device)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def json_canonical(d: dict) -> dict:
    """``d`` after a JSON round trip (what a checkpoint's JSON gives back)."""
    return json.loads(json.dumps(d))
