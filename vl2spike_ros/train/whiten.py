"""Fit a learned whitening for trained VPR weights and store it inside the weights file.

The whitening (:mod:`vl2spike_ros.vpr.whitening`) is fitted on the Nordland training places.

The whitening is fitted on the training places without the validation places (first
``1 - val_frac`` of the training segment, both seasons as matching pairs); its effect is measured
on the validation places; the held-out segment is never touched.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vl2spike_ros.data.datasets import NORDLAND_TRAIN_FRACTION
from vl2spike_ros.models import read_model_meta, save_model
from vl2spike_ros.train.recipes import (VAL_FRACTION, describe_tensor, place_tensors, split_val,
                                        val_recall_fn)
from vl2spike_ros.vpr.place import PlaceDescriptor, load_place_descriptor
from vl2spike_ros.vpr.whitening import Whitening, fit_whitening

log = logging.getLogger(__name__)

WHITEN_DIM = 256
WHITEN_SHRINK = 0.3  # chosen on the validation places (docs/VPR_TRAINING.md)
EIG_EPS = 1e-6  # PCA-whitening keeps directions with singular value above this x the largest


def fit_model_whitening(place: PlaceDescriptor, root, train_frac: float = NORDLAND_TRAIN_FRACTION,
                        val_frac: float = VAL_FRACTION, dim: int = WHITEN_DIM,
                        shrink: float = WHITEN_SHRINK) -> tuple[Whitening, dict]:
    """Fit a whitening for ``place``'s raw descriptors (any whitening it has is ignored).

    Returns (whitening, report with validation R@1 before/after); ``place`` is left in eval
    mode.
    """
    raw_place = place.with_whitening(None)
    a, b = place_tensors(raw_place, root, train_frac)
    ta, tb, va, vb = split_val(a, b, val_frac)
    whitening = fit_whitening(describe_tensor(raw_place, ta), describe_tensor(raw_place, tb),
                              dim, shrink)
    raw = val_recall_fn(va, vb)(raw_place)
    white = val_recall_fn(va, vb)(raw_place.with_whitening(whitening))
    place.eval()
    report = {"method": "learned whitening (Radenovic et al. 2019), closed form",
              "dim": whitening.out_dim, "shrink": shrink, "fitted_on_places": len(ta),
              "val_r1_raw": raw, "val_r1_whitened": white}
    log.info("whitening: validation R@1 raw %s -> whitened %s", raw, white)
    return whitening, report


def whiten_weights(weights: str | Path, root, out: str | Path | None = None,
                   descriptor: str | None = None, train_frac: float = NORDLAND_TRAIN_FRACTION,
                   val_frac: float = VAL_FRACTION, dim: int = WHITEN_DIM,
                   shrink: float = WHITEN_SHRINK) -> dict:
    """Fit and store a whitening for ``weights`` (Spikformer or CNN) in ``out``.

    ``out`` defaults to ``weights`` (replaced atomically). ``descriptor`` switches the
    descriptor mode first (CNN: ``"map"`` / ``"pooled"``; Spikformer: ``"spatial"`` /
    ``"pooled"`` / ``"stem<n>"``). Returns the report (also recorded as ``vpr.whitening`` in the
    weights' JSON metadata).
    """
    weights = Path(weights)
    out = Path(out) if out else weights
    meta = read_model_meta(weights)["metadata"]
    place = load_place_descriptor(weights)
    if descriptor is not None:
        place = place.with_mode(descriptor)
    whitening, report = fit_model_whitening(place, root, train_frac, val_frac, dim, shrink)
    meta.setdefault("vpr", {}).update({"descriptor": place.settings.mode, "whitening": report})
    save_model(place.backbone, out, meta, extra_tensors=whitening.to_tensors())
    return report


def fit_pca_whitening(x: np.ndarray, dim: int = WHITEN_DIM,
                      shrink: float = WHITEN_SHRINK) -> Whitening:
    """PCA-whitening fitted without labels on descriptors ``x [N, D]`` of training frames.

    Centre, keep the top ``k = min(dim, N - 1, D)`` principal directions (those that vary) and
    scale each by ``1 / sqrt(eigenvalue + shrink * mean eigenvalue)`` (shrinkage: weak
    directions are not blown up to noise level). The result is L2-normalised by
    :class:`Whitening`.
    """
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"PCA-whitening needs descriptors [N, D] with N >= 3, got {x.shape}")
    if shrink <= 0:
        raise ValueError(f"shrink must be > 0, got {shrink}")
    x = x.astype(np.float64)
    mu = x.mean(0)
    _, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    k = min(dim, len(x) - 1, x.shape[1], int((s > EIG_EPS * max(s[0], 1e-30)).sum()))
    if s[0] <= 1e-12:
        raise ValueError(f"the {len(x)} training frames all have the same descriptor (a "
                         "silent network?): nothing to whiten; train longer or warm-start")
    eig = s[:k] ** 2 / len(x)
    proj = vt[:k].T / np.sqrt(eig + shrink * eig.mean())
    log.info("PCA-whitening fitted on %d frames: %d -> %d dims (shrink %g)", len(x), x.shape[1],
             k, shrink)
    return Whitening(torch.from_numpy(mu.astype(np.float32)),
                     torch.from_numpy(np.ascontiguousarray(proj, dtype=np.float32)))
