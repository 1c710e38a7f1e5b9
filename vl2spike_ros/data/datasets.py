"""Image sequences for VPR: plain folders, the Nordland summer/winter layout and the
VPR-methods-evaluation layout (``database/``, ``queries/``, UTM in the file names).

All loaders return ``uint8`` arrays ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB order).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
NORDLAND_SEASONS = ("summer", "winter", "spring", "fall")
_NUM_RE = re.compile(r"(\d+)")


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in _NUM_RE.split(path.name)]


def list_images(folder: str | Path) -> list[Path]:
    """Image files of ``folder`` in natural sequence order (``img2`` before ``img10``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()),
                   key=_natural_key)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTS)}) in {folder}")
    return files


def read_image(path: str | Path, grayscale: bool = False) -> np.ndarray:
    """One image as ``uint8`` ``[H, W]`` (grayscale) or ``[H, W, 3]`` RGB."""
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    img = cv2.imread(str(path), flag)
    if img is None:
        raise ValueError(f"cannot decode image {path}")
    return img if grayscale else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_images(paths: list[Path], grayscale: bool = False,
                size: tuple[int, int] | None = None) -> np.ndarray:
    """Stack images; ``size`` = (H, W) resizes with INTER_AREA, else all must share one size."""
    out = []
    for p in paths:
        img = read_image(p, grayscale)
        if size is not None and img.shape[:2] != tuple(size):
            img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        if out and img.shape != out[0].shape:
            raise ValueError(f"{p} has shape {img.shape}, expected {out[0].shape} like the first "
                             "image; pass size=(H, W) to resize on load")
        out.append(img)
    return np.stack(out)


def load_folder(folder: str | Path, grayscale: bool = False,
                size: tuple[int, int] | None = None, limit: int | None = None) -> np.ndarray:
    """All images of a sequence folder (natural order) as one array."""
    files = list_images(folder)
    return load_images(files[:limit] if limit else files, grayscale, size)


# ----------------------------------------------------------------------------- Nordland
def nordland_split_range(n: int, split: str, train_frac: float = 0.6) -> range:
    """Indices of a Nordland split: ``train`` = first ``train_frac`` of places, ``test`` = rest."""
    cut = int(round(n * train_frac))
    ranges = {"train": range(0, cut), "test": range(cut, n), "all": range(0, n)}
    if split not in ranges:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(ranges)}")
    return ranges[split]


def load_nordland(root: str | Path, season: str, split: str = "test", train_frac: float = 0.6,
                  grayscale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Nordland ``root/<season>/images-NNNNN.png``; returns (images, place index [N])."""
    folder = Path(root) / season
    if not folder.is_dir():
        raise FileNotFoundError(f"Nordland season folder {folder} does not exist "
                                f"(expected {'/'.join(NORDLAND_SEASONS)} below {root})")
    files = list_images(folder)
    idx = np.asarray(nordland_split_range(len(files), split, train_frac))
    imgs = load_images([files[i] for i in idx], grayscale=grayscale)
    log.info("Nordland %s/%s: %d frames", season, split, len(idx))
    return imgs, idx


# ----------------------------------------------------------------------------- VPR-methods layout
def parse_utm(name: str) -> tuple[float, float] | None:
    """UTM (east, north) from ``@utm_east@utm_north@...`` file names, else ``None``."""
    parts = Path(name).name.split("@")
    if len(parts) < 3:
        return None
    try:
        return float(parts[1]), float(parts[2])
    except ValueError:
        return None


@dataclass
class ImageSet:
    """A loaded sequence: images, source names and optional UTM positions ``[N, 2]``."""
    images: np.ndarray
    names: list[str]
    utm: np.ndarray | None


def load_image_set(folder: str | Path, grayscale: bool = False,
                   size: tuple[int, int] | None = None) -> ImageSet:
    """Folder -> ImageSet; ``utm`` is set only when every file name carries one."""
    files = list_images(folder)
    utms = [parse_utm(f.name) for f in files]
    utm = np.asarray(utms, dtype=np.float64) if all(u is not None for u in utms) else None
    return ImageSet(load_images(files, grayscale, size), [f.name for f in files], utm)


def load_vpr_methods(root: str | Path, grayscale: bool = False,
                     size: tuple[int, int] | None = None) -> tuple[ImageSet, ImageSet]:
    """``root/database`` and ``root/queries`` (VPR-methods-evaluation layout)."""
    root = Path(root)
    for sub in ("database", "queries"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root / sub} missing: expected the VPR-methods-evaluation "
                                    "layout with database/ and queries/ folders")
    return (load_image_set(root / "database", grayscale, size),
            load_image_set(root / "queries", grayscale, size))
