"""VL2Spike distillation losses.

Each is an ``nn.Module`` returning ``dict[str, Tensor]`` of named (already weighted) terms plus
``"total"``. Teacher tensors are treated as constants (detached).

- :class:`LogitKDLoss`: classic Hinton KD on teacher zero-shot logits (baseline arm).
- :class:`SVSAlignLoss`: SVS (a), shared-manifold alignment of pooled spike tokens with teacher
  image features: direct cosine + relational (batch similarity structure) terms.
- :class:`SVSTemporalLoss`: SVS (b), warm-started temporal consistency of per-step features,
  membrane potentials and spike rates across the ``T`` time steps.
- :class:`SPLLoss`: SPL, EMA class prototypes aligned with prompt text embeddings + student logits
  distilled from the teacher's prompt-ensembled zero-shot logits.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vl2spike_ros.train.config import KDConfig, SPLConfig, SVSAlignConfig, SVSTemporalConfig


def make_projector(kind: str, d_in: int, d_out: int, hidden: int) -> nn.Module:
    """Projector from the student's feature space ``[B,d_in]`` into the teacher's ``[B,d_out]``."""
    if kind == "identity":
        if d_in != d_out:
            raise ValueError(f"identity projector needs equal dims, got {d_in} -> {d_out}")
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))
    raise ValueError(f"unknown projector {kind!r} (identity | linear | mlp)")


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
          temperature: float) -> torch.Tensor:
    """Hinton KD: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean. Inputs ``[B,C]``."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    return (t * t) * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


