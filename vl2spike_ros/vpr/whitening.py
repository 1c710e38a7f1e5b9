"""Learned descriptor whitening (closed form, fitted on training places).

Radenović et al. (TPAMI 2019, "learned whitening"): with matching pairs ``(a_i, b_i)`` (the same
place in two traversals), whiten the within-place differences, then rotate to the principal
directions of the whitened data and keep the top ``dim``:

    mu = mean of all training descriptors
    C_s = cov(a_i - b_i) + shrink * tr(C_s)/D * I        (shrinkage keeps it well conditioned)
    W = C_s^(-1/2);  P = W @ top-dim eigenvectors of cov(W (x - mu))
    descriptor(x) = normalize((x - mu) @ P)

Descriptors larger than ``pca_dim`` are first reduced by PCA. Everything is linear, so the fitted
map is a ``[D, dim]`` matrix plus a ``[D]`` mean; it is stored inside the model's safetensors file
(tensors ``vpr_whitening.mean`` / ``vpr_whitening.proj``, the latter as float16 when lossless
enough) and applied by :class:`vl2spike_ros.vpr.place.PlaceDescriptor` for every consumer (maps,
eval, node).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

PREFIX = "vpr_whitening."


@dataclass(frozen=True)
class Whitening:
    """Fitted whitening: ``mean [D]`` and ``proj [D, K]`` (float32 tensors)."""

    mean: torch.Tensor
    proj: torch.Tensor

    def __post_init__(self) -> None:
        if self.mean.ndim != 1 or self.proj.ndim != 2 or self.proj.shape[0] != self.mean.shape[0]:
            raise ValueError(f"whitening needs mean [D] and proj [D, K], got "
                             f"{tuple(self.mean.shape)} and {tuple(self.proj.shape)}")

    @property
    def in_dim(self) -> int:
        return int(self.proj.shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.proj.shape[1])

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` -> L2-normalised ``[B, K]`` (float32)."""
        if z.ndim != 2 or z.shape[1] != self.in_dim:
            raise ValueError(f"whitening expects descriptors [B, {self.in_dim}], "
                             f"got {list(z.shape)}")
        y = (z.float() - self.mean.to(z.device)) @ self.proj.to(z.device)
        return torch.nn.functional.normalize(y, dim=-1)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Return the tensors to store next to the model weights (prefixed names).

        ``proj`` is stored as float16 when that loses < 1e-3 of it (relative Frobenius error;
        halves the file; on the shipped Spikformer R@1 is unchanged and descriptors stay within
        cosine 0.9999998), else as float32; it is always used as float32.
        """
        proj = self.proj.float()
        half = proj.half()
        err = (half.float() - proj).norm() / proj.norm().clamp_min(1e-12)
        keep = half if bool(torch.isfinite(half).all()) and float(err) < 1e-3 else proj
        return {PREFIX + "mean": self.mean.float().contiguous(),
                PREFIX + "proj": keep.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "Whitening | None":
        """Return the whitening stored in ``tensors`` (``None`` if there is none)."""
        keys = {PREFIX + "mean", PREFIX + "proj"}
        present = keys & set(tensors)
        if not present:
            return None
        if present != keys:
            raise ValueError(f"incomplete whitening in weights: has {sorted(present)}, "
                             f"needs {sorted(keys)}")
        return cls(tensors[PREFIX + "mean"].float(), tensors[PREFIX + "proj"].float())


def split_whitening(state: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, torch.Tensor], Whitening | None]:
    """(model state without whitening tensors, whitening or ``None``)."""
    model_state = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    return model_state, Whitening.from_tensors(state)


def fit_whitening(a: np.ndarray, b: np.ndarray, dim: int = 256, shrink: float = 0.3,
                  pca_dim: int = 1024) -> Whitening:
    """Fit on matching descriptors ``a, b [N, D]`` (row i of both = one place, two views)."""
    if a.shape != b.shape or a.ndim != 2 or len(a) < 2:
        raise ValueError(f"whitening needs two matching [N, D] arrays (N >= 2), got "
                         f"{a.shape} and {b.shape}")
    if shrink <= 0:
        raise ValueError(f"shrink must be > 0, got {shrink}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    x = np.concatenate([a, b])
    mu = x.mean(0)
    p0 = np.eye(x.shape[1])
    if x.shape[1] > pca_dim:
        p0 = np.linalg.svd(x - mu, full_matrices=False)[2][:pca_dim].T  # [D, pca_dim]
    pa, pb = (a - mu) @ p0, (b - mu) @ p0
    d = pa - pb
    cs = d.T @ d / len(d)
    cs += shrink * np.trace(cs) / len(cs) * np.eye(len(cs))
    e, v = np.linalg.eigh(cs)
    w = v / np.sqrt(np.maximum(e, 1e-12))
    z = np.concatenate([pa, pb]) @ w
    e2, v2 = np.linalg.eigh(z.T @ z / len(z))
    k = min(dim, v2.shape[1])
    proj = p0 @ w @ v2[:, ::-1][:, :k]
    log.info("whitening fitted on %d pairs: %d -> %d dims (shrink %g)", len(a), a.shape[1], k,
             shrink)
    return Whitening(torch.from_numpy(mu.astype(np.float32)),
                     torch.from_numpy(np.ascontiguousarray(proj, dtype=np.float32)))
