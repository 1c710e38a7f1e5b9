"""Run one VPR recipe end to end (``vl2spike vpr train --config``); see :mod:`.route_train`."""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vl2spike_ros.data.routes import Route, load_route
from vl2spike_ros.models import create_model, load_weights, save_model, weights_hash
from vl2spike_ros.models.cnn import CNNConfig, PlaceCNN
from vl2spike_ros.train.recipes import warm_start
from vl2spike_ros.train.route_teacher import TeacherTargets, load_teacher, route_targets
from vl2spike_ros.train.route_train import (CNNInfoNCE, LoopContext, RouteSampler, Trainee,
                                            barrier, dist_setup, fit, json_canonical, margin_of)
from vl2spike_ros.train.trainer import _resolve_device
from vl2spike_ros.train.vpr_config import CNN_MODEL, VPRRecipe, recipe_to_dict
from vl2spike_ros.train.vpr_losses import SpikeVPRLoss, SVSWeights
from vl2spike_ros.train.vpr_train import seed_everything
from vl2spike_ros.train.whiten import fit_pca_whitening
from vl2spike_ros.vpr.descriptors import POOLED, SPATIAL, preprocess
from vl2spike_ros.vpr.evaluation import evaluate_aligned
from vl2spike_ros.vpr.place import DescriptorSettings, PlaceDescriptor
from vl2spike_ros.vpr.whitening import Whitening, fit_whitening

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
TEACHER_CACHE = "teacher_cache"
DESCRIBE_BATCH = 128


@dataclass
class Trained:
    """What :func:`run_recipe` hands to the save step."""

    model: nn.Module
    x: torch.Tensor                    # preprocessed training frames [M, C, H, W]
    route: Route
    targets: TeacherTargets | None
    weights: SVSWeights | None         # loss weights used (None: CNN InfoNCE)
    history: list[dict]


@dataclass
class RecipeResult:
    """The trained network (every rank) and the saved weights' metadata (rank 0, else {})."""

    model: nn.Module
    meta: dict[str, Any]


def build_model(recipe: VPRRecipe) -> nn.Module:
    """Build the network to train (fresh, or warm-started from ``model.init_from``)."""
    m = recipe.model
    if m.kind == CNN_MODEL:
        model = PlaceCNN(CNNConfig())
        if m.init_from:
            src = load_weights(m.init_from)
            if not isinstance(src, PlaceCNN) or src.config != model.config:
                raise ValueError(f"model.init_from {m.init_from}: not a {model.config.name} CNN")
            model.load_state_dict(src.state_dict())
        return model
    over = dict(m.overrides)
    if m.train_descriptor == SPATIAL:
        over["descriptor_dim"] = m.token_dim
    elif m.train_descriptor != POOLED:
        raise ValueError(f"model.train_descriptor must be 'spatial' or 'pooled', got "
                         f"{m.train_descriptor!r}")
    model = create_model(m.variant, **over)
    if m.init_from:
        warm_start(model, m.init_from)
    return model


def loss_weights(recipe: VPRRecipe, route: Route, has_teacher: bool) -> SVSWeights:
    """Return the loss weights: the recipe's, InfoNCE off without place labels."""
    w = recipe.loss or (SVSWeights() if has_teacher else SVSWeights(nce=1.0))
    if not route.labeled:
        if not has_teacher:
            raise ValueError("the route has no place labels (one traversal) and the recipe no "
                             "teacher: nothing to learn from. Set teacher.kind (openclip, proxy "
                             "or place_cnn), or give two or more traversals with labels")
        if w.nce:
            log.info("no place labels: InfoNCE off, SVS terms only")
            w = dataclasses.replace(w, nce=0.0)
    return w


def build_loss(recipe: VPRRecipe, model: nn.Module, route: Route,
               targets: TeacherTargets | None) -> tuple[nn.Module, SVSWeights | None]:
    """Return the trainable loss module for ``model`` and the SVS weights it uses."""
    cfg = recipe.optim
    if recipe.model.kind == CNN_MODEL:
        if not route.labeled:
            raise ValueError("a CNN is trained with InfoNCE: it needs place labels (two or "
                             "more traversals)")
        return CNNInfoNCE(cfg.temperature, margin_of(route, cfg)), None
    w = loss_weights(recipe, route, targets is not None)
    spatial = recipe.model.train_descriptor == SPATIAL
    loss = SpikeVPRLoss(model.config.embed_dim, cfg.temperature, margin_of(route, cfg), None,
                        targets.dim if targets is not None else 0, w,
                        targets.grid_dim if targets is not None else 0,
                        model.config.descriptor_dim if spatial else 0)
    return loss, w


