"""Image classification data for distillation: CIFAR-10 tar and ``class/image`` folders.

Images are decoded once into a uint8 array ``[N, H, W, 3]`` (RGB) held in memory; datasets
index into it and apply the standard augmentation (random crop with padding + horizontal flip).
"""
from __future__ import annotations

import functools
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_SIZE = (32, 32)  # (H, W)
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class ImageArray:
    """Decoded images ``[N,H,W,3]`` uint8 RGB, labels ``[N]`` int64 and class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray) -> "ImageArray":
        return ImageArray(self.images[idx], self.labels[idx], self.classes)


def _decode(buf: bytes, name: str, size: tuple[int, int] | None) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode image {name}")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if size is not None and img.shape[:2] != size:
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return img


@functools.lru_cache(maxsize=4)
def _load_cifar10_tar_cached(path: str, split: str) -> ImageArray:
    imgs: list[np.ndarray] = []
    labels: list[int] = []
    cls_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            parts = m.name.strip("./").split("/")
            if len(parts) != 3 or parts[0] != split or not parts[2].lower().endswith(IMAGE_EXTS):
                continue
            if parts[1] not in cls_index:
                raise ValueError(f"{path}: unknown class folder {parts[1]!r} in {m.name}")
            fh = tf.extractfile(m)
            imgs.append(_decode(fh.read(), m.name, CIFAR10_SIZE))
            labels.append(cls_index[parts[1]])
    if not imgs:
        raise ValueError(f"{path}: no images under '{split}/<class>/' in the tar")
    log.info("decoded %d %s images from %s", len(imgs), split, path)
    return ImageArray(np.stack(imgs), np.asarray(labels, np.int64), CIFAR10_CLASSES)


def load_cifar10_tar(path: str | Path, split: str = "train") -> ImageArray:
    """Decode the ``split`` (train/test) members of the CIFAR-10 tar (cached in memory)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"CIFAR-10 tar not found: {p}")
    return _load_cifar10_tar_cached(str(p.resolve()), split)


def round_robin(data: ImageArray, n: int) -> np.ndarray:
    """Take the first ``n`` images with the classes in turn: ``[min(n, N), H, W, 3]``.

    Classes in order of first appearance, each class's images in stored order.
    """
    labels = data.labels
    _, first = np.unique(labels, return_index=True)
    per_class = [np.flatnonzero(labels == c) for c in labels[np.sort(first)]]
    order = [idx[r] for r in range(max(map(len, per_class), default=0))
             for idx in per_class if r < len(idx)]
    return data.images[np.asarray(order[:n], dtype=np.int64)]


def load_image_folder(root: str | Path, size: tuple[int, int] = CIFAR10_SIZE) -> ImageArray:
    """Read ``root/<class>/<image>`` files (classes sorted by name), resized to ``size`` (H,W)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir()))
    if not classes:
        raise ValueError(f"{root}: expected class sub-folders (root/<class>/<image>)")
    imgs, labels = [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() in IMAGE_EXTS:
                imgs.append(_decode(f.read_bytes(), str(f), size))
                labels.append(ci)
    if not imgs:
        raise ValueError(f"{root}: no images found in class folders")
    return ImageArray(np.stack(imgs), np.asarray(labels, np.int64), classes)


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic random split of ``range(n)`` into (train_idx, val_idx)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Return indices of a class-balanced random subset of ~``n`` (all if ``n<=0``/too big)."""
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = max(1, n // len(classes))
    out = [rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]
    return np.sort(np.concatenate(out))


class ArrayImageDataset(Dataset):
    """Items ``(image [3,H,W] float in [0,1], label, index)`` from an :class:`ImageArray`.

    ``augment``: random crop (zero padding ``pad``) + horizontal flip, seeded per
    (``seed``, epoch, index) so runs and resumes are reproducible. Call ``set_epoch``.
    """

    def __init__(self, data: ImageArray, augment: bool = False, pad: int = 4, seed: int = 0):
        self.data = data
        self.augment = augment
        self.pad = pad
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        img = self.data.images[i]
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, int(i)))
            img = augment_crop_flip(img, rng, self.pad)
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        return x, int(self.data.labels[i]), int(i)


def augment_crop_flip(img: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
    """Random crop of the zero-padded ``img`` [H,W,C] back to [H,W,C], then a random flip."""
    h, w = img.shape[:2]
    if pad > 0:
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        dy, dx = rng.integers(0, 2 * pad + 1, size=2)
        img = padded[dy:dy + h, dx:dx + w]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return img
