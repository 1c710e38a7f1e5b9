"""Helpers for the own-route training tests: synthetic traversals, bags, a tiny ViT teacher.

A traversal is a window sliding along a random smooth panorama (frame i = the window at column
``STRIDE * i``); a second traversal sees the same places under other lighting and noise.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

TEST_DATA = Path(__file__).resolve().parent / "data"
TINY_VIT_JSON = TEST_DATA / "tiny_vit.json"
FRAME_HW = (48, 96)
STRIDE = 6


def panorama(n: int, seed: int = 0) -> np.ndarray:
    """Random smooth RGB strip wide enough for ``n`` frames."""
    rng = np.random.default_rng(seed)
    w = FRAME_HW[1] + STRIDE * n
    small = rng.integers(0, 256, (FRAME_HW[0] // 4, w // 4 + 1, 3)).astype(np.uint8)
    big = cv2.resize(small, (w, FRAME_HW[0]), interpolation=cv2.INTER_CUBIC)
    return big


def traversal(n: int, variant: int = 0, seed: int = 0) -> list[np.ndarray]:
    """Return ``n`` RGB frames ``[H, W, 3]`` along the panorama.

    ``variant`` > 0: other lighting and noise.
    """
    pano = panorama(n, seed).astype(np.float32)
    rng = np.random.default_rng(100 + variant)
    out = []
    for i in range(n):
        f = pano[:, STRIDE * i:STRIDE * i + FRAME_HW[1]]
        if variant:
            f = f * (0.7 + 0.1 * variant) + 20 + rng.normal(0, 6, f.shape)
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out


def write_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    """Write frames as ``folder/NNNN.png`` (BGR on disk, as cv2 reads them back as RGB)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


def write_bag(path: Path, frames: list[np.ndarray], poses=None, pose_type: str = "odometry",
              compressed: bool = False, storage: str = "mcap") -> Path:
    """Write a ROS 2 bag with one image topic (+ one pose per frame)."""
    from vl2spike_ros.io.bags import BagWriteOptions, write_image_bag

    opts = BagWriteOptions(storage=storage, compressed=compressed, pose_type=pose_type,
                           rate_hz=10.0)
    write_image_bag(path, frames, opts, poses=poses)
    return path


def line_poses(n: int, spacing: float = 2.0, offset: float = 0.0) -> list[tuple[float, ...]]:
    """Positions along the x axis, ``spacing`` metres apart (Odometry/PoseStamped)."""
    return [(offset + spacing * i, 0.0, 0.0) for i in range(n)]


def tiny_vit_checkpoint(tmp: Path, seed: int = 0) -> Path:
    """Save a random tiny open_clip ViT (config ``test/data/tiny_vit.json``) to a file."""
    import open_clip
    import torch

    open_clip.add_model_config(TINY_VIT_JSON)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_VIT_JSON.stem, pretrained=None)
    path = tmp / "tiny_vit.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path
