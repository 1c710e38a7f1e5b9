"""Image sequences from an image folder or a ROS 2 bag, with per-frame place metadata.

* :func:`stream_source` reads frames **one at a time** at their native size (bounded memory,
  any mix of sizes and channel counts): what ``vl2spike replay`` feeds to the pipeline, which
  resizes every frame as the node does;
* :func:`load_source` returns a :class:`Sequence`: frames resized with INTER_AREA to ``size``
  and stacked (channel counts harmonised: grey frames are promoted to RGB when a source mixes
  them, alpha is dropped), metadata dicts with ``source, frame, stamp_ns`` and, where known,
  ``pose`` (x, y, z, qx, qy, qz, qw) + ``frame_id``, and planar positions ``xy [N, 2]`` or None.

A bag whose pose topic is ``sensor_msgs/NavSatFix`` gives poses in east/north/up metres from a
geodetic origin (``geo_origin``: the first fix, or the one passed in, e.g. a map's), by
:func:`vl2spike_ros.io.poses.latlon_to_local`.

Every frame is size-checked before decoding (``max_pixels``, see :mod:`vl2spike_ros.io.decode`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from vl2spike_ros.data.datasets import folder_utm, list_images, read_image
from vl2spike_ros.io.decode import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)
BAG_SUFFIXES = (".mcap", ".db3")


GeoOrigin = tuple[float, float, float]  # (lat deg, lon deg, alt m)


@dataclass
class Sequence:
    images: np.ndarray
    metas: list[dict]
    xy: np.ndarray | None
    geo_origin: GeoOrigin | None = None  # where NavSatFix poses are measured from


@dataclass(frozen=True)
class FrameStream:
    """Frames of a source, read lazily.

    ``frames`` yields ``(meta, image)`` at native size; ``positions(metas)`` gives planar
    ``xy [N, 2]`` for the yielded metas (or None) and adds ``pose``/``utm`` to them; ``total``
    is the frame count when known up front; ``geo_origin``: the geodetic origin of the poses
    when they come from NavSatFix fixes, else None.
    """

    frames: Iterator[tuple[dict, np.ndarray]]
    total: int | None
    positions: Callable[[list[dict]], np.ndarray | None]
    geo_origin: GeoOrigin | None = None


@dataclass(frozen=True)
class SourceOptions:
    """How to read a source: image topic and pose topic (bags), stride, pixel limit."""

    topic: str | None = None
    pose_topic: str | None = None
    every: int = 1
    max_pixels: int | None = DEFAULT_MAX_PIXELS


def is_bag(path: str | Path) -> bool:
    p = Path(path)
    return (p.is_dir() and (p / "metadata.yaml").is_file()) or p.suffix in BAG_SUFFIXES


def _resize(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or img.shape[:2] == tuple(size):
        return img
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _pose_topic(path: Path, pose_topic: str | None) -> str | None:
    """``pose_topic``, else the bag's only pose topic (None, with a warning if several)."""
    from vl2spike_ros.io import bags
    if pose_topic is not None:
        return pose_topic
    types = set(bags.POSE_TYPES.values())
    topics = sorted(t for t, s in bags.list_topics(path).items() if s.msgtype in types)
    if len(topics) > 1:
        log.warning("%s has several pose topics %s; pass pose_topic", path, topics)
    return topics[0] if len(topics) == 1 else None


def _bag_poses(path: Path, stamps: np.ndarray, pose_topic: str | None,
               origin: GeoOrigin | None = None):
    from vl2spike_ros.io import bags
    topic = _pose_topic(path, pose_topic)
    if topic is None:
        return None
    ps, xyz, quat = bags.read_poses(path, topic, origin=origin)
    keep = np.r_[True, np.diff(ps) > 0]
    return bags.interpolate_poses(ps[keep], xyz[keep], quat[keep], stamps)


def _bag_positions(path: Path, pose_topic: str | None,
                   origin: GeoOrigin | None) -> Callable[[list[dict]], np.ndarray | None]:
    def positions(metas: list[dict]) -> np.ndarray | None:
        if not metas:
            return None
        stamps = np.asarray([m["stamp_ns"] for m in metas], np.int64)
        poses = _bag_poses(path, stamps, pose_topic, origin)
        if poses is None:
            return None
        xyz, quat = poses
        for m, p, q in zip(metas, xyz, quat):
            m["pose"] = [float(v) for v in (*p, *q)]
            m["frame_id"] = "map"
        return xyz[:, :2]
    return positions


def _bag_origin(path: Path, pose_topic: str | None,
                geo_origin: GeoOrigin | None) -> GeoOrigin | None:
    """Origin of a NavSatFix pose topic: ``geo_origin`` or its first fix; None for other poses."""
    from vl2spike_ros.io import bags
    topic = _pose_topic(path, pose_topic)
    first = bags.read_fix_origin(path, topic) if topic is not None else None
    if first is None:
        return None
    return tuple(float(v) for v in geo_origin) if geo_origin is not None else first