@torch.no_grad()
def describe(place: PlaceDescriptor, x: torch.Tensor, device) -> np.ndarray:
    """Descriptors ``[N, D]`` of preprocessed ``[N, C, H, W]`` (``place`` left in eval mode)."""
    place.eval()
    out = [place(x[s:s + DESCRIBE_BATCH].to(device)).float().cpu()
           for s in range(0, len(x), DESCRIBE_BATCH)]
    return torch.cat(out).numpy()


def fit_post(place: PlaceDescriptor, x: torch.Tensor, route: Route, recipe: VPRRecipe,
             device) -> tuple[Whitening | None, dict]:
    """Fit the whitening of ``place`` (raw) on the training frames; return it and a report."""
    w = recipe.whitening
    kind = ("learned" if route.labeled else "pca") if w.kind == "auto" else w.kind
    if kind == "none":
        return None, {"method": "none"}
    d = describe(place, x, device)
    if kind == "learned":
        if not route.labeled:
            raise ValueError("whitening.kind learned needs place labels; use pca (label-free)")
        ia, ib = route.pairs()
        white = fit_whitening(d[ia], d[ib], w.dim, w.shrink)
        report = {"method": "learned whitening (Radenovic et al. 2019), closed form",
                  "fitted_on_pairs": len(ia)}
    else:
        white = fit_pca_whitening(d, w.dim, w.shrink)
        report = {"method": "PCA-whitening of the training frames' descriptors (no labels)",
                  "fitted_on_frames": len(d)}
    report.update({"dim": white.out_dim, "shrink": w.shrink})
    if route.val is not None:
        va, vb = (_prep(place, v) for v in route.val)
        report["val_r1_raw"] = val_recall(place, va, vb, device)
        report["val_r1_whitened"] = val_recall(place.with_whitening(white), va, vb, device)
    return white, report


def val_recall(place: PlaceDescriptor, va: torch.Tensor, vb: torch.Tensor, device) -> dict:
    """R@1 at +-1 frame between aligned validation frames, both directions (percent).

    ``place`` is left in eval mode.
    """
    da, db = describe(place, va, device), describe(place, vb, device)
    ab = evaluate_aligned(da @ db.T, tolerances=(1,), ns=(1,))["tol1"]["recall"]["r1"]
    ba = evaluate_aligned(db @ da.T, tolerances=(1,), ns=(1,))["tol1"]["recall"]["r1"]
    return {"val_r1_s2w": round(ab, 2), "val_r1_w2s": round(ba, 2)}


def _prep(place: PlaceDescriptor, images: np.ndarray) -> torch.Tensor:
    s = place.settings
    return preprocess(images, s.img_size, s.in_chans, s.input_norm)


def _targets(recipe: VPRRecipe, route: Route, model: nn.Module, out: Path, device,
             rank: int, world: int) -> TeacherTargets | None:
    """Teacher targets (rank 0 fills the cache first, the other ranks read it)."""
    t = recipe.teacher
    if t.kind == "none":
        return None
    grid = tuple(model.config.grid_size)
    cache = t.cache_dir or str(out / TEACHER_CACHE)
    teacher = load_teacher(t, str(device))
    if rank != 0:
        barrier(world)
    tg = route_targets(teacher, route, grid, cache, t.batch_size, str(device),
                       recipe.progress and rank == 0)
    if rank == 0:
        barrier(world)
    return tg


def _val_fn(place: PlaceDescriptor, route: Route, device):
    """Per-epoch validation recall (the place model goes back to training mode), or None."""
    if route.val is None:
        return None
    va, vb = (_prep(place, v) for v in route.val)

    def fn() -> dict:
        out = val_recall(place, va, vb, device)
        place.train()
        return out
    return fn


