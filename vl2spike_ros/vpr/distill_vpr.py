"""Place-recognition training losses for the Spikformer student.

:class:`SpikeVPRLoss` = InfoNCE on the place descriptor (same place, other season) plus,
when a frozen ANN teacher is given, VL2Spike's SVS terms computed against the teacher's
place descriptors:

- ``svs_cos``: 1 - cos(proj(pooled spike tokens), teacher descriptor) (alignment on the
  teacher's manifold through a learned projector);
- ``svs_tok``: per-token alignment, 1 - cos(proj_tok(spike rate of token n), teacher feature
  map at grid cell n), when the teacher exposes a feature map on the student's token grid
  (``teacher.feature_map(x) -> [B, N, C]``);
- ``svs_rel``: KL between the batch similarity structures of student descriptors and teacher
  descriptors (relational term);
- ``svs_temporal`` (warm-started: 0 for ``warmup_steps``, then linear ramp): per-time-step
  pooled features, membrane potentials and spike rates agree with their mean over T.

Returns a dict of named terms + ``"total"``. The teacher stays frozen in eval mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vl2spike_ros.vpr.descriptors import SPATIAL, descriptor_mode, spatial_from_tokens
from vl2spike_ros.vpr.train import info_nce


@dataclass(frozen=True)
class SVSWeights:
    tok: float = 1.0
    cos: float = 1.0
    rel: float = 1.0
    rel_temperature: float = 0.1
    temporal: float = 0.5
    warmup_steps: int = 60
    ramp_steps: int = 60


def temporal_terms(cap) -> dict[str, torch.Tensor]:
    """Consistency across time steps from a model ``Capture`` (features, membranes, rates)."""
    f = F.normalize(cap.step_features, dim=-1)                       # [T,B,D]
    feat = (1 - (f * F.normalize(f.mean(0, keepdim=True), dim=-1)).sum(-1)).mean()
    mem = torch.stack([(v - v.mean(0, keepdim=True)).pow(2).mean() for v in cap.v_seq.values()]
                      ).mean() if cap.v_seq else feat.new_zeros(())
    rates = torch.stack([(r - r.mean()).pow(2).mean() for r in cap.step_spike_rates.values()]
                        ).mean() if cap.step_spike_rates else feat.new_zeros(())
    return {"t_feat": feat, "t_mem": mem, "t_rate": rates}


class SpikeVPRLoss(nn.Module):
    """InfoNCE (+ SVS terms against ``teacher`` when given). Call ``(model, xa, xp, pa, pp)``."""

    def __init__(self, embed_dim: int, temperature: float = 0.07, exclude_radius: int = 3,
                 teacher: nn.Module | None = None, teacher_dim: int = 0,
                 weights: SVSWeights = SVSWeights(), teacher_tok_dim: int = 0):
        super().__init__()
        self.temperature, self.exclude_radius, self.w = temperature, exclude_radius, weights
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            self.proj = nn.Sequential(nn.Linear(embed_dim, 256), nn.GELU(),
                                      nn.Linear(256, teacher_dim))
            if teacher_tok_dim:
                self.proj_tok = nn.Linear(embed_dim, teacher_tok_dim)
        self.steps = 0

    def train(self, mode: bool = True) -> "SpikeVPRLoss":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher stays frozen in eval mode
        return self

    def _ramp(self) -> float:
        w = self.w
        return min(1.0, max(0.0, (self.steps - w.warmup_steps) / max(1, w.ramp_steps)))

    def forward(self, model, xa, xp, pa, pp) -> dict[str, torch.Tensor]:
        x = torch.cat([xa, xp])
        with model.capture() as cap:
            tokens = model.forward_features(x)
        z = spatial_from_tokens(model, tokens) if descriptor_mode(model) == SPATIAL \
            else model.descriptor_from_tokens(tokens)
        b = len(xa)
        out = {"nce": info_nce(z[:b], z[b:], pa, pp, self.temperature, self.exclude_radius)}
        total = out["nce"]
        if self.teacher is not None:
            with torch.no_grad():
                t = F.normalize(self.teacher.descriptor(x), dim=-1)
                tmap = self.teacher.feature_map(x) if hasattr(self, "proj_tok") else None
            s = F.normalize(self.proj(model.pool(tokens)), dim=-1)
            out["svs_cos"] = (1 - (s * t).sum(-1)).mean()
            total = total + self.w.cos * out["svs_cos"]
            if tmap is not None and tmap.shape[1] == tokens.shape[2]:
                st = F.normalize(self.proj_tok(tokens.mean(0)), dim=-1)       # [B, N, C]
                out["svs_tok"] = (1 - (st * F.normalize(tmap, dim=-1)).sum(-1)).mean()
                total = total + self.w.tok * out["svs_tok"]
            tau = self.w.rel_temperature
            out["svs_rel"] = F.kl_div(F.log_softmax(z @ z.t() / tau, -1),
                                      F.log_softmax(t @ t.t() / tau, -1),
                                      log_target=True, reduction="batchmean")
            tt = temporal_terms(cap)
            out.update(tt)
            out["svs_temporal"] = tt["t_feat"] + tt["t_mem"] + tt["t_rate"]
            total = total + self.w.rel * out["svs_rel"] \
                + self.w.temporal * self._ramp() * out["svs_temporal"]
        if self.training:
            self.steps += 1
        out["total"] = total
        return out
