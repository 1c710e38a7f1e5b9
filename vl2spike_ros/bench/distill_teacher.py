"""Teacher side of ``vl2spike bench distill``: train a disjoint proxy teacher, describe it.

- :func:`ensure_teacher`: when the spec has ``teacher_train`` and ``base.teacher.path`` is
  missing, train the proxy teacher there on the training images that no run of the spec trains
  or validates on.
- :func:`teacher_side`: the teacher's zero-shot top-1 on the bench's test and validation images,
  its energy, and whether it is disjoint from the student's images (read from the JSON saved
  next to the proxy weights, recomputed from the recorded split, not taken on trust).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vl2spike_ros.data.cifar import load_cifar10_tar
from vl2spike_ros.paths import cifar10_tar
from vl2spike_ros.train.config import config_from_dict, config_to_dict
from vl2spike_ros.train.distill_data import build_data, student_indices
from vl2spike_ros.train.features import cached_features
from vl2spike_ros.train.teachers import PROXY_ASSET, build_teacher

log = logging.getLogger(__name__)

ENERGY_IMAGES = 16  # test images the teacher's energy is measured on


def all_seeds(spec: dict) -> list[int]:
    """Return the main seeds plus every selection group's seed (each may draw a subset)."""
    seeds = [int(s) for s in spec["seeds"]]
    for grp in spec.get("select") or []:
        seeds.append(int(grp.get("seed", seeds[0])))
    return sorted(set(seeds))


def ensure_teacher(spec: dict, base: dict, config: str | Path) -> None:
    """Train the disjoint proxy teacher at ``base.teacher.path`` if asked for and missing."""
    from vl2spike_ros.train.teacher_train import TeacherTrainConfig, train_proxy_teacher

    opts = dict(spec.get("teacher_train") or {})
    tc = base.get("teacher", {})
    if not opts or tc.get("kind", "proxy") != "proxy":
        return
    if not tc.get("path"):
        raise ValueError(f"{config}: teacher_train needs base.teacher.path (where to save it)")
    if Path(tc["path"]).is_file():
        return
    threads = int(opts.pop("threads", 1))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    excluded = {"config": str(config), "data": base.get("data", {}), "seeds": all_seeds(spec)}
    log.info("training the disjoint proxy teacher -> %s (%s)", tc["path"], opts)
    try:
        train_proxy_teacher(cifar10_tar(base.get("data", {}).get("path")), tc["path"],
                            TeacherTrainConfig(**opts), excluded=excluded,
                            command=f"vl2spike bench distill --config {config} (teacher_train)")
    finally:
        torch.set_num_threads(before)


def teacher_side(base: dict, cache_dir: Path, seeds: list[int]) -> dict[str, Any]:
    """Zero-shot top-1 (test, validation), energy and provenance of the bench's teacher."""
    from vl2spike_ros.energy import teacher_energy

    cfg = config_from_dict(base)
    data = build_data(cfg.data, seeds[0])
    tc = cfg.teacher
    if tc.kind == "none":
        return {"teacher_id": "none", "test_images": len(data.test), "top1": None,
                "energy_mj": None, "disjoint_from_student": None}
    teacher = build_teacher(tc.kind, tc.name, tc.pretrained, tc.path, "cpu", tc.model_config)
    if not tc.online:  # cached features of the un-augmented training images, per subset
        for seed in sorted({s if cfg.data.subset_seed is None else cfg.data.subset_seed
                            for s in seeds}):
            cached_features(teacher, build_data(cfg.data, seed).train, cache_dir)
    text = teacher.class_embeddings(data.classes, tc.templates)
    out: dict[str, Any] = {"teacher_id": teacher.teacher_id, "test_images": len(data.test),
                           "top1": _zero_shot(teacher, data.test, text, cache_dir)}
    if data.val is not None and len(data.val):
        out["val_top1"] = _zero_shot(teacher, data.val, text, cache_dir)
    x = torch.from_numpy(data.test.images[:ENERGY_IMAGES]).permute(0, 3, 1, 2).float() / 255
    e = teacher_energy(teacher.encode_image, x)
    out.update({"energy_mj": e["energy_mj"], "macs": e["macs"]})
    out.update(provenance(base, seeds))
    return out


def _zero_shot(teacher, data, text: torch.Tensor, cache_dir: Path) -> float:
    feats = cached_features(teacher, data, cache_dir)
    labels = torch.from_numpy(data.labels)
    return float(((feats @ text.T).argmax(-1) == labels).float().mean())


def provenance(base: dict, seeds: list[int]) -> dict[str, Any]:
    """Tell what the teacher was trained on and whether it is disjoint from the student's.

    ``disjoint_from_student``: True / False, or None when it cannot be told (open_clip weights).
    """
    tc = base.get("teacher", {})
    if tc.get("kind", "proxy") != "proxy":
        return {"trained_on": "the pretrained weights' own data", "disjoint_from_student": None}
    meta_path = Path(tc.get("path") or PROXY_ASSET).with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    data = config_to_dict(config_from_dict(base))["data"]
    if data.get("source") != "cifar10":
        return {"trained_on": meta.get("train_data"), "disjoint_from_student": None}
    labels = load_cifar10_tar(cifar10_tar(data.get("path")), "train").labels
    student = student_indices(data, seeds, labels)
    excluded = meta.get("excluded")
    if excluded:
        left_out = student_indices(excluded["data"], excluded["seeds"], labels)
        disjoint = bool(np.isin(student, left_out).all())
    else:  # trained on all (or an unrecorded random part) of the 50k training images
        disjoint = False if not meta.get("config", {}).get("train_limit") else None
    return {"trained_on": meta.get("train_data"), "teacher_train_images": meta.get("train_images"),
            "student_train_and_val_images": int(len(student)),
            "disjoint_from_student": disjoint}
