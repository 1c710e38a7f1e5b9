"""Nordland training recipes (teacher CNN, Spikformer direct, Spikformer distilled).

Protocol: train on the first ``train_frac`` (60 %) of Nordland places, both seasons; the last
``val_frac`` of that training segment is held back for monitoring; the remaining 40 % of the
route is the held-out test segment and is never touched here.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vl2spike_ros.data.datasets import load_nordland
from vl2spike_ros.vpr.descriptors import input_norm, place_descriptor, preprocess
from vl2spike_ros.vpr.evaluation import evaluate_aligned
from vl2spike_ros.train.vpr_train import TrainConfig, train_descriptor

log = logging.getLogger(__name__)


def nordland_tensors(root: str | Path, split: str = "train", train_frac: float = 0.6,
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


@torch.no_grad()
def describe_tensor(model, x: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Descriptors ``[N, D]`` of preprocessed ``[N, C, H, W]``."""
    model.eval()
    out = [place_descriptor(model, x[s:s + batch_size]) for s in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def val_recall_fn(va: torch.Tensor, vb: torch.Tensor):
    """Validation callback: R@1 at +-1 frame in both directions (percent)."""
    def fn(model) -> dict:
        da, db = describe_tensor(model, va), describe_tensor(model, vb)
        ab = evaluate_aligned(da @ db.T, tolerances=(1,), ns=(1,))["tol1"]["recall"]["r1"]
        ba = evaluate_aligned(db @ da.T, tolerances=(1,), ns=(1,))["tol1"]["recall"]["r1"]
        model.train()
        return {"val_r1_s2w": round(ab, 2), "val_r1_w2s": round(ba, 2)}
    return fn


def train_on_nordland(model, root, out_ckpt: Path, cfg: TrainConfig, loss_fn=None,
                      train_frac: float = 0.6, val_frac: float = 0.1) -> list[dict]:
    """Train ``model`` (``.config.img_size/in_chans``) contrastively on the Nordland train split."""
    a, b = nordland_tensors(root, "train", train_frac, tuple(model.config.img_size),
                            int(model.config.in_chans), input_norm(model))
    ta, tb, va, vb = split_val(a, b, val_frac)
    log.info("training on %d places, validating on %d", len(ta), len(va))
    return train_descriptor(model, ta, tb, cfg, ckpt=out_ckpt, loss_fn=loss_fn,
                            val_fn=val_recall_fn(va, vb) if len(va) else None)


def train_spikformer(root, out_ckpt: Path, cfg: TrainConfig, variant: str = "spikformer_vpr",
                     teacher=None, svs=None, train_frac: float = 0.6, val_frac: float = 0.1,
                     descriptor: str = "spatial", init_from: str | Path | None = None,
                     norm: str = "image", **overrides):
    """Spikformer student trained with InfoNCE (+ SVS distillation from ``teacher``).

    Returns (model, history). The SVS projector is part of the loss and is not saved with the
    model; its parameters are optimised together with the student's.
    """
    from vl2spike_ros.models import create_model
    from vl2spike_ros.train.vpr_losses import SpikeVPRLoss, SVSWeights

    model = create_model(variant, **overrides)
    model.vpr_descriptor = descriptor
    model.vpr_input_norm = norm
    if init_from is not None:  # warm start (e.g. distil on top of the directly trained student)
        warm_start(model, init_from)
    loss = SpikeVPRLoss(model.config.embed_dim, cfg.temperature, cfg.exclude_radius, teacher,
                        teacher.config.descriptor_dim if teacher is not None else 0,
                        svs or SVSWeights(),
                        teacher.config.widths[-1] if teacher is not None else 0,
                        model.config.descriptor_dim if descriptor == "spatial" else 0)
    holder = _WithLoss(model, loss)
    hist = train_on_nordland(holder, root, out_ckpt, cfg, loss_fn=holder.loss_fn,
                             train_frac=train_frac, val_frac=val_frac)
    return model.eval(), hist


def warm_start(model, path: str | Path) -> list[str]:
    """Load the weights of ``path`` into ``model``; only the descriptor head (``desc_proj``) may
    differ in shape (a wider token head), it then keeps its fresh initialisation. Returns the
    names of the re-initialised tensors."""
    import dataclasses

    from vl2spike_ros.models import load_model, read_model_meta
    from vl2spike_ros.models.config import SpikformerConfig

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


class _WithLoss(torch.nn.Module):
    """Student + loss module (projector) as one trainable unit; behaves like the student."""

    def __init__(self, model, loss):
        super().__init__()
        self.model, self.loss = model, loss
        self.config = model.config
        self.vpr_input_norm = input_norm(model)

    def descriptor(self, x):
        return place_descriptor(self.model, x)

    def loss_fn(self, _self, xa, xp, pa, pp):
        return self.loss(self.model, xa, xp, pa, pp)


def train_teacher_cnn(root, out: str | Path, cfg: TrainConfig, ckpt_dir: str | Path,
                      train_frac: float = 0.6, val_frac: float = 0.1,
                      norm: str = "image") -> dict:
    """Train the ANN (CNN) teacher and save it (safetensors + json). Returns a summary."""
    import time

    from vl2spike_ros.models.cnn import CNNConfig, PlaceCNN, save_cnn
    from vl2spike_ros.train.vpr_train import seed_everything

    seed_everything(cfg.seed)
    t0 = time.time()
    model = PlaceCNN(CNNConfig())
    model.vpr_input_norm = norm
    hist = train_on_nordland(model, root, Path(ckpt_dir) / "teacher_cnn.ckpt", cfg,
                             train_frac=train_frac, val_frac=val_frac)
    info = _train_info("teacher_cnn", cfg, hist, time.time() - t0, train_frac, val_frac)
    info["vpr"] = {"input_norm": norm}
    save_cnn(model.eval(), out, info)
    return info


def train_student(root, out: str | Path, cfg: TrainConfig, ckpt_dir: str | Path,
                  teacher_path: str | Path | None = None, variant: str = "spikformer_vpr",
                  train_frac: float = 0.6, val_frac: float = 0.1,
                  descriptor: str = "spatial", token_dim: int = 8,
                  init_from: str | Path | None = None, svs=None, norm: str = "image",
                  name: str | None = None) -> dict:
    """Train the Spikformer directly (no teacher) or distilled (SVS from the CNN teacher).

    ``name`` (default ``spikformer_direct`` / ``spikformer_distilled``) names the checkpoint
    and the run in the weights metadata.
    """
    import time

    from vl2spike_ros.models import save_model
    from vl2spike_ros.models.cnn import load_cnn
    from vl2spike_ros.train.vpr_train import seed_everything

    seed_everything(cfg.seed)
    teacher = load_cnn(teacher_path) if teacher_path else None
    if teacher is not None and teacher.vpr_input_norm != norm:
        raise ValueError(f"teacher {teacher_path} was trained on {teacher.vpr_input_norm!r} "
                         f"inputs, the student would get {norm!r}: train both with one norm")
    name = name or ("spikformer_distilled" if teacher is not None else "spikformer_direct")
    t0 = time.time()
    over = {"descriptor_dim": token_dim} if descriptor == "spatial" else {}
    model, hist = train_spikformer(root, Path(ckpt_dir) / f"{name}.ckpt", cfg, variant, teacher,
                                   train_frac=train_frac, val_frac=val_frac,
                                   descriptor=descriptor, init_from=init_from, svs=svs,
                                   norm=norm, **over)
    info = _train_info(name, cfg, hist, time.time() - t0, train_frac, val_frac)
    info["vpr"] = {"descriptor": descriptor, "input_norm": norm}
    if init_from is not None:
        info["init_from"] = str(init_from)
    if svs is not None:
        import dataclasses
        info["svs_weights"] = dataclasses.asdict(svs)
        if teacher is not None:
            info["loss"] = _loss_text(svs)
    if teacher_path:
        from vl2spike_ros.models import weights_hash
        info["teacher"] = {"path": str(teacher_path), "sha256_16": weights_hash(teacher_path),
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
    import dataclasses
    return {"name": name, "train_config": dataclasses.asdict(cfg), "history": hist,
            "train_seconds": round(seconds, 1),
            "data": {"dataset": "Nordland summer+winter (64x32)", "train_places_frac": train_frac,
                     "val_frac_of_train": val_frac,
                     "held_out": f"last {1 - train_frac:.0%} of places, never used in training"},
            "loss": "InfoNCE (positives: same place other season +-pos_tolerance)"
                    + (" + SVS (per-token and global alignment, relational KL, warm-started temporal)"
                       if "distilled" in name else "")}


# The settings the shipped weights were trained with (see vl2spike_ros/assets/vpr_default.md).
TEACHER_CFG = TrainConfig(epochs=15)          # shipped teacher: snapshot after epoch 10 of 15
DIRECT_CFG = TrainConfig(epochs=6, lr=3e-3)
# warm start from the direct student; control and distilled both run 24 epochs (12 -> 24 raised
# mean validation R@1 after whitening: distilled 61.2 -> 64.9, control 52.3 -> 56.3)
DISTILL_CFG = TrainConfig(epochs=24, lr=1e-3, seed=1)
# Distilled student and its equal-budget control: 64 channels per token, the teacher's map width,
# so the per-token descriptor head is also the SVS projector onto the teacher's conv map.
CONTINUE_TOKEN_DIM = 64
# Place descriptor of every shipped Spikformer: spike rates after the first two stem stages
# (16 channels on a 16x32 grid), then the learned whitening. Chosen on the validation places of
# the distilled student (mean R@1 whitened): stem2 62.8 %, stem3 56.6 %, stem1 52.6 %, token
# grid through the descriptor head ("spatial") 35.4 %.
STUDENT_DESCRIPTOR = "stem2"


def distill_svs():
    """SVS weights of the distilled student: spatial alignment of the spike-token grid with the
    teacher's last conv map (whole map + per token, through the student's 64-channel descriptor
    head), no InfoNCE. Probe on the validation places after 12 epochs (mean R@1 over both
    directions, token-grid descriptor, whitened): this setting 35.4 %; with InfoNCE added also
    35.4 % but a looser alignment to the teacher (cos 0.65 vs 0.77), so InfoNCE was left out. Earlier settings on the 8-channel head (InfoNCE + relational
    KL inside each view 35.8 %; + per-token + temporal 12-20 %; whole-batch relational 17.2 %)
    did not beat the control; see docs/ARCHITECTURE.md (VPR)."""
    from vl2spike_ros.train.vpr_losses import SVSWeights
    return SVSWeights(tok=1.0, cos=0.0, rel=0.0, temporal=0.0, map=1.0, nce=0.0)


def last_val_r1(weights: str | Path) -> float:
    """Mean validation R@1 (both directions) of the weights as shipped: after their fitted
    whitening when they carry one, else the last training epoch's, from the weights JSON."""
    import json
    info = json.loads(Path(weights).with_suffix(".json").read_text())
    meta = info.get("metadata") or info.get("meta") or {}
    white = meta.get("vpr", {}).get("whitening", {}).get("val_r1_whitened")
    hist = meta.get("history") or [{}]
    last = white or hist[-1]
    if "val_r1_s2w" not in last:
        raise ValueError(f"{weights}: no validation recall in its training history")
    return 0.5 * (last["val_r1_s2w"] + last["val_r1_w2s"])


def select_default(candidates: dict[str, Path], dest: str | Path) -> dict:
    """Copy the candidate with the best validation R@1 (never the held-out segment) to ``dest``
    (``.safetensors`` + ``.json``, atomically); the choice is recorded in the JSON metadata."""
    import json

    from vl2spike_ros.atomic import atomic_path, write_json_atomic

    scores = {k: last_val_r1(p) for k, p in candidates.items()}
    best = max(scores, key=scores.get)
    src, dest = Path(candidates[best]), Path(dest)
    info = json.loads(src.with_suffix(".json").read_text())
    info.setdefault("metadata", {})["selected_as_default"] = {
        "chosen": best, "source": src.name,
        "rule": "best mean validation R@1 (after whitening when fitted, else last epoch)",
        "val_r1": scores}
    with atomic_path(dest) as tmp:
        tmp.write_bytes(src.read_bytes())
    write_json_atomic(dest.with_suffix(".json"), info)
    log.info("default VPR weights: %s (validation R@1 %s)", best, scores)
    return {"chosen": best, "val_r1": scores}
