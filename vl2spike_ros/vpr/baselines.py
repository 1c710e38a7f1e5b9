"""Classic single-frame VPR baselines on ``uint8`` image arrays.

- SAD on patch-normalised images (SeqSLAM's single-frame front end): grey, resize to
  ``size`` (W=64, H=32 by default), normalise each ``patch`` x ``patch`` block to zero mean and
  unit std, similarity = -mean absolute difference.
- HOG global descriptor with 4x4-px cells (Dalal-Triggs layout, numpy), L2-normalised, cosine
  similarity.
Both return descriptors ``[N, D]`` float32 and a similarity function ``(q, db) -> [Q, M]``.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def to_grey(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[N,H,W(,C)]`` uint8 -> grey float32 ``[N, h, w]`` with ``size`` = (h, w), INTER_AREA."""
    out = []
    for im in images:
        if im.ndim == 3:
            im = cv2.cvtColor(im[:, :, :3], cv2.COLOR_RGB2GRAY)
        if im.shape[:2] != tuple(size):
            im = cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        out.append(im)
    return np.stack(out).astype(np.float32)


def patch_normalise(images: np.ndarray, size=(32, 64), patch: int = 8) -> np.ndarray:
    """Patch-normalised grey images flattened: ``[N, h*w]`` float32."""
    g = to_grey(images, size)
    n, h, w = g.shape
    if h % patch or w % patch:
        raise ValueError(f"size {size} not divisible by patch {patch}")
    b = g.reshape(n, h // patch, patch, w // patch, patch)
    mu = b.mean(axis=(2, 4), keepdims=True)
    sd = b.std(axis=(2, 4), keepdims=True)
    b = (b - mu) / np.maximum(sd, 1e-3)
    return b.reshape(n, -1).astype(np.float32)


def sad_similarity(q: np.ndarray, db: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Negative mean absolute difference ``[Q, M]`` between flattened descriptors."""
    tq, tdb = torch.from_numpy(q), torch.from_numpy(db)
    rows = [-torch.cdist(tq[s:s + chunk], tdb, p=1) / q.shape[1] for s in range(0, len(q), chunk)]
    return torch.cat(rows).numpy()


def _cell_histograms(g: np.ndarray, cell: int, bins: int) -> np.ndarray:
    """Grey ``[N, h, w]`` -> orientation histograms ``[N, h/cell, w/cell, bins]``.

    Unsigned, magnitude-weighted, linear interpolation between neighbouring bins.
    """
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
    gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
    mag = np.hypot(gx, gy)
    ang = np.rad2deg(np.arctan2(gy, gx)) % 180.0
    pos = ang / (180.0 / bins) - 0.5
    lo = np.floor(pos).astype(np.int64)
    frac = (pos - lo).astype(np.float32)
    n, h, w = g.shape
    hist = np.zeros((n, h // cell, w // cell, bins), np.float32)
    ci = (np.arange(h) // cell)[None, :, None]
    cj = (np.arange(w) // cell)[None, None, :]
    ni = np.arange(n)[:, None, None]
    for b_idx, wgt in ((lo % bins, 1 - frac), ((lo + 1) % bins, frac)):
        np.add.at(hist, (ni, ci, cj, b_idx), mag * wgt)
    return hist


def hog_descriptors(images: np.ndarray, size=(32, 64), cell: int = 4,
                    bins: int = 9) -> np.ndarray:
    """HOG (``cell`` px cells, 2x2-cell blocks, stride one cell, L2-Hys): ``[N, D]``, L2-normed."""
    g = to_grey(images, size)
    h, w = size
    if h % cell or w % cell:
        raise ValueError(f"size {size} not divisible by cell {cell}")
    hist = _cell_histograms(g, cell, bins)
    blocks = np.concatenate([hist[:, :-1, :-1], hist[:, 1:, :-1], hist[:, :-1, 1:],
                             hist[:, 1:, 1:]], axis=-1)  # [N, bh, bw, 4*bins]
    blocks /= np.linalg.norm(blocks, axis=-1, keepdims=True) + 1e-6
    blocks = np.minimum(blocks, 0.2)
    blocks /= np.linalg.norm(blocks, axis=-1, keepdims=True) + 1e-6
    d = blocks.reshape(len(g), -1).astype(np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def cosine_similarity(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Inner product of L2-normalised descriptors ``[Q, M]``."""
    return q @ db.T


BASELINES = {
    "sad": (patch_normalise, sad_similarity),
    "hog": (hog_descriptors, cosine_similarity),
}
