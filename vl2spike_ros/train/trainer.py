"""VL2Spike distillation trainer.

Data, frozen teacher, student + loss modules, AdamW + cosine, CSV/TensorBoard metrics, per-epoch
checkpoints with resume (:mod:`vl2spike_ros.train.checkpoint`), CPU / CUDA (bf16) / DDP.

Entry point: :func:`run_distill` (used by ``vl2spike distill`` and ``vl2spike bench distill``).
Under ``torchrun`` (``WORLD_SIZE>1``) it joins the process group itself (gloo on CPU, nccl on
CUDA); the batch size in the config is per process.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from vl2spike_ros.atomic import write_json_atomic
from vl2spike_ros.train import checkpoint as ckpt
from vl2spike_ros.train.config import DistillConfig, LossConfig, config_to_dict
from vl2spike_ros.data.cifar import ArrayImageDataset, ImageArray
from vl2spike_ros.train.distill_data import DistillData, build_data
from vl2spike_ros.train.features import cached_features
from vl2spike_ros.train.grad_terms import (
    clip_scales, clip_stats, group_terms, mean_grad_norms, scaled_total, term_grad_norms,
)
from vl2spike_ros.train.metrics_log import MetricsLog
from vl2spike_ros.train.teachers import CLIP_LOGIT_SCALE, build_teacher
from vl2spike_ros.train.losses import (
    LogitKDLoss, SPLLoss, SVSAlignLoss, SVSTemporalLoss, zero_shot_logits,
)

log = logging.getLogger(__name__)

LOG_EVERY_STEPS = 10  # train_log.csv / TensorBoard row every this many optimiser steps
GRAD_LOG_FILE = "grad_norms.csv"  # per-term gradient norms (optim.grad_norm_every)
ENERGY_IMAGES = 32    # test images the final energy estimate is measured on


@dataclass
class DistillResult:
    student: nn.Module
    metrics: dict[str, Any] = field(default_factory=dict)


class DistillModule(nn.Module):
    """Student + trainable loss modules; ``forward`` returns the dict of weighted loss terms."""

    def __init__(self, student: nn.Module, cfg: LossConfig, teacher_dim: int,
                 text_spl: torch.Tensor | None, text_kd: torch.Tensor | None, logit_scale: float):
        super().__init__()
        self.student, self.cfg, self.logit_scale = student, cfg, logit_scale
        d = student.config.embed_dim
        self.losses = nn.ModuleDict()
        if cfg.kd.enabled:
            self.losses["kd"] = LogitKDLoss(cfg.kd)
            self.register_buffer("text_kd", text_kd.float())
        if cfg.svs_align.enabled:
            self.losses["svs_align"] = SVSAlignLoss(cfg.svs_align, d, teacher_dim)
        if cfg.svs_temporal.enabled:
            self.losses["svs_temporal"] = SVSTemporalLoss(cfg.svs_temporal)
        if cfg.spl.enabled:
            self.losses["spl"] = SPLLoss(cfg.spl, text_spl, d)

    def forward(self, x: torch.Tensor, y: torch.Tensor, tfeat: torch.Tensor | None,
                progress: float) -> dict[str, torch.Tensor]:
        st, L = self.student, self.losses
        use_cap = "svs_temporal" in L
        with (st.capture() if use_cap else contextlib.nullcontext()) as cap:
            tokens = st.forward_features(x)
        feat = st.pool(tokens)
        logits = st.head(feat)
        terms = {"ce": self.cfg.ce_weight * F.cross_entropy(
            logits.float(), y, label_smoothing=self.cfg.label_smoothing)}
        if "kd" in L:
            t_logits = zero_shot_logits(tfeat, self.text_kd, self.logit_scale)
            terms.update(_sub(L["kd"](logits, t_logits)))
        if "svs_align" in L:
            terms.update(_sub(L["svs_align"](feat, tfeat)))
        if use_cap:
            rates = cap.step_sample_rates if self.cfg.svs_temporal.rate_granularity == "sample" \
                else cap.step_spike_rates
            terms.update(_sub(L["svs_temporal"](cap.step_features, cap.v_seq, rates, progress)))
        if "spl" in L:
            t_logits = zero_shot_logits(tfeat, L["spl"].text_emb, self.logit_scale)
            terms.update(_sub(L["spl"](feat, y, logits, t_logits)))
        terms["total"] = sum(terms.values())
        terms["_acc"] = (logits.argmax(-1) == y).float().mean().detach()
        return terms


def _sub(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in d.items() if k != "total"}


# ----------------------------------------------------------------------------- setup helpers
def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def _dist_init(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group when launched with WORLD_SIZE>1; returns (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    return rank, world, device


def _needs_teacher(cfg: LossConfig) -> bool:
    return cfg.kd.enabled or cfg.svs_align.enabled or cfg.spl.enabled


def make_scheduler(opt, total_steps: int, steps_per_epoch: int,
                   cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up (``warmup_epochs``) then cosine decay to ``min_lr_ratio``."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _param_groups(module: nn.Module, wd: float) -> list[dict]:
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


_TEACHERS: dict[tuple, Any] = {}


@dataclass
class _TeacherSide:
    teacher: Any = None
    feats_train: torch.Tensor | None = None
    text_spl: torch.Tensor | None = None
    text_kd: torch.Tensor | None = None
    dim: int = 0


def _prepare_teacher(cfg: DistillConfig, data: DistillData, device: torch.device,
                     show: bool) -> _TeacherSide:
    tc = cfg.teacher
    if not _needs_teacher(cfg.loss):
        return _TeacherSide()
    if tc.kind == "none":
        raise ValueError("loss terms kd/svs_align/spl need a teacher; teacher.kind is 'none'")
    key = (tc.kind, tc.name, tc.pretrained, tc.path, tc.model_config, str(device))
    if key not in _TEACHERS:  # frozen, so one instance can serve several runs in a process
        _TEACHERS.clear()
        _TEACHERS[key] = build_teacher(tc.kind, tc.name, tc.pretrained, tc.path, str(device),
                                       tc.model_config)
    teacher = _TEACHERS[key]
    side = _TeacherSide(teacher=teacher)
    side.text_spl = teacher.class_embeddings(data.classes, tc.templates).to(device)
    kd_templates = tc.kd_templates or tc.templates  # empty: KD uses the SPL prompt ensemble
    side.text_kd = teacher.class_embeddings(data.classes, kd_templates).to(device)
    side.dim = int(side.text_spl.shape[1])
    if not tc.online:
        side.feats_train = cached_features(teacher, data.train, tc.cache_dir, device=str(device),
                                           progress=show).to(device)
    return side


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(student: nn.Module, data: ImageArray, batch_size: int, device: torch.device,
             rate_batches: int = 4) -> dict[str, float]:
    """Top-1 on ``data`` and the mean firing rate over LIF layers (first ``rate_batches``)."""
    was = student.training
    student.eval()
    correct, rates = 0, []
    loader = DataLoader(ArrayImageDataset(data, augment=False), batch_size=batch_size)
    for i, (x, y, _) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        if i < rate_batches:
            with student.capture() as cap:
                logits = student.forward_head(student.forward_features(x))
            rates.append(torch.stack(list(cap.spike_rates.values())).float().mean().item())
        else:
            logits = student(x)
        correct += int((logits.argmax(-1) == y).sum())
    student.train(was)
    return {"top1": correct / max(1, len(data)), "firing_rate": sum(rates) / max(1, len(rates))}


def _energy(student: nn.Module, data: ImageArray, device: torch.device) -> dict[str, Any]:
    try:
        from vl2spike_ros.energy import student_energy
    except ImportError:
        log.warning("vl2spike_ros.energy not available; energy not reported")
        return {}
    n = min(ENERGY_IMAGES, len(data))
    x = torch.stack([ArrayImageDataset(data)[i][0] for i in range(n)]).to(device)
    student.eval()
    e = student_energy(student, x)
    return {"energy_mj": float(e["energy_mj"]), "energy_firing_rate": float(e["firing_rate"])}


# ----------------------------------------------------------------------------- main loop
_Logger = MetricsLog  # rank-0 metrics sink: train_log.csv + tb/


def _make_loader(ds, sampler: DistributedSampler, epoch: int, skip_batches: int, bs: int,
                 workers: int) -> DataLoader:
    sampler.set_epoch(epoch)
    ds.set_epoch(epoch)
    order = list(sampler)[skip_batches * bs:]
    return DataLoader(ds, batch_size=bs, sampler=order, drop_last=True, num_workers=workers)


@dataclass
class _Run:
    """Everything one training run holds (built by :func:`_setup`)."""

    cfg: DistillConfig
    out: Path
    rank: int
    world: int
    device: torch.device
    data: DistillData
    side: _TeacherSide
    student: nn.Module
    module: DistillModule
    train_mod: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    ds: ArrayImageDataset
    sampler: DistributedSampler
    spe: int
    total: int
    step: int = 0
    logger: Any = None
    grad_log: Any = None  # grad_norms.csv sink (rank 0; optim.grad_norm_every)


def _setup(cfg: DistillConfig, out: Path, resume: bool) -> _Run:
    from vl2spike_ros.models import create_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, device = _dist_init(_resolve_device(cfg.device))
    data = build_data(cfg.data, cfg.seed)
    side = _prepare_teacher(cfg, data, device, rank == 0 and cfg.progress)
    torch.manual_seed(cfg.seed)  # identical init on every rank
    student = create_model(cfg.model, **{**cfg.model_overrides, "num_classes": len(data.classes)})
    scale = cfg.teacher.logit_scale or getattr(side.teacher, "logit_scale", CLIP_LOGIT_SCALE)
    module = DistillModule(student, cfg.loss, side.dim, side.text_spl, side.text_kd,
                           scale).to(device)
    o = cfg.optim
    opt = torch.optim.AdamW(_param_groups(module, o.weight_decay), lr=o.lr)
    ds = ArrayImageDataset(data.train, augment=cfg.data.augment, pad=cfg.data.pad, seed=cfg.seed)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    spe = len(sampler) // o.batch_size
    if spe == 0:
        raise ValueError(f"batch_size {o.batch_size} larger than the {len(sampler)} images "
                         "per process")
    total = o.epochs * spe if not o.max_steps else min(o.max_steps, o.epochs * spe)
    sched = make_scheduler(opt, o.epochs * spe, spe, o)
    step = 0
    if resume and ckpt.read_state_json(out) is not None:
        info = ckpt.load_checkpoint(out, student, module.losses, opt, sched, str(device))
        step = int(info["step"])
    elif out.joinpath(ckpt.STATE_JSON).exists() and rank == 0:
        log.warning("%s holds a checkpoint; starting fresh (pass --resume to continue)", out)
    train_mod = module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_mod = DDP(module, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=True)
    run = _Run(cfg, out, rank, world, device, data, side, student, module, train_mod, opt, sched,
               ds, sampler, spe, total, step, _Logger(out, rank == 0, cfg.tensorboard))
    if o.grad_norm_every:
        run.grad_log = _Logger(out, rank == 0, tensorboard=False)
        run.grad_log.path = out / GRAD_LOG_FILE
    return run


def _train_epoch(r: _Run) -> None:
    """Optimizer steps from ``r.step`` to the end of its epoch (or ``r.total``)."""
    o, show = r.cfg.optim, r.rank == 0 and r.cfg.progress
    epoch, skip = divmod(r.step, r.spe)
    loader = _make_loader(r.ds, r.sampler, epoch, skip, o.batch_size, r.cfg.data.num_workers)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{o.epochs}", disable=None if show else True,
               mininterval=5)
    amp = r.device.type == "cuda" and r.cfg.bf16
    r.module.train()
    for x, y, idx in bar:
        x, y = x.to(r.device, non_blocking=True), y.to(r.device, non_blocking=True)
        tfeat = _teacher_feats(r.side, x, idx, r.device)
        with torch.autocast(r.device.type, dtype=torch.bfloat16, enabled=amp):
            terms = r.train_mod(x, y, tfeat, r.step / r.spe)
        r.opt.zero_grad(set_to_none=True)
        row_extra = _backward(r, terms)
        r.opt.step()
        r.sched.step()
        r.step += 1
        row = {k.lstrip("_"): float(v.detach()) for k, v in terms.items()}
        row.update(row_extra, lr=r.sched.get_last_lr()[0])
        if show:
            bar.set_postfix(loss=f"{row['total']:.3f}", acc=f"{row['acc']:.2f}")
        if r.step % LOG_EVERY_STEPS == 0 or r.step == r.total:
            r.logger.log(r.step, row)
        if r.step >= r.total:
            break


def _backward(r: _Run, terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Back-propagate the step's loss with the configured clipping; log per-term grad norms.

    Returns extra numbers for the metrics row (per-group clip factors in ``per_term`` mode).
    """
    o = r.cfg.optim
    if o.grad_norm_every and r.step % o.grad_norm_every == 0:
        norms = term_grad_norms(terms, r.student.parameters())  # student only, not projectors
        r.grad_log.log(r.step, norms)
        if r.logger.tb is not None:
            for k, v in norms.items():
                r.logger.tb.add_scalar(f"grad_norm/{k}", v, r.step)
    if o.clip_mode == "per_term" and o.grad_clip > 0:
        groups = group_terms(terms)
        scales = clip_scales(groups, r.module.parameters(), o.grad_clip)
        scaled_total(groups, scales).backward()
        return {f"clip_{g}": v for g, v in scales.items()}
    terms["total"].backward()
    if o.grad_clip > 0:  # the norm before clipping shows how often the clip binds
        return {"grad_norm": float(nn.utils.clip_grad_norm_(r.module.parameters(), o.grad_clip))}
    return {}


