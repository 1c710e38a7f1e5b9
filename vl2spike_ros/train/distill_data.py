"""Build the train / val / test image arrays of a distillation run from a :class:`DataConfig`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vl2spike_ros.train.config import DataConfig, config_from_dict
from vl2spike_ros.data.cifar import (
    CIFAR10_SIZE, ImageArray, load_cifar10_tar, load_image_folder, split_train_val,
    stratified_subset,
)

VAL_SPLIT_SEED = 1234  # fixed: the validation split does not change with the run's seed


@dataclass(frozen=True)
class DistillData:
    train: ImageArray
    val: ImageArray | None
    test: ImageArray
    classes: tuple[str, ...]


def split_indices(cfg: DataConfig, labels: np.ndarray,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return indices into the full train split ``labels [N]``: (student subset, validation).

    The subset is drawn with ``cfg.subset_seed`` when set (one subset for every run seed), else
    with the run's ``seed``.
    """
    tr_idx, va_idx = split_train_val(len(labels), cfg.val_fraction, seed=VAL_SPLIT_SEED)
    sub_seed = seed if cfg.subset_seed is None else cfg.subset_seed
    return tr_idx[stratified_subset(labels[tr_idx], cfg.train_limit, sub_seed)], va_idx


def build_data(cfg: DataConfig, seed: int,
               img_size: tuple[int, int] = CIFAR10_SIZE) -> DistillData:
    """Build the train / validation / test arrays of a run.

    A class-balanced train subset (``train_limit``), a validation split carved from the rest of
    train (``val_fraction``), and the test split (``test_limit``).
    """
    if cfg.source == "cifar10":
        from vl2spike_ros.paths import cifar10_tar

        tar = cifar10_tar(cfg.path)
        full, test = load_cifar10_tar(tar, "train"), load_cifar10_tar(tar, "test")
    elif cfg.source == "folder":
        if not cfg.path:
            raise ValueError("data.source 'folder' needs data.path (root/<class>/<image>)")
        full = load_image_folder(cfg.path, img_size)
        test = load_image_folder(cfg.test_path, img_size) if cfg.test_path else None
    else:
        raise ValueError(f"unknown data.source {cfg.source!r} (cifar10 | folder)")
    tr_idx, va_idx = split_indices(cfg, full.labels, seed)
    val = full.subset(va_idx) if len(va_idx) else None
    train = full.subset(tr_idx)
    if test is None:
        if val is None:
            raise ValueError("folder data without test_path needs val_fraction > 0")
        test = val
    if cfg.test_limit:
        test = test.subset(stratified_subset(test.labels, cfg.test_limit, 0))
    if val is not None and cfg.test_limit:
        val = val.subset(stratified_subset(val.labels, cfg.test_limit, 0))
    if len(train) == 0:
        raise ValueError("no training images after the split/subset")
    return DistillData(train=train, val=val, test=test, classes=full.classes)


def student_indices(data: dict, seeds: list[int], labels: np.ndarray) -> np.ndarray:
    """Sorted indices of the full train split that runs of ``data`` train or validate on.

    ``data``: a ``data:`` config section (dict); ``seeds``: the run seeds (each may draw its own
    subset); ``labels [N]``: labels of the full train split. A teacher trained on the other
    images never saw a student's training or validation image.
    """
    cfg = config_from_dict({"data": data}).data
    if cfg.source != "cifar10":
        raise ValueError(f"disjoint teacher split needs data.source cifar10, got {cfg.source!r}")
    parts = [np.concatenate(split_indices(cfg, labels, s)) for s in seeds]
    return np.unique(np.concatenate(parts))
