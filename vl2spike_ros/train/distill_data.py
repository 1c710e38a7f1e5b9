"""Build the train / val / test image arrays of a distillation run from a :class:`DataConfig`."""
from __future__ import annotations

from dataclasses import dataclass

from vl2spike_ros.train.config import DataConfig
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
    tr_idx, va_idx = split_train_val(len(full), cfg.val_fraction, seed=VAL_SPLIT_SEED)
    val = full.subset(va_idx) if len(va_idx) else None
    train = full.subset(tr_idx)
    train = train.subset(stratified_subset(train.labels, cfg.train_limit, seed))
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
