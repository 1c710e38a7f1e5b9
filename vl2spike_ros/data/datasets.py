"""Image sequences for VPR: plain folders and the Nordland summer/winter layout.

Folders: natural file order, UTM parsed from VPR-methods-evaluation file names
``@east@north@...``. Nordland: the one loader family of the package (splits, frame ranges,
even spreads).

All loaders return ``uint8`` arrays ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB order).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vl2spike_ros.io.decode import DEFAULT_MAX_PIXELS, decode_image_bytes

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
NORDLAND_SEASONS = ("summer", "winter", "spring", "fall")
NORDLAND_TRAIN_FRACTION = 0.6  # first 60 % of the route's places train, the last 40 % are held out
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


def read_image(path: str | Path, grayscale: bool = False,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read one image as ``uint8`` ``[H, W]`` (grayscale) or ``[H, W, 3]`` RGB.

    Checked before decoding (:func:`~vl2spike_ros.io.decode.decode_image_bytes`): a file whose
    header announces more than ``max_pixels`` or a truncated file raises ValueError naming it.
    """
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    img = decode_image_bytes(Path(path).read_bytes(), flag, max_pixels, f"image {path}")
    return img if grayscale else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_images(paths: list[Path], grayscale: bool = False, size: tuple[int, int] | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Stack images; ``size`` = (H, W) resizes with INTER_AREA, else all must share one size."""
    out = []
    for p in paths:
        img = read_image(p, grayscale, max_pixels)
        if size is not None and img.shape[:2] != tuple(size):
            img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        if out and img.shape != out[0].shape:
            raise ValueError(f"{p} has shape {img.shape}, expected {out[0].shape} like the first "
                             "image; pass size=(H, W) to resize on load")
        out.append(img)
    return np.stack(out)


# ----------------------------------------------------------------------------- Nordland
def nordland_split_range(n: int, split: str, train_frac: float = NORDLAND_TRAIN_FRACTION) -> range:
    """Return the indices of a Nordland split (``train``: first ``train_frac``, ``test``: rest)."""
    cut = int(round(n * train_frac))
    ranges = {"train": range(0, cut), "test": range(cut, n), "all": range(0, n)}
    if split not in ranges:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(ranges)}")
    return ranges[split]


def nordland_files(root: str | Path, season: str) -> list[Path]:
    """Frames ``root/<season>/images-NNNNN.png`` in route order (frame i = place i)."""
    folder = Path(root) / season
    if not folder.is_dir():
        raise FileNotFoundError(f"Nordland season folder {folder} does not exist "
                                f"(expected {'/'.join(NORDLAND_SEASONS)} below {root})")
    return list_images(folder)


def load_nordland(root: str | Path, season: str, split: str = "test",
                  train_frac: float = NORDLAND_TRAIN_FRACTION,
                  grayscale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Nordland ``root/<season>/images-NNNNN.png``; returns (images, place index [N])."""
    files = nordland_files(root, season)
    idx = np.asarray(nordland_split_range(len(files), split, train_frac))
    imgs = load_images([files[i] for i in idx], grayscale=grayscale)
    log.info("Nordland %s/%s: %d frames", season, split, len(idx))
    return imgs, idx


def load_nordland_frames(root: str | Path, season: str = "summer", start: int = 0,
                         count: int = 16, step: int = 1) -> np.ndarray:
    """Load ``count`` grey frames ``start, start + step, ...`` of one season: ``[count, H, W]``."""
    picked = nordland_files(root, season)[start:start + count * step:step]
    if len(picked) < count:
        raise ValueError(f"only {len(picked)} Nordland {season} frames from {start} (step {step})")
    return load_images(picked, grayscale=True)


def load_nordland_spread(root: str | Path, n: int,
                         seasons: tuple[str, ...] = ("summer", "winter")) -> np.ndarray:
    """Load ``n`` grey frames evenly spread over each season's route: uint8 ``[n, H, W]``.

    Seasons in turn; the first ``n % len(seasons)`` seasons get one frame more.
    """
    frames = []
    for k, season in enumerate(seasons):
        files = nordland_files(root, season)
        m = n // len(seasons) + (1 if k < n % len(seasons) else 0)
        idx = np.linspace(0, len(files) - 1, m).round().astype(int)
        frames += [read_image(files[i], grayscale=True) for i in idx]
    return np.stack(frames)


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


def folder_utm(files: list[Path]) -> np.ndarray | None:
    """UTM positions ``[N, 2]`` from the file names, or None unless every name carries one."""
    utms = [parse_utm(f.name) for f in files]
    return np.asarray(utms, dtype=np.float64) if all(u is not None for u in utms) else None


def load_image_set(folder: str | Path, grayscale: bool = False,
                   size: tuple[int, int] | None = None,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageSet:
    """Folder -> ImageSet; ``utm`` is set only when every file name carries one."""
    files = list_images(folder)
    return ImageSet(load_images(files, grayscale, size, max_pixels), [f.name for f in files],
                    folder_utm(files))
