"""Teacher feature cache: run a (slow) teacher once per image and reuse its outputs.

Choice (documented): features are computed on the *un-augmented* images and keyed by
``(teacher_id, dataset fingerprint)``; the student sees augmented crops/flips of the same image
and is aligned to the clean-image feature (a standard trick for offline KD). Set
``teacher.online: true`` to run the teacher on every augmented batch instead.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from vl2spike_ros.data.cifar import ArrayImageDataset, ImageArray

log = logging.getLogger(__name__)


def dataset_fingerprint(data: ImageArray) -> str:
    """sha256 (16 hex) over the image bytes and labels of ``data``."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.images).tobytes())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    return h.hexdigest()[:16]


def cache_key(teacher_id: str, data: ImageArray, augmentation: str = "none") -> str:
    raw = f"{teacher_id}|{dataset_fingerprint(data)}|{augmentation}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


@torch.no_grad()
def compute_features(teacher, data: ImageArray, batch_size: int = 256, device: str = "cpu",
                     progress: bool = True) -> torch.Tensor:
    """Teacher image features ``[N, D]`` (float32, L2-normalised) of the un-augmented images."""
    loader = DataLoader(ArrayImageDataset(data, augment=False), batch_size=batch_size)
    out = []
    for x, _, _ in tqdm(loader, desc="teacher features", disable=None if progress else True,
                        mininterval=5):
        out.append(teacher.encode_image(x.to(device)).float().cpu())
    return torch.cat(out)


def cached_features(teacher, data: ImageArray, cache_dir: str | Path | None,
                    batch_size: int = 256, device: str = "cpu",
                    progress: bool = True) -> torch.Tensor:
    """:func:`compute_features`, read from / written to ``cache_dir/<key>.safetensors``."""
    from safetensors.torch import load_file, save_file

    from vl2spike_ros.atomic import atomic_path

    if cache_dir is None:
        return compute_features(teacher, data, batch_size, device, progress)
    path = Path(cache_dir) / f"{cache_key(teacher.teacher_id, data)}.safetensors"
    if path.is_file():
        feats = load_file(str(path))["features"]
        if feats.shape[0] == len(data):
            log.info("teacher features from cache %s", path)
            return feats
        log.warning("cache %s has %d rows for %d images; recomputing", path, feats.shape[0],
                    len(data))
    feats = compute_features(teacher, data, batch_size, device, progress)
    with atomic_path(path) as tmp:
        save_file({"features": feats.contiguous()}, str(tmp),
                  metadata={"teacher_id": teacher.teacher_id, "n": str(len(data))})
    return feats


def cached_tensors(cache_dir: str | Path | None, key: str,
                   compute: Callable[[], dict[str, torch.Tensor]],
                   metadata: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Named tensors ``compute()`` read from / written to ``cache_dir/<key>.safetensors``.

    ``key`` must change whenever the result would (teacher id, data fingerprint, settings); no
    ``cache_dir``: computed every time. A cache file that cannot be read is recomputed.
    """
    from safetensors.torch import load_file, save_file

    from vl2spike_ros.atomic import atomic_path

    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        try:
            out = load_file(str(path))
            log.info("teacher features from cache %s", path)
            return out
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            log.warning("cache %s unreadable (%s); recomputing", path, exc)
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in out.items()}, str(tmp),
                  metadata=metadata or {})
    return out
