"""Image sequences from an image folder or a ROS 2 bag, with per-frame place metadata.

``load_source(path)`` -> :class:`Sequence` (images resized with INTER_AREA to ``size`` when
given, metadata dicts with ``source, frame, stamp_ns`` and, where known, ``pose`` (x, y, z,
qx, qy, qz, qw) + ``frame_id``, and planar positions ``xy [N, 2]`` or ``None``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vl2spike_ros.data.datasets import load_image_set

log = logging.getLogger(__name__)
BAG_SUFFIXES = (".mcap", ".db3")


@dataclass
class Sequence:
    images: np.ndarray
    metas: list[dict]
    xy: np.ndarray | None


def is_bag(path: str | Path) -> bool:
    p = Path(path)
    return (p.is_dir() and (p / "metadata.yaml").is_file()) or p.suffix in BAG_SUFFIXES


def _resize(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or img.shape[:2] == tuple(size):
        return img
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _bag_poses(path: Path, stamps: np.ndarray, pose_topic: str | None):
    from vl2spike_ros.io import bags
    types = set(bags.POSE_TYPES.values())
    topics = {t: s for t, s in bags.list_topics(path).items() if s.msgtype in types}
    if pose_topic is None and len(topics) != 1:
        if topics:
            log.warning("%s has several pose topics %s; pass pose_topic", path, sorted(topics))
        return None
    ps, xyz, quat = bags.read_poses(path, pose_topic)
    keep = np.r_[True, np.diff(ps) > 0]
    return bags.interpolate_poses(ps[keep], xyz[keep], quat[keep], stamps)


def load_bag(path: str | Path, topic: str | None = None, pose_topic: str | None = None,
             size: tuple[int, int] | None = None, every: int = 1) -> Sequence:
    """Frames of an image topic (every ``every``-th) + poses interpolated at their stamps."""
    from vl2spike_ros.io import bags
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    imgs, stamps, hdr = [], [], []
    for i, fr in enumerate(bags.read_image_bag(path, topic)):
        if i % every == 0:
            imgs.append(_resize(fr.image, size))
            stamps.append(int(fr.stamp_ns))
            hdr.append(int(fr.header_stamp_ns) or int(fr.stamp_ns))
    if not imgs:
        raise ValueError(f"no image frames in bag {path}")
    shapes = {im.shape for im in imgs}
    if len(shapes) > 1:
        raise ValueError(f"frames in {path} differ in shape {sorted(shapes)}; pass size=(H, W)")
    st = np.asarray(hdr, np.int64)
    poses = _bag_poses(path, st, pose_topic)
    metas = [{"source": path.name, "frame": i * every, "stamp_ns": s} for i, s in enumerate(hdr)]
    xy = None
    if poses is not None:
        xyz, quat = poses
        for m, p, q in zip(metas, xyz, quat):
            m["pose"] = [float(v) for v in (*p, *q)]
            m["frame_id"] = "map"
        xy = xyz[:, :2]
    return Sequence(np.stack(imgs), metas, xy)


def load_source(path: str | Path, size: tuple[int, int] | None = None, topic: str | None = None,
                pose_topic: str | None = None, every: int = 1) -> Sequence:
    """An image folder (natural order; UTM from VPR-methods names) or a bag."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist (expected an image folder or a ROS 2 bag)")
    if is_bag(path):
        return load_bag(path, topic, pose_topic, size, every)
    s = load_image_set(path, grayscale=False, size=size)
    idx = np.arange(0, len(s.images), every)
    metas = [{"source": s.names[i], "frame": int(i)} for i in idx]
    xy = s.utm[idx] if s.utm is not None else None
    if xy is not None:
        for m, p in zip(metas, xy):
            m["utm"] = [float(p[0]), float(p[1])]
    return Sequence(s.images[idx], metas, xy)
