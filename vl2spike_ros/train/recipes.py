"""Nordland training recipes (teacher CNN, Spikformer direct, Spikformer distilled).

Protocol: train on the first ``train_frac`` (:data:`NORDLAND_TRAIN_FRACTION`, 60 %) of Nordland
places, both seasons; the last ``val_frac`` (:data:`VAL_FRACTION`) of that training segment is
held back for monitoring and model choice; the remaining 40 % of the route is the held-out test
segment and is never touched here. How the shipped settings below were chosen:
``docs/VPR_TRAINING.md``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vl2spike_ros.atomic import atomic_path, write_json_atomic
from vl2spike_ros.data.datasets import NORDLAND_TRAIN_FRACTION, load_nordland
from vl2spike_ros.models import (create_model, load_model, read_model_meta, save_model,
                                 weights_hash)
from vl2spike_ros.models.cnn import CNNConfig, PlaceCNN
from vl2spike_ros.models.config import SpikformerConfig
from vl2spike_ros.train.vpr_losses import SpikeVPRLoss, SVSWeights
from vl2spike_ros.train.vpr_train import (TrainConfig, WithLoss, seed_everything,
                                          train_descriptor)
from vl2spike_ros.vpr.descriptors import POOLED, SPATIAL, preprocess
from vl2spike_ros.vpr.evaluation import evaluate_aligned
from vl2spike_ros.vpr.place import DescriptorSettings, PlaceDescriptor, load_place_descriptor

log = logging.getLogger(__name__)

VAL_FRACTION = 0.1  # last 10 % of the training places: validation (never trained on)


@dataclass(frozen=True)
class StudentRecipe:
    """One Spikformer student run, beyond the optimiser settings (:class:`TrainConfig`)."""

    variant: str = "spikformer_vpr"
    descriptor: str = SPATIAL                 # descriptor mode trained (token grid)
    token_dim: int = 8                        # per-token descriptor head width (``spatial``)
    norm: str = "image"                       # input standardisation (teacher must share it)
    init_from: str | Path | None = None       # warm start from these weights
    teacher_path: str | Path | None = None    # CNN teacher: SVS distillation; None: direct
    svs: SVSWeights | None = None             # SVS loss weights (None: ``SVSWeights()``)
    name: str | None = None                   # default spikformer_direct / spikformer_distilled
    train_frac: float = NORDLAND_TRAIN_FRACTION
    val_frac: float = VAL_FRACTION


def nordland_tensors(root: str | Path, split: str = "train",
                     train_frac: float = NORDLAND_TRAIN_FRACTION,
                     img_size=(32, 64), in_chans: int = 1,
                     norm: str = "image") -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed summer and winter tensors ``[N, C, H, W]`` of one split."""
    s, _ = load_nordland(root, "summer", split, train_frac)
    w, _ = load_nordland(root, "winter", split, train_frac)
    return preprocess(s, img_size, in_chans, norm), preprocess(w, img_size, in_chans, norm)


def split_val(a: torch.Tensor, b: torch.Tensor, val_frac: float):
    """Last ``val_frac`` of the training places -> (train_a, train_b, val_a, val_b)."""
    cut = int(round(len(a) * (1 - val_frac)))
    return a[:cut], b[:cut], a[cut:], b[cut:]


