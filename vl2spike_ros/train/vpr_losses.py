"""Place-recognition training loss for the Spikformer student (InfoNCE + VL2Spike SVS terms).

:class:`SpikeVPRLoss` = InfoNCE on the place descriptor (same place, other season) plus, when a
frozen ANN teacher is given, VL2Spike's SVS terms against the teacher, built from the same loss
modules as CIFAR distillation (:mod:`vl2spike_ros.train.losses`):

- ``svs_cos`` (:class:`~vl2spike_ros.train.losses.SVSAlignLoss`): 1 - cos(proj(spike tokens
  pooled over time and tokens), teacher descriptor), alignment on the teacher's manifold through
  a learned projector;
- ``svs_tok`` (VPR-specific, spatial): per-token alignment, 1 - cos(proj_tok(spike rate of token
  n), teacher feature map at grid cell n), when the teacher exposes a feature map on the student's
  token grid (``teacher.feature_map(x) -> [B, N, C]``);
- ``svs_map`` (VPR-specific, spatial): 1 - cos(student token grid, teacher feature map), both
  flattened: the whole map is aligned on the teacher's manifold, so relative token strengths
  count as well as directions. Needs a spatial student whose descriptor head maps tokens to the
  teacher's channel count (``descriptor_dim == C``); the head is then the projector of
  ``svs_tok`` as well, so the place descriptor itself lives on the teacher's map manifold;
- ``svs_rel`` (:func:`~vl2spike_ros.train.losses.relational_kl`): KL between the batch
  similarity structures of the student's place descriptors and the teacher's descriptors;
- ``svs_temp_feat/mem/rate`` (:class:`~vl2spike_ros.train.losses.SVSTemporalLoss`,
  warm-started: weight 0 for ``warmup_steps`` optimisation steps, then a linear ramp over
  ``ramp_steps``): per-step pooled features, membrane potentials and spike rates agree with
  their mean over T.

Returns a dict of named (weighted) terms + ``"total"``; a term whose weight is 0 is neither
computed nor returned (no projector, no teacher feature map, no membrane capture for it). The
teacher stays frozen in eval mode. Instead of a teacher network the SVS terms can use teacher
features computed beforehand (``forward(..., targets=(global [2B, D], grid [2B, N, C] or None))``,
e.g. a cached vision-language teacher): build the loss with ``teacher=None`` and
``teacher_dim`` / ``teacher_tok_dim`` > 0.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vl2spike_ros.train.config import SVSAlignConfig, SVSTemporalConfig
from vl2spike_ros.train.losses import SVSAlignLoss, SVSTemporalLoss, relational_kl
from vl2spike_ros.vpr.descriptors import spatial_from_tokens
from vl2spike_ros.train.vpr_train import info_nce


@dataclass(frozen=True)
class SVSWeights:
    """Weights of the SVS terms for VPR (0 switches a term off); schedule in optimiser steps."""

    tok: float = 1.0
    cos: float = 1.0
    rel: float = 1.0
    rel_temperature: float = 0.1
    temporal: float = 0.5
    warmup_steps: int = 60
    ramp_steps: int = 60
    rel_within_view: bool = False  # relational term inside each view (anchors, positives) only
    map: float = 0.0  # whole-map alignment (spatial student, descriptor_dim == teacher channels)
    nce: float = 1.0  # weight of the InfoNCE term itself (0: distillation only)


class SpikeVPRLoss(nn.Module):
    """InfoNCE (+ SVS terms against ``teacher`` when given).

    Call ``(model, xa, xp, pa, pp)`` with image batches ``xa, xp [B, C, H, W]`` (anchor /
    positive) and place indices ``[B]``.

    ``spatial_head_dim`` > 0: the student is spatial (its place descriptor is the token grid
    through its ``spatial_head_dim``-channel descriptor head); 0: pooled descriptor.
    """

    def __init__(self, embed_dim: int, temperature: float = 0.07, exclude_radius: int = 3,
                 teacher: nn.Module | None = None, teacher_dim: int = 0,
                 weights: SVSWeights = SVSWeights(), teacher_tok_dim: int = 0,
                 spatial_head_dim: int = 0):
        super().__init__()
        if teacher is None and not teacher_dim and not weights.nce:
            raise ValueError("SpikeVPRLoss without a teacher needs InfoNCE (weights.nce > 0)")
        self.temperature, self.exclude_radius, self.w = temperature, exclude_radius, weights
        self.spatial = spatial_head_dim > 0
        self.teacher = teacher
        self.tok_dim = 0
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        if teacher is not None or teacher_dim:
            if weights.cos:
                self.align = SVSAlignLoss(SVSAlignConfig(enabled=True, cos_weight=weights.cos,
                                                         rel_weight=0.0, projector="mlp",
                                                         proj_hidden=256), embed_dim, teacher_dim)
            if weights.temporal:
                self.temporal = SVSTemporalLoss(SVSTemporalConfig(
                    enabled=True, weight=weights.temporal, warmup_epochs=weights.warmup_steps,
                    ramp_epochs=weights.ramp_steps, target="mean"))
            self.tok_dim = teacher_tok_dim if (weights.tok or weights.map) else 0
            # a spatial student whose head outputs the teacher's channels needs no projector
            if self.tok_dim and spatial_head_dim != self.tok_dim:
                self.proj_tok = nn.Linear(embed_dim, self.tok_dim)
        self.steps = 0

    def _token_head(self, model, tokens: torch.Tensor) -> torch.Tensor:
        """Map spike tokens ``[T, B, N, D]`` to ``[B, N, C]`` on the teacher's map manifold.

        Through the student's own descriptor head when it outputs C channels, else a learned
        projector.
        """
        rates = tokens.mean(0)
        if hasattr(self, "proj_tok"):
            return self.proj_tok(rates)
        if model.config.descriptor_dim != self.tok_dim:
            raise ValueError(f"SpikeVPRLoss was built for a spatial student with a "
                             f"{self.tok_dim}-channel head; got descriptor_dim "
                             f"{model.config.descriptor_dim}")
        return model.desc_proj(model.desc_norm(rates))

    def train(self, mode: bool = True) -> "SpikeVPRLoss":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher stays frozen in eval mode
        return self

    def forward(self, model, xa, xp, pa, pp, targets=None) -> dict[str, torch.Tensor]:
        x = torch.cat([xa, xp])
        capture = model.capture() if hasattr(self, "temporal") else contextlib.nullcontext()
        with capture as cap:
            tokens = model.forward_features(x)
        z = spatial_from_tokens(model, tokens) if self.spatial \
            else model.descriptor_from_tokens(tokens)
        b = len(xa)
        out = {}
        if self.w.nce:
            out["nce"] = self.w.nce * info_nce(z[:b], z[b:], pa, pp, self.temperature,
                                               self.exclude_radius)
        if self.teacher is not None or targets is not None:
            out.update(self._svs(model, x, tokens, z, cap, targets))
        if self.training:
            self.steps += 1
        out["total"] = sum(out.values())  # every entry is an already weighted term
        return out

    def _relational(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Relational KL over the whole ``[2B, D]`` batch, or inside each half.

        Halves: ``[B, D]`` anchors and ``[B, D]`` positives, so the same-place pair across views
        is left to InfoNCE.
        """
        tau = self.w.rel_temperature
        if not self.w.rel_within_view:
            return relational_kl(z, t, tau)
        b = len(z) // 2
        return 0.5 * (relational_kl(z[:b], t[:b], tau) + relational_kl(z[b:], t[b:], tau))

    def _svs(self, model, x, tokens, z, cap, targets=None) -> dict[str, torch.Tensor]:
        """Weighted SVS terms (keys ``svs_*``) of one batch (teacher run, or ``targets``)."""
        with torch.no_grad():
            if targets is not None:
                t, tmap = targets[0].float(), targets[1]
                tmap = tmap.float() if (tmap is not None and self.tok_dim) else None
            elif self.tok_dim:   # one pass of the teacher's conv stack for both
                t, tmap = self.teacher.descriptor_and_map(x)
            else:
                t, tmap = self.teacher.descriptor(x), None
            t = F.normalize(t, dim=-1)
        out = {}
        if hasattr(self, "align"):
            out["svs_cos"] = self.align(model.pool(tokens), t)["svs_cos"]
        if tmap is not None and tmap.shape[1] == tokens.shape[2]:
            st = self._token_head(model, tokens)                               # [B, N, C]
            if self.w.tok:
                out["svs_tok"] = self.w.tok * (1 - F.cosine_similarity(st, tmap, dim=-1).mean())
            if self.w.map:
                out["svs_map"] = self.w.map * (1 - F.cosine_similarity(
                    st.flatten(1), tmap.flatten(1), dim=-1).mean())
        if self.w.rel:
            out["svs_rel"] = self.w.rel * self._relational(z, t)
        if hasattr(self, "temporal"):
            temp = self.temporal(cap.step_features, cap.v_seq, cap.step_spike_rates,
                                 float(self.steps))
            out.update({k: v for k, v in temp.items() if k != "total"})
        return out