def run_distill(cfg: DistillConfig, out: str | Path, resume: bool = False) -> DistillResult:
    """Train a student per ``cfg``; return the student and its final metrics.

    Writes ``out/model.safetensors`` (+ .json), checkpoints, ``train_log.csv``, ``tb/`` and
    ``metrics.json``.
    """
    t_start = time.time()
    r = _setup(cfg, Path(out), resume)
    meta = {"config": config_to_dict(cfg), "classes": list(r.data.classes),
            "teacher_id": getattr(r.side.teacher, "teacher_id", None)}
    while r.step < r.total:
        _train_epoch(r)
        if r.rank == 0:
            info = {"step": r.step, "epoch": r.step / r.spe, "total_steps": r.total,
                    "steps_per_epoch": r.spe}
            ckpt.save_checkpoint(r.out, r.student, r.module.losses, r.opt, r.sched, info, meta)
    if r.world > 1:  # BN running stats drift per rank after the last step: take rank 0's
        for b in r.module.buffers():
            dist.broadcast(b.data, 0)
    metrics = _finish(r, t_start)
    if r.world > 1:
        dist.barrier()
    return DistillResult(student=r.student, metrics=metrics)


def _teacher_feats(side: _TeacherSide, x, idx, device) -> torch.Tensor | None:
    if side.teacher is None:
        return None
    if side.feats_train is None:
        return side.teacher.encode_image(x)
    return side.feats_train[idx.to(device)]


