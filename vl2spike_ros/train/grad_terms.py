"""Per-term gradients of the distillation loss: norms for logging and per-term clipping.

A term is one named entry of :class:`~vl2spike_ros.train.trainer.DistillModule`'s output
(``ce``, ``kd``, ``svs_cos``, ``svs_temp_feat``, ``spl_proto`` ...); a group is the loss module a
term comes from (``ce``, ``kd``, ``svs_align``, ``svs_temporal``, ``spl``).

- :func:`term_grad_norms`: ``|d term / d params|`` of every term (the trainer logs it for the
  student's own parameters, so a reader sees which term drives the update).
- :func:`clip_scales`: per-group factors ``min(1, max_norm / |d group / d params|)``; the trainer
  back-propagates ``sum_g scale_g * group_g``, so each group's gradient is clipped on its own
  instead of one global clip where a large term shrinks the others.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable

import torch
import torch.distributed as dist

GROUP_PREFIXES = (("svs_temp", "svs_temporal"), ("svs_", "svs_align"), ("spl_", "spl"),
                  ("kd", "kd"), ("ce", "ce"))
EPS = 1e-12


def term_group(name: str) -> str:
    """Loss group of a term name (``svs_cos`` -> ``svs_align``; unknown names are their own)."""
    for prefix, group in GROUP_PREFIXES:
        if name.startswith(prefix):
            return group
    return name


def loss_terms(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the weighted loss terms of a forward's output (no ``total``, no ``_`` extras)."""
    return {k: v for k, v in terms.items() if k != "total" and not k.startswith("_")}


def group_terms(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum the loss terms of each group: ``{group: scalar tensor}`` (insertion order kept)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in loss_terms(terms).items():
        g = term_group(k)
        out[g] = out[g] + v if g in out else v
    return out


def grad_norm(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of ``d value / d params`` (0-d float tensor); the graph is kept for later use.

    A term that is exactly 0 (weight 0, or before its warm-up) counts as 0 without a backward.
    """
    if not value.requires_grad or float(value.detach()) == 0.0:
        return torch.zeros((), device=value.device)
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    sq = [g.float().pow(2).sum() for g in grads if g is not None]
    return torch.stack(sq).sum().sqrt() if sq else torch.zeros((), device=value.device)


def term_grad_norms(terms: dict[str, torch.Tensor],
                    params: Iterable[torch.Tensor]) -> dict[str, float]:
    """``{term: |d term / d params|}`` for every loss term (gradients are not accumulated)."""
    ps = [p for p in params if p.requires_grad]
    return {k: float(grad_norm(v, ps)) for k, v in loss_terms(terms).items()}


def clip_scales(groups: dict[str, torch.Tensor], params: Iterable[torch.Tensor],
                max_norm: float) -> dict[str, float]:
    """Per-group factors ``min(1, max_norm / |grad|)``; group norms averaged over DDP ranks.

    ``groups``: ``{group: scalar loss}`` from one forward (its graph is kept).
    """
    ps = [p for p in params if p.requires_grad]
    norms = torch.stack([grad_norm(v, ps) for v in groups.values()])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(norms)  # identical factors on every rank keep the replicas in step
        norms = norms / dist.get_world_size()
    scales = (max_norm / (norms + EPS)).clamp(max=1.0)
    return {g: float(s) for g, s in zip(groups, scales)}


def scaled_total(groups: dict[str, torch.Tensor], scales: dict[str, float]) -> torch.Tensor:
    """``sum_g scales[g] * groups[g]`` (the loss whose gradient is the per-term clipped one)."""
    return sum(scales[g] * v for g, v in groups.items())


def mean_grad_norms(path: str | Path) -> dict[str, float]:
    """Mean of each term's column of a ``grad_norms.csv`` (``step`` left out; blanks skipped)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                if k != "step" and v not in ("", None):
                    sums[k] = sums.get(k, 0.0) + float(v)
                    counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


def clip_stats(path: str | Path, max_norm: float) -> dict[str, float]:
    """Mean pre-clip gradient norm and the fraction of logged steps where the clip bound.

    Read from the ``grad_norm`` column of ``train_log.csv`` (global clipping); ``{}`` if absent.
    """
    with open(path, newline="") as fh:
        vals = [float(r["grad_norm"]) for r in csv.DictReader(fh) if r.get("grad_norm")]
    if not vals:
        return {}
    return {"grad_norm_total_mean": sum(vals) / len(vals),
            "clip_bound_fraction": sum(v > max_norm for v in vals) / len(vals)}