def place_tensors(place: PlaceDescriptor, root: str | Path,
                  train_frac: float = NORDLAND_TRAIN_FRACTION
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-split summer and winter tensors, preprocessed as ``place`` expects."""
    s = place.settings
    return nordland_tensors(root, "train", train_frac, s.img_size, s.in_chans, s.input_norm)


@torch.no_grad()
def describe_tensor(place: PlaceDescriptor, x: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Descriptors ``[N, D]`` of preprocessed ``[N, C, H, W]`` (``place`` left in eval mode)."""
    place.eval()
    out = [place(x[s:s + batch_size]) for s in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def val_recall_fn(va: torch.Tensor, vb: torch.Tensor):
    """Return a validation callback on a place descriptor.

    It measures R@1 at +-1 frame in both directions (percent) and puts the place descriptor
    back in training mode.
    """
    def fn(place: PlaceDescriptor) -> dict:
        da, db = describe_tensor(place, va), describe_tensor(place, vb)
        ab = evaluate_aligned(da @ db.T, tolerances=(1,), ns=(1,))["tol1"]["recall"]["r1"]
        ba = evaluate_aligned(db @ da.T, tolerances=(1,), ns=(1,))["tol1"]["recall"]["r1"]
        place.train()
        return {"val_r1_s2w": round(ab, 2), "val_r1_w2s": round(ba, 2)}
    return fn


def train_on_nordland(place: PlaceDescriptor, root, out_ckpt: Path, cfg: TrainConfig,
                      loss_fn=None, train_frac: float = NORDLAND_TRAIN_FRACTION,
                      val_frac: float = VAL_FRACTION,
                      trainee: torch.nn.Module | None = None) -> list[dict]:
    """Train ``trainee`` (default ``place.backbone``) contrastively on the Nordland train split.

    Validation recall is measured through ``place`` (which shares the backbone).
    """
    a, b = place_tensors(place, root, train_frac)
    ta, tb, va, vb = split_val(a, b, val_frac)
    log.info("training on %d places, validating on %d", len(ta), len(va))
    val = val_recall_fn(va, vb)
    return train_descriptor(trainee if trainee is not None else place.backbone, ta, tb, cfg,
                            ckpt=out_ckpt, loss_fn=loss_fn,
                            val_fn=(lambda _trained: val(place)) if len(va) else None)


def train_spikformer(root, out_ckpt: Path, cfg: TrainConfig, recipe: StudentRecipe,
                     teacher=None):
    """Train a Spikformer student with InfoNCE (+ SVS distillation from ``teacher``).

    ``teacher`` is a loaded CNN (``recipe.teacher_path`` is not read here). Returns (model,
    history). The SVS projector is part of the loss and is not saved with the model; its
    parameters are optimised together with the student's.
    """
    spatial = recipe.descriptor == SPATIAL
    over = {"descriptor_dim": recipe.token_dim} if spatial else {}
    model = create_model(recipe.variant, **over)
    place = PlaceDescriptor(model, DescriptorSettings.for_backbone(model, recipe.descriptor,
                                                                   recipe.norm))
    if recipe.init_from is not None:
        warm_start(model, recipe.init_from)
    loss = SpikeVPRLoss(model.config.embed_dim, cfg.temperature, cfg.exclude_radius, teacher,
                        teacher.config.descriptor_dim if teacher is not None else 0,
                        recipe.svs or SVSWeights(),
                        teacher.config.widths[-1] if teacher is not None else 0,
                        model.config.descriptor_dim if spatial else 0)
    holder = WithLoss(model, loss)
    hist = train_on_nordland(place, root, out_ckpt, cfg, loss_fn=holder.loss_fn,
                             train_frac=recipe.train_frac, val_frac=recipe.val_frac,
                             trainee=holder)
    return model.eval(), hist


def warm_start(model, path: str | Path) -> list[str]:
    """Load the weights of ``path`` into ``model``; return the re-initialised tensors' names.

    Only the descriptor head (``desc_proj``) may differ in shape (a wider token head); it then
    keeps its fresh initialisation.
    """
    src_cfg = SpikformerConfig.from_dict(read_model_meta(path)["config"])
    if dataclasses.replace(src_cfg, descriptor_dim=model.config.descriptor_dim) != model.config:
        raise ValueError(f"cannot warm-start {model.config.name} from {path}: the architectures "
                         f"differ beyond the descriptor head ({src_cfg} vs {model.config})")
    state = load_model(path, expected=src_cfg).state_dict()
    own = model.state_dict()
    fresh = [k for k in own if state[k].shape != own[k].shape]
    model.load_state_dict({k: (own[k] if k in fresh else state[k]) for k in own})
    if fresh:
        log.info("warm start from %s; re-initialised %s", path, fresh)
    return fresh


def train_teacher_cnn(root, out: str | Path, cfg: TrainConfig, ckpt_dir: str | Path,
                      train_frac: float = NORDLAND_TRAIN_FRACTION,
                      val_frac: float = VAL_FRACTION, norm: str = "image") -> dict:
    """Train the ANN (CNN) teacher and save it (safetensors + json). Returns a summary."""
    seed_everything(cfg.seed)
    t0 = time.time()
    model = PlaceCNN(CNNConfig())
    place = PlaceDescriptor(model, DescriptorSettings.for_backbone(model, POOLED, norm))
    hist = train_on_nordland(place, root, Path(ckpt_dir) / "teacher_cnn.ckpt", cfg,
                             train_frac=train_frac, val_frac=val_frac)
    info = _train_info("teacher_cnn", cfg, hist, time.time() - t0, train_frac, val_frac)
    info["vpr"] = {"input_norm": norm}
    save_model(model.eval(), out, info)
    return info


def train_student(root, out: str | Path, cfg: TrainConfig, ckpt_dir: str | Path,
                  recipe: StudentRecipe = StudentRecipe()) -> dict:
    """Train a Spikformer directly or distilled and save it to ``out``.

    Distilled (SVS) from the CNN at ``recipe.teacher_path`` when given. Returns the training
    summary (also stored as the weights' metadata). ``recipe.name`` (default
    ``spikformer_direct`` / ``spikformer_distilled``) names the checkpoint in ``ckpt_dir`` and
    the run in the weights metadata.
    """
    seed_everything(cfg.seed)
    teacher_place = load_place_descriptor(recipe.teacher_path) if recipe.teacher_path else None
    if teacher_place is not None and teacher_place.settings.input_norm != recipe.norm:
        raise ValueError(f"teacher {recipe.teacher_path} was trained on "
                         f"{teacher_place.settings.input_norm!r} inputs, the student would get "
                         f"{recipe.norm!r}: train both with one norm")
    teacher = teacher_place.backbone if teacher_place is not None else None
    name = recipe.name or ("spikformer_distilled" if teacher is not None else "spikformer_direct")
    t0 = time.time()
    model, hist = train_spikformer(root, Path(ckpt_dir) / f"{name}.ckpt", cfg, recipe, teacher)
    info = _train_info(name, cfg, hist, time.time() - t0, recipe.train_frac, recipe.val_frac)
    info["vpr"] = {"descriptor": recipe.descriptor, "input_norm": recipe.norm}
    if recipe.init_from is not None:
        info["init_from"] = str(recipe.init_from)
    if recipe.svs is not None:
        info["svs_weights"] = dataclasses.asdict(recipe.svs)
        if teacher is not None:
            info["loss"] = _loss_text(recipe.svs)
    if recipe.teacher_path:
        info["teacher"] = {"path": str(recipe.teacher_path),
                           "sha256_16": weights_hash(recipe.teacher_path),
                           "kind": "PlaceCNN (ANN), InfoNCE on the same training segment"}
    save_model(model, out, info)
    return info


def _loss_text(svs) -> str:
    """Human-readable list of the active SVS terms of ``svs`` (an ``SVSWeights``)."""
    terms = {"map": "whole-map alignment to the teacher's conv map",
             "tok": "per-token alignment", "cos": "global cosine alignment",
             "rel": "relational KL" + (" within each view" if svs.rel_within_view else ""),
             "temporal": "warm-started temporal consistency"}
    on = [f"{text} x{getattr(svs, k):g}" for k, text in terms.items() if getattr(svs, k)]
    nce = (f"InfoNCE x{svs.nce:g} (positives: same place other season +-pos_tolerance) + "
           if svs.nce else "no InfoNCE; ")
    return nce + "SVS: " + (", ".join(on) or "none")


def _train_info(name, cfg, hist, seconds, train_frac, val_frac) -> dict:
    return {"name": name, "train_config": dataclasses.asdict(cfg), "history": hist,
            "train_seconds": round(seconds, 1),
            "data": {"dataset": "Nordland summer+winter (64x32)", "train_places_frac": train_frac,
                     "val_frac_of_train": val_frac,
                     "held_out": f"last {1 - train_frac:.0%} of places, never used in training"},
            "loss": "InfoNCE (positives: same place other season +-pos_tolerance)"
                    + (" + SVS (per-token and global alignment, relational KL, "
                       "warm-started temporal)" if "distilled" in name else "")}


# The settings the shipped weights were trained with (vl2spike_ros/assets/vpr_default.md);
# why these values: docs/VPR_TRAINING.md. The weight factory reads them from the recipes
# config/vpr/{teacher,direct,control,distilled}.yaml; test_vpr_recipes.py checks that those
# parse to exactly these values.
TEACHER_CFG = TrainConfig(epochs=15)
DIRECT_CFG = TrainConfig(epochs=6, lr=3e-3)
DISTILL_CFG = TrainConfig(epochs=24, lr=1e-3, seed=1)  # control and distilled, warm-started
# Distilled student and its equal-budget control: 64 channels per token, the teacher's map width,
# so the per-token descriptor head is also the SVS projector onto the teacher's conv map.
CONTINUE_TOKEN_DIM = 64
# Place descriptor of every shipped Spikformer (then the learned whitening): spike rates after
# the first two stem stages (16 channels on a 16x32 grid).
STUDENT_DESCRIPTOR = "stem2"


def distill_svs() -> SVSWeights:
    """Return the SVS weights of the distilled student.

    Spatial alignment of the spike-token grid with the teacher's last conv map (whole map + per
    token, through the student's 64-channel descriptor head), no InfoNCE.
    """
    return SVSWeights(tok=1.0, cos=0.0, rel=0.0, temporal=0.0, map=1.0, nce=0.0)


def last_val_r1(weights: str | Path) -> float:
    """Return the mean validation R@1 (both directions) of the weights as shipped.

    After their fitted whitening when they carry one, else the last training epoch's, from the
    weights JSON.
    """
    meta = read_model_meta(weights)["metadata"]
    white = meta.get("vpr", {}).get("whitening", {}).get("val_r1_whitened")
    hist = meta.get("history") or [{}]
    last = white or hist[-1]
    if "val_r1_s2w" not in last:
        raise ValueError(f"{weights}: no validation recall in its training history")
    return 0.5 * (last["val_r1_s2w"] + last["val_r1_w2s"])


def select_default(candidates: dict[str, Path], dest: str | Path) -> dict:
    """Copy the candidate with the best validation R@1 to ``dest`` (never the held-out segment).

    Writes ``.safetensors`` + ``.json`` atomically; the choice is recorded in the JSON metadata.
    """
    scores = {k: last_val_r1(p) for k, p in candidates.items()}
    best = max(scores, key=scores.get)
    src, dest = Path(candidates[best]), Path(dest)
    info = read_model_meta(src)
    info["metadata"]["selected_as_default"] = {
        "chosen": best, "source": src.name,
        "rule": "best mean validation R@1 (after whitening when fitted, else last epoch)",
        "val_r1": scores}
    with atomic_path(dest) as tmp:
        tmp.write_bytes(src.read_bytes())
    write_json_atomic(dest.with_suffix(".json"), info)
    log.info("default VPR weights: %s (validation R@1 %s)", best, scores)
    return {"chosen": best, "val_r1": scores}