def _finish(r: _Run, t_start: float) -> dict[str, Any]:
    """Return the final metrics of run ``r`` and close its logger.

    Rank 0: BN calibration, test/val top-1, energy, written to ``metrics.json`` and TensorBoard.
    """
    cfg, data, student, device = r.cfg, r.data, r.student, r.device
    metrics: dict[str, Any] = {"steps": r.step, "train_images": len(data.train)}
    if r.rank == 0:
        if cfg.bn_calibrate_batches:
            _calibrate(student, data.train, cfg, device)
        ev = evaluate(student, data.test, cfg.eval_batch_size, device)
        metrics.update({"test_top1": ev["top1"], "firing_rate": ev["firing_rate"]})
        if cfg.eval_val and data.val is not None and len(data.val):
            metrics["val_top1"] = evaluate(student, data.val, cfg.eval_batch_size, device)["top1"]
        metrics.update(_energy(student, data.test, device))
        if (r.out / GRAD_LOG_FILE).is_file():
            metrics["grad_norm_mean"] = mean_grad_norms(r.out / GRAD_LOG_FILE)
        if r.logger.path.is_file() and cfg.optim.grad_clip > 0:
            metrics.update(clip_stats(r.logger.path, cfg.optim.grad_clip))
        metrics["wall_s"] = round(time.time() - t_start, 1)
        if r.logger.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    r.logger.tb.add_scalar(f"final/{k}", v, r.step)
        write_json_atomic(r.out / "metrics.json", metrics)
        log.info("distill done: %s",
                 {k: metrics[k] for k in ("test_top1", "firing_rate", "wall_s")})
    r.logger.close()
    return metrics


def _calibrate(student, train: ImageArray, cfg: DistillConfig, device) -> None:
    from vl2spike_ros.models import calibrate_bn

    loader = DataLoader(ArrayImageDataset(train, augment=False), batch_size=cfg.optim.batch_size,
                        shuffle=False)
    calibrate_bn(student, (x.to(device) for x, _, _ in loader),
                 max_batches=cfg.bn_calibrate_batches)