def stream_bag(path: str | Path, topic: str | None = None, pose_topic: str | None = None,
               every: int = 1, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               geo_origin: GeoOrigin | None = None) -> FrameStream:
    """Stream the frames of an image topic (every ``every``-th), one at a time.

    Stamps are header stamps (bag time where a header stamp is zero); ``positions``
    interpolates the poses at them. NavSatFix poses are metres from ``geo_origin`` (None: the
    first fix), reported as the stream's ``geo_origin``.
    """
    from vl2spike_ros.io import bags
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    frames = bags.read_image_bag(path, topic, max_pixels=max_pixels)  # checks the bag now
    topics = bags.list_topics(path)
    count = topics[topic].count if topic is not None else sum(
        s.count for s in topics.values() if s.msgtype in bags.IMAGE_TYPES)
    total = -(-count // every)

    def gen() -> Iterator[tuple[dict, np.ndarray]]:
        for i, fr in enumerate(frames):
            if i % every == 0:
                stamp = int(fr.header_stamp_ns) or int(fr.stamp_ns)
                yield {"source": path.name, "frame": i, "stamp_ns": stamp}, fr.image
    origin = _bag_origin(path, pose_topic, geo_origin)
    return FrameStream(gen(), total, _bag_positions(path, pose_topic, origin), origin)


def stream_folder(path: str | Path, every: int = 1,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> FrameStream:
    """Images of a folder in natural order (RGB), one at a time; UTM from VPR-methods names."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    files = list_images(path)[::every]
    utm = folder_utm(files)

    def gen() -> Iterator[tuple[dict, np.ndarray]]:
        for i, f in enumerate(files):
            yield {"source": f.name, "frame": i * every}, read_image(f, False, max_pixels)

    def positions(metas: list[dict]) -> np.ndarray | None:
        if utm is None:
            return None
        xy = utm[[m["frame"] // every for m in metas]]
        for m, p in zip(metas, xy):
            m["utm"] = [float(p[0]), float(p[1])]
        return xy
    return FrameStream(gen(), len(files), positions)


def stream_source(path: str | Path, topic: str | None = None, pose_topic: str | None = None,
                  every: int = 1, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  geo_origin: GeoOrigin | None = None) -> FrameStream:
    """Open an image folder or a bag as a :class:`FrameStream` (native-size frames).

    ``geo_origin``: measure a bag's NavSatFix poses from this point (e.g. the map's origin).
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist (expected an image folder or a ROS 2 bag)")
    if is_bag(path):
        return stream_bag(path, topic, pose_topic, every, max_pixels, geo_origin)
    return stream_folder(path, every, max_pixels)


def _harmonise(images: list[np.ndarray], where: str) -> np.ndarray:
    """Stack frames of one size whose channel counts may differ.

    Alpha is dropped, single-channel ``[H, W, 1]`` squeezed, grey promoted to RGB when colour
    frames are present.
    """
    out = [im[..., 0] if im.ndim == 3 and im.shape[2] == 1 else
           im[..., :3] if im.ndim == 3 and im.shape[2] == 4 else im for im in images]
    if len({im.ndim for im in out}) > 1:
        out = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in out]
    sizes = sorted({im.shape[:2] for im in out})
    if len(sizes) > 1:
        raise ValueError(f"frames in {where} differ in size {sizes}: give a target size to "
                         "resize them on load (size=(H, W))")
    return np.stack(out)


def load_source(path: str | Path, size: tuple[int, int] | None = None, topic: str | None = None,
                pose_topic: str | None = None, every: int = 1,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Sequence:
    """Load an image folder (natural order; UTM from VPR-methods names) or a bag.

    Frames are resized to ``size`` (H, W) and stacked; mixed sizes need ``size``, mixed channel
    counts are fine.
    """
    stream = stream_source(path, topic, pose_topic, every, max_pixels)
    metas, imgs = [], []
    for meta, img in stream.frames:
        metas.append(meta)
        imgs.append(_resize(img, size))
    if not imgs:
        raise ValueError(f"no image frames in {path}")
    images = _harmonise(imgs, str(path))
    return Sequence(images, metas, stream.positions(metas), stream.geo_origin)


def load_bag(path: str | Path, topic: str | None = None, pose_topic: str | None = None,
             size: tuple[int, int] | None = None, every: int = 1,
             max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Sequence:
    """Frames of an image topic (every ``every``-th) + poses interpolated at their stamps."""
    if not Path(path).exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    return load_source(path, size, topic, pose_topic, every, max_pixels)
