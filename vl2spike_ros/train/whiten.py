"""Fit a learned whitening (:mod:`vl2spike_ros.vpr.whitening`) for trained VPR weights on the
Nordland training places and store it inside the weights file.

The whitening is fitted on the training places without the validation places (first
``1 - val_frac`` of the training segment, both seasons as matching pairs); its effect is measured
on the validation places; the held-out segment is never touched.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from vl2spike_ros.vpr.descriptors import MAP, check_mode, descriptor_mode, input_norm
from vl2spike_ros.vpr.whitening import Whitening, fit_whitening

log = logging.getLogger(__name__)

WHITEN_DIM = 256
WHITEN_SHRINK = 0.3  # chosen on the validation places (0.3 / 1 / 3 tried on the teacher map)


def fit_model_whitening(model, root, train_frac: float = 0.6, val_frac: float = 0.1,
                        dim: int = WHITEN_DIM, shrink: float = WHITEN_SHRINK) -> tuple[Whitening, dict]:
    """Fit ``model``'s whitening; returns (whitening, report with validation R@1 before/after).

    Leaves ``model.vpr_whitening`` set to the fitted whitening, model in eval mode.
    """
    from vl2spike_ros.train.recipes import describe_tensor, nordland_tensors, split_val, val_recall_fn

    cfg = model.config
    a, b = nordland_tensors(root, "train", train_frac, tuple(cfg.img_size), int(cfg.in_chans),
                            input_norm(model))
    ta, tb, va, vb = split_val(a, b, val_frac)
    model.vpr_whitening = None
    whitening = fit_whitening(describe_tensor(model, ta), describe_tensor(model, tb), dim, shrink)
    raw = val_recall_fn(va, vb)(model)
    model.vpr_whitening = whitening
    white = val_recall_fn(va, vb)(model)
    model.eval()
    report = {"method": "learned whitening (Radenovic et al. 2019), closed form",
              "dim": whitening.out_dim, "shrink": shrink, "fitted_on_places": len(ta),
              "val_r1_raw": raw, "val_r1_whitened": white}
    log.info("whitening: validation R@1 raw %s -> whitened %s", raw, white)
    return whitening, report


def whiten_weights(weights: str | Path, root, out: str | Path | None = None,
                   descriptor: str | None = None, train_frac: float = 0.6,
                   val_frac: float = 0.1, dim: int = WHITEN_DIM,
                   shrink: float = WHITEN_SHRINK) -> dict:
    """Fit and store a whitening for ``weights`` (Spikformer or CNN) in ``out`` (default: in
    place, atomically). ``descriptor`` switches the descriptor mode first (CNN: ``"map"`` /
    ``"pooled"``; Spikformer: ``"spatial"`` / ``"pooled"`` / ``"stem<n>"``).
    Returns the report (also recorded as ``vpr.whitening`` in the weights' JSON metadata)."""
    from vl2spike_ros.vpr.pipeline import load_vpr_model

    weights = Path(weights)
    out = Path(out) if out else weights
    info = json.loads(weights.with_suffix(".json").read_text())
    model, _ = load_vpr_model(weights)
    is_cnn = info.get("kind") == "cnn"
    if descriptor is not None:
        check_mode(descriptor)
        if is_cnn and descriptor not in (MAP, "pooled"):
            raise ValueError(f"a CNN descriptor is 'map' or 'pooled', got {descriptor!r}")
        if not is_cnn and descriptor == MAP:
            raise ValueError("'map' is a CNN descriptor; a Spikformer uses 'spatial', 'pooled' "
                             "or 'stem<n>'")
        model.vpr_descriptor = descriptor
    whitening, report = fit_model_whitening(model, root, train_frac, val_frac, dim, shrink)
    meta = info.setdefault("meta" if is_cnn else "metadata", {})
    vpr = meta.setdefault("vpr", {})
    vpr.update({"descriptor": descriptor_mode(model), "whitening": report})
    if is_cnn:
        from vl2spike_ros.models.cnn import save_cnn
        save_cnn(model, out, meta, extra_tensors=whitening.to_tensors())
    else:
        from vl2spike_ros.models import save_model
        save_model(model, out, meta, extra_tensors=whitening.to_tensors())
    return report