def run_recipe(recipe: VPRRecipe, out: str | Path, resume: bool = False) -> RecipeResult:
    """Train per ``recipe`` into the folder ``out``; return the model and its metadata."""
    t0, out = time.time(), Path(out)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    rank, world, device = dist_setup(_resolve_device(recipe.device))
    seed_everything(recipe.optim.seed)
    model = build_model(recipe)
    cfg = model.config
    route = load_route(list(recipe.data.paths), cfg.img_size, recipe.data,
                       recipe.optim.pos_tolerance)
    x = preprocess(route.images, cfg.img_size, cfg.in_chans, recipe.model.norm)
    targets = _targets(recipe, route, model, out, device, rank, world)
    loss, weights = build_loss(recipe, model, route, targets)
    trainee = Trainee(model, loss).to(device)
    mode = recipe.model.train_descriptor if recipe.model.kind != CNN_MODEL else POOLED
    place = PlaceDescriptor(model, DescriptorSettings.for_backbone(model, mode, recipe.model.norm))
    ctx = LoopContext(device, out, json_canonical(recipe_to_dict(recipe)), resume, recipe.bf16,
                      recipe.progress, recipe.tensorboard, rank, world,
                      _val_fn(place, route, device))
    history = fit(trainee, RouteSampler(x, route, targets, recipe.optim.batch_size,
                                        recipe.optim.shift_px), recipe.optim, ctx)
    if world > 1:   # BN running statistics drift per rank: take rank 0's
        for b in model.buffers():
            dist.broadcast(b.data, 0)
    meta: dict[str, Any] = {}
    if rank == 0:
        meta = _save(recipe, Trained(model, x, route, targets, weights, history), out, device,
                     time.time() - t0)
    barrier(world)
    return RecipeResult(model, meta)


def _save(recipe: VPRRecipe, run: Trained, out: Path, device,
          seconds: float) -> dict[str, Any]:
    """Fit the post-processing, then write ``out/model.safetensors`` (+ .json)."""
    model, x, route, targets = run.model, run.x, run.route, run.targets
    place = PlaceDescriptor(model, DescriptorSettings.for_backbone(
        model, recipe.model.descriptor, recipe.model.norm))
    white, report = fit_post(place, x, route, recipe, device)
    labels = "place labels" if route.labeled else "no place labels"
    default = ("cnn_route" if recipe.model.kind == CNN_MODEL else
               "spikformer_label_free" if not route.labeled else "spikformer_route")
    meta = {"name": recipe.model.name or default, "recipe": recipe_to_dict(recipe),
            "history": run.history, "train_seconds": round(seconds, 1),
            "data": {"kind": route.kind, "labels": labels, "frames": int(len(route.images)),
                     "paths": [t.path for t in route.traversals], **route.info},
            "loss": _loss_text(run.weights, targets),
            "vpr": {"descriptor": recipe.model.descriptor, "input_norm": recipe.model.norm,
                    "whitening": report}}
    if targets is not None:
        meta["teacher"] = {"kind": recipe.teacher.kind, "teacher_id": targets.teacher_id,
                           "grid": targets.grid is not None}
    if recipe.model.init_from:
        meta["init_from"] = {"path": str(recipe.model.init_from),
                             "sha256_16": weights_hash(recipe.model.init_from)}
    model = model.cpu().eval()
    save_model(model, out / MODEL_FILE, meta,
               extra_tensors=white.to_tensors() if white is not None else None)
    log.info("saved %s (%s, %.0f s)", out / MODEL_FILE, labels, seconds)
    return meta


def _loss_text(w: SVSWeights | None, targets) -> str:
    if w is None:
        return "InfoNCE (positives: same place in another traversal)"
    terms = {"nce": "InfoNCE", "cos": "SVS global cosine", "tok": "SVS per-token",
             "map": "SVS whole map", "rel": "SVS relational KL", "temporal": "SVS temporal"}
    on = [f"{text} x{getattr(w, k):g}" for k, text in terms.items()
          if getattr(w, k) and (k == "nce" or targets is not None)]
    if targets is not None and targets.grid is None:
        on = [t for t in on if "token" not in t and "map" not in t]
    return ", ".join(on)