class LogitKDLoss(nn.Module):
    """``forward(student_logits [B,C], teacher_logits [B,C]) -> {"kd", "total"}``."""

    def __init__(self, cfg: KDConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, student_logits: torch.Tensor,
                teacher_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        kd = self.cfg.weight * kd_kl(student_logits, teacher_logits, self.cfg.temperature)
        return {"kd": kd, "total": kd}


def relational_kl(student: torch.Tensor, teacher: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """KL between row-softmaxed batch cosine-similarity matrices (diagonal excluded).

    ``student [B,D1]``, ``teacher [B,D2]``; zero when both have the same similarity structure.
    """
    b = student.shape[0]
    if b < 2:
        return student.sum() * 0.0
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.detach().float(), dim=-1)
    mask = torch.eye(b, dtype=torch.bool, device=s.device)
    ls = (s @ s.T / temperature).masked_fill(mask, -1e4)
    lt = (t @ t.T / temperature).masked_fill(mask, -1e4)
    return F.kl_div(F.log_softmax(ls, -1), F.log_softmax(lt, -1), reduction="batchmean",
                    log_target=True)


class SVSAlignLoss(nn.Module):
    """SVS (a). ``forward(student_feat [B,Ds], teacher_feat [B,Dt])`` -> ``svs_cos``, ``svs_rel``.

    ``student_feat`` are spike tokens pooled over time and tokens; a learned projector maps them
    into the teacher space (train its parameters with the student).
    """

    def __init__(self, cfg: SVSAlignConfig, student_dim: int, teacher_dim: int):
        super().__init__()
        self.cfg = cfg
        self.projector = make_projector(cfg.projector, student_dim, teacher_dim, cfg.proj_hidden)

    def forward(self, student_feat: torch.Tensor,
                teacher_feat: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.projector(student_feat.float())
        t = teacher_feat.detach().float()
        cos = 1.0 - F.cosine_similarity(z, t, dim=-1).mean()
        rel = relational_kl(z, t, self.cfg.rel_temperature)
        out = {"svs_cos": self.cfg.cos_weight * cos, "svs_rel": self.cfg.rel_weight * rel}
        out["total"] = out["svs_cos"] + out["svs_rel"]
        return out


def ramp_weight(progress_epochs: float, weight: float, warmup: float, ramp: float) -> float:
    """0 before ``warmup`` epochs, then a linear ramp over ``ramp`` epochs up to ``weight``."""
    if progress_epochs < warmup:
        return 0.0
    if ramp <= 0:
        return weight
    return weight * min(1.0, (progress_epochs - warmup) / ramp)


NORM_FLOOR = 0.1  # per-step feature norms are floored at this fraction of the batch's mean norm


def floored_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x [...,D] / max(|x|, floor)`` with ``floor = NORM_FLOOR * mean |x|`` (detached).

    Unlike ``F.normalize`` (floor 1e-12), an all-zero vector (a time step where no neuron of an
    image fired yet: about a quarter of the step features of a fresh T=2 student) stays bounded
    in the backward pass instead of getting a ~1e12 gradient.
    """
    n = x.norm(dim=-1, keepdim=True)
    floor = (NORM_FLOOR * n.mean()).detach().clamp(min=1e-6)
    return x / torch.maximum(n, floor)


def _step_consistency(seq: torch.Tensor, target: str) -> torch.Tensor:
    """Mean squared deviation of each step of ``seq [T,...]`` from the detached target step."""
    if target == "mean":
        ref = seq.mean(0, keepdim=True).detach()
    elif target == "final":
        ref = seq[-1:].detach()
    else:
        raise ValueError(f"temporal target must be 'mean' or 'final', got {target!r}")
    return (seq.float() - ref.float()).pow(2).mean()


class SVSTemporalLoss(nn.Module):
    """SVS (b): temporal consistency across the ``T`` steps of one forward.

    ``forward(step_features [T,B,D], v_seq {name: [T,B,...]}, step_rates {name: [T] or [T,B]},
    progress_epochs)`` -> ``svs_temp_feat``, ``svs_temp_mem``, ``svs_temp_rate`` (ramped weight).
    Features are L2-normalised per step (norm floored, :func:`floored_normalize`); the target
    (temporal mean or final step) is detached.
    ``step_rates`` per layer (``[T]``, one number per layer and step: a weak, batch-wide
    constraint) or per image (``[T,B]``, ``rate_granularity: sample``).
    """

    def __init__(self, cfg: SVSTemporalConfig):
        super().__init__()
        self.cfg = cfg

    def current_weight(self, progress_epochs: float) -> float:
        c = self.cfg
        return ramp_weight(progress_epochs, c.weight, c.warmup_epochs, c.ramp_epochs)

    def forward(self, step_features: torch.Tensor, v_seq: dict[str, torch.Tensor],
                step_rates: dict[str, torch.Tensor],
                progress_epochs: float) -> dict[str, torch.Tensor]:
        c = self.cfg
        w = self.current_weight(progress_epochs)
        feat = _step_consistency(floored_normalize(step_features.float()), c.target)
        zero = feat * 0.0
        mem = torch.stack([_step_consistency(v, c.target) for v in v_seq.values()]).mean() \
            if v_seq else zero
        rate = torch.stack([_step_consistency(r, c.target) for r in step_rates.values()]).mean() \
            if step_rates else zero
        out = {"svs_temp_feat": w * c.feature_weight * feat,
               "svs_temp_mem": w * c.membrane_weight * mem,
               "svs_temp_rate": w * c.rate_weight * rate}
        out["total"] = out["svs_temp_feat"] + out["svs_temp_mem"] + out["svs_temp_rate"]
        return out


class SPLLoss(nn.Module):
    """SPL: spike prompt learning against the teacher's prompt text embeddings.

    ``text_emb [C,Dt]`` (prompt-ensembled, L2-normalised) is a fixed buffer. ``forward(
    student_feat [B,Ds], labels [B], student_logits [B,C], teacher_zs_logits [B,C])`` ->
    ``spl_proto`` (1 - cos of projected prototypes vs class texts), ``spl_proto_nce``
    (prototype-to-all-texts InfoNCE), ``spl_logit`` (T^2 KL to the teacher's zero-shot logits).
    Prototypes: ``p_c <- m p_c + (1-m) mean_{y=c} f`` (EMA buffer, updated in training); the loss
    uses the prototype with the current batch mean still attached to the graph.
    """

    def __init__(self, cfg: SPLConfig, text_emb: torch.Tensor, student_dim: int):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("text_emb", F.normalize(text_emb.detach().float(), dim=-1))
        c = text_emb.shape[0]
        self.register_buffer("prototypes", torch.zeros(c, student_dim))
        self.register_buffer("proto_init", torch.zeros(c, dtype=torch.bool))
        self.projector = make_projector(cfg.projector, student_dim, text_emb.shape[1],
                                        cfg.proj_hidden)

    def _batch_prototypes(self, feat: torch.Tensor, labels: torch.Tensor):
        c = self.text_emb.shape[0]
        onehot = F.one_hot(labels, c).to(feat.dtype)          # [B,C]
        counts = onehot.sum(0)                                  # [C]
        present = counts > 0
        means = (onehot.T @ feat) / counts.clamp(min=1).unsqueeze(1)  # [C,Ds]
        m = self.cfg.proto_momentum
        old = self.prototypes.to(feat.dtype).clone()
        init = self.proto_init.clone().unsqueeze(1)
        protos = torch.where(init, m * old + (1 - m) * means, means)
        if self.training:
            with torch.no_grad():
                self.prototypes[present] = protos.detach()[present].to(self.prototypes.dtype)
                self.proto_init |= present
        return protos, present

    def forward(self, student_feat: torch.Tensor, labels: torch.Tensor,
                student_logits: torch.Tensor,
                teacher_zs_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.cfg
        protos, present = self._batch_prototypes(student_feat.float(), labels)
        z = F.normalize(self.projector(protos[present]), dim=-1)   # [P,Dt]
        text = self.text_emb
        cls = torch.nonzero(present).squeeze(1)
        proto = 1.0 - (z * text[cls]).sum(-1).mean()
        nce = F.cross_entropy(z @ text.T / c.proto_temperature, cls)
        logit = kd_kl(student_logits, teacher_zs_logits, c.temperature)
        out = {"spl_proto": c.proto_weight * proto, "spl_proto_nce": c.proto_nce_weight * nce,
               "spl_logit": c.logit_weight * logit}
        out["total"] = out["spl_proto"] + out["spl_proto_nce"] + out["spl_logit"]
        return out


def zero_shot_logits(image_feat: torch.Tensor, text_emb: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """Teacher logits ``[B,C] = scale * cos(image_feat [B,D], text_emb [C,D])``."""
    img = F.normalize(image_feat.float(), dim=-1)
    return scale * img @ F.normalize(text_emb.float(), dim=-1).T
