"""Training routes for place recognition: the user's own traversals, with or without labels.

A route is one or more traversals of an environment, loaded at the student's input size:

* ``nordland``: a Nordland root (``<season>/images-NNNNN.png``); seasons aligned by frame index,
  first ``train_frac`` of the places only (the rest is the held-out test segment);
* ``folders``: two or more image folders aligned by frame index (frame i of each = one place);
* ``bags``: two or more ROS 2 bags (mcap or sqlite3, raw or compressed images) with poses
  (Odometry, PoseStamped, PoseWithCovarianceStamped or NavSatFix, interpolated at the frame
  stamps): positives are frames of another traversal within ``radius_m``; in-batch negatives
  are frames beyond ``margin_m`` (frames in between are neither);
* ``unlabeled``: one traversal (folder or bag), or several, without place labels, for
  label-free distillation.

:func:`load_route` returns a :class:`Route`; :func:`iter_route_frames` streams the same frames
again at their native size (for a teacher that needs more pixels than the student).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy.spatial import cKDTree

from vl2spike_ros.data.datasets import NORDLAND_SEASONS, NORDLAND_TRAIN_FRACTION
from vl2spike_ros.data.sources import is_bag, load_source, stream_source
from vl2spike_ros.io import bags
from vl2spike_ros.io.poses import latlon_to_local

log = logging.getLogger(__name__)

NORDLAND, FOLDERS, BAGS, UNLABELED, AUTO = "nordland", "folders", "bags", "unlabeled", "auto"
ROUTE_KINDS = (AUTO, NORDLAND, FOLDERS, BAGS, UNLABELED)
MIN_FRAMES = 8  # per traversal: fewer cannot fill a contrastive batch or fit a whitening


@dataclass(frozen=True)
class RouteOptions:
    """How to read a route (``data`` section of a VPR recipe)."""

    kind: str = AUTO
    topic: str | None = None           # image topic (bags; None: the only one)
    pose_topic: str | None = None      # pose topic (bags; None: the only one)
    every: int = 1                     # use every N-th frame
    max_frames: int = 0                # per traversal, evenly spread (0: all)
    radius_m: float = 5.0              # bags: positives within this distance (metres)
    margin_m: float = 20.0             # bags: negatives beyond this distance (metres)
    seasons: tuple[str, ...] = ("summer", "winter")   # nordland traversals
    train_frac: float = NORDLAND_TRAIN_FRACTION       # nordland: training part of the route
    val_frac: float = 0.1              # aligned kinds: last part of the places for validation
    min_frames: int = MIN_FRAMES


@dataclass
class Traversal:
    """One traversal as read: its source, and which frames of its stream were kept."""

    path: str
    topic: str | None
    every: int
    kept: np.ndarray                   # positions in the (every-strided) frame stream


@dataclass
class Route:
    """Frames of all traversals, concatenated, with place labels where known.

    ``images``: uint8 ``[M, H, W(, 3)]``; ``traversal``: ``[M]`` traversal index; ``coords``:
    ``[M]`` frame index (aligned kinds) or ``[M, 2]`` metres (bags), None when unlabeled;
    ``positives[i]``: indices of frame i's positives in other traversals, nearest first;
    ``val``: held-out aligned frames ``(a, b)`` of the first two traversals, or None;
    ``margin``: bags only, in-batch negatives lie beyond it (metres).
    """

    kind: str
    images: np.ndarray
    traversal: np.ndarray
    coords: np.ndarray | None
    positives: list[np.ndarray] | None
    traversals: list[Traversal]
    val: tuple[np.ndarray, np.ndarray] | None = None
    margin: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def labeled(self) -> bool:
        return self.positives is not None

    def anchors(self) -> np.ndarray:
        """Return the frames that have at least one positive (all frames if unlabeled)."""
        if self.positives is None:
            return np.arange(len(self.images))
        return np.asarray([i for i, p in enumerate(self.positives) if len(p)], dtype=np.int64)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Return matching ``(i, j)`` index pairs.

        Each frame of the first traversal that has a positive, and its nearest positive.
        """
        if self.positives is None:
            raise ValueError("an unlabeled route has no matching pairs")
        first = [i for i in np.flatnonzero(self.traversal == 0) if len(self.positives[i])]
        return (np.asarray(first, dtype=np.int64),
                np.asarray([self.positives[i][0] for i in first], dtype=np.int64))


def resolve_kind(paths: list[str | Path], kind: str = AUTO) -> str:
    """Return the route kind of ``paths`` (``kind`` checked, or guessed when ``"auto"``)."""
    if kind not in ROUTE_KINDS:
        raise ValueError(f"unknown data.kind {kind!r}; use one of {', '.join(ROUTE_KINDS)}")
    if not paths:
        raise ValueError("no training data: pass --data PATH (an image folder or a ROS 2 bag; "
                         "two or more for traversals with place labels)")
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"training data {p} does not exist "
                                    "(expected an image folder, a ROS 2 bag or a Nordland root)")
    if kind != AUTO:
        return kind
    if len(paths) == 1:
        return NORDLAND if _nordland_root(paths[0]) is not None else UNLABELED
    bag = [is_bag(p) for p in paths]
    if all(bag):
        return BAGS
    if not any(bag):
        return FOLDERS
    raise ValueError("--data mixes bags and image folders; give traversals of one kind "
                     "(or set data.kind: unlabeled)")


def _nordland_root(path: str | Path) -> Path | None:
    p = Path(path)
    for root in (p, p / "nordland"):
        if sum((root / s).is_dir() for s in NORDLAND_SEASONS) >= 2:
            return root
    return None


def load_route(paths: list[str | Path], size: tuple[int, int],
               opts: RouteOptions = RouteOptions(), pos_tolerance: int = 1) -> Route:
    """Load the traversals ``paths`` as a :class:`Route` with frames resized to ``size`` (H, W).

    ``pos_tolerance``: traversals aligned by frame index count frames within +-N as positives.
    """
    kind = resolve_kind(paths, opts.kind)
    if kind in (FOLDERS, BAGS) and len(paths) < 2:
        raise ValueError(f"data.kind {kind} needs two or more traversals (got {len(paths)}); "
                         "one traversal trains label-free (data.kind: unlabeled)")
    if kind == NORDLAND:
        return _nordland(paths, size, opts, pos_tolerance)
    if kind == BAGS:
        return _bags(paths, size, opts)
    seqs = [_load(p, size, opts) for p in paths]
    if kind == UNLABELED:
        images, trav = _concat([s[0] for s in seqs])
        return Route(UNLABELED, images, trav, None, None, [s[1] for s in seqs],
                     info={"per_traversal": [len(s[0]) for s in seqs]})
    return _aligned(FOLDERS, seqs, opts, pos_tolerance)


def _load(path, size, opts: RouteOptions, keep_frac: float = 1.0
          ) -> tuple[np.ndarray, Traversal, list[dict]]:
    """Frames of one traversal (the first ``keep_frac`` of them)."""
    seq = load_source(path, size, opts.topic if is_bag(path) else None, None, opts.every)
    kept = np.arange(int(round(len(seq.images) * keep_frac)))
    if opts.max_frames and len(kept) > opts.max_frames:
        kept = kept[np.linspace(0, len(kept) - 1, opts.max_frames).round().astype(np.int64)]
    if len(kept) < opts.min_frames:
        raise ValueError(f"{path}: {len(kept)} frames; training needs at least "
                         f"{opts.min_frames} per traversal (data.every is {opts.every})")
    metas = [seq.metas[i] for i in kept]
    topic = opts.topic if is_bag(path) else None
    return seq.images[kept], Traversal(str(path), topic, opts.every, kept), metas


def _concat(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack traversals (grey promoted to RGB when they mix); return (images, traversal index)."""
    if len({im.ndim for im in images}) > 1:
        images = [np.repeat(im[..., None], 3, axis=3) if im.ndim == 3 else im for im in images]
    trav = np.concatenate([np.full(len(im), k, dtype=np.int64) for k, im in enumerate(images)])
    return np.concatenate(images), trav


def _aligned(kind: str, seqs: list, opts: RouteOptions, tol: int) -> Route:
    """Traversals aligned by frame index: the last ``val_frac`` of the places is validation."""
    counts = {s[1].path: len(s[0]) for s in seqs}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{Path(p).name}: {n}" for p, n in counts.items())
        raise ValueError(f"traversals aligned by frame index must have equal frame counts "
                         f"({listing}); trim them, or record bags with poses")
    n = len(seqs[0][0])
    cut = int(round(n * (1 - opts.val_frac)))
    if cut < opts.min_frames:
        raise ValueError(f"{n} places leave {cut} for training after validation "
                         f"(data.val_frac {opts.val_frac}); need at least {opts.min_frames}")
    val = (seqs[0][0][cut:], seqs[1][0][cut:]) if cut < n else None
    images, trav = _concat([s[0][:cut] for s in seqs])
    for s in seqs:
        s[1].kept = s[1].kept[:cut]
    coords = np.tile(np.arange(cut, dtype=np.float64), len(seqs))
    positives = _index_positives(trav, coords, tol)
    return Route(kind, images, trav, coords, positives, [s[1] for s in seqs], val,
                 info={"places": n, "train_places": cut, "val_places": n - cut})


def _index_positives(trav: np.ndarray, coords: np.ndarray, tol: int) -> list[np.ndarray]:
    """Frames of other traversals within +-``tol`` frame indices, nearest first."""
    out = []
    for i in range(len(coords)):
        d = np.abs(coords - coords[i])
        cand = np.flatnonzero((d <= tol) & (trav != trav[i]))
        out.append(cand[np.argsort(d[cand], kind="stable")])
    return out


def _nordland(paths, size, opts: RouteOptions, tol: int) -> Route:
    root = _nordland_root(paths[0])
    if root is None:
        raise ValueError(f"{paths[0]} is not a Nordland root (expected season folders "
                         f"{'/'.join(NORDLAND_SEASONS)} below it)")
    seqs = []
    for season in opts.seasons:
        if not (root / season).is_dir():
            raise FileNotFoundError(f"Nordland season folder {root / season} does not exist")
        seqs.append(_load(root / season, size, opts, opts.train_frac))
    route = _aligned(NORDLAND, seqs, opts, tol)
    route.info["held_out"] = f"last {1 - opts.train_frac:.0%} of places, never loaded"
    return route


# ----------------------------------------------------------------------------- bags with poses
def _pose_topic(path, pose_topic: str | None) -> tuple[str, str]:
    """Return (pose topic, message type) of a bag; one-line errors when missing or ambiguous."""
    types = set(bags.POSE_TYPES.values())
    topics = {t: s.msgtype for t, s in bags.list_topics(path).items() if s.msgtype in types}
    if pose_topic is not None:
        if pose_topic not in topics:
            raise ValueError(f"pose topic {pose_topic!r} not in bag {path} "
                             f"(pose topics: {', '.join(sorted(topics)) or 'none'})")
        return pose_topic, topics[pose_topic]
    if len(topics) != 1:
        what = "no" if not topics else f"{len(topics)} ({', '.join(sorted(topics))})"
        raise ValueError(f"bag {path} has {what} pose topics (Odometry, PoseStamped or "
                         "NavSatFix): bags are matched by position; set data.pose_topic, or "
                         "train label-free (data.kind: unlabeled)")
    return next(iter(topics.items()))


def _frame_positions(path, metas: list[dict], pose_topic: str | None
                     ) -> tuple[np.ndarray, bool]:
    """Return poses at the frame stamps ``[N, 3]`` (NaN outside the pose time range) and is-GNSS.

    NavSatFix stays (lat, lon, alt) here.
    """
    topic, msgtype = _pose_topic(path, pose_topic)
    stamps, xyz, quat = bags.read_poses(path, topic, raw_fixes=True)
    keep = np.r_[True, np.diff(stamps) > 0]
    frames = np.asarray([m["stamp_ns"] for m in metas], dtype=np.int64)
    pos, _ = bags.interpolate_poses(stamps[keep], xyz[keep], quat[keep], frames, outside="nan")
    return pos, msgtype == bags.POSE_TYPES["navsatfix"]


def _bags(paths, size, opts: RouteOptions) -> Route:
    """Bags with poses; positives within ``radius_m`` in another traversal."""
    if opts.margin_m < opts.radius_m:
        raise ValueError(f"data.margin_m ({opts.margin_m}) must be >= data.radius_m "
                         f"({opts.radius_m})")
    loaded, positions, gnss = [], [], set()
    for p in paths:
        images, trav, metas = _load(p, size, opts)
        pos, is_fix = _frame_positions(p, metas, opts.pose_topic)
        ok = np.isfinite(pos).all(axis=1)
        if (~ok).any():
            log.warning("%s: %d frames outside the pose time range dropped", p, int((~ok).sum()))
        if ok.sum() < opts.min_frames:
            raise ValueError(f"{p}: {int(ok.sum())} frames with a pose; training needs at "
                             f"least {opts.min_frames} per traversal")
        trav.kept = trav.kept[ok]
        loaded.append((images[ok], trav))
        positions.append(pos[ok])
        gnss.add(is_fix)
    if len(gnss) > 1:
        raise ValueError("some bags have NavSatFix poses and others odometry/poses: their "
                         "positions are in different frames; use one kind of pose topic")
    xyz = np.concatenate(positions)
    if gnss == {True}:   # one local frame for all bags: the first fix of the first bag
        xyz = latlon_to_local(xyz[:, 0], xyz[:, 1], xyz[:, 2])
    images, trav = _concat([im for im, _ in loaded])
    coords = xyz[:, :2].astype(np.float64)
    positives = _metric_positives(trav, coords, opts.radius_m)
    route = Route(BAGS, images, trav, coords, positives, [t for _, t in loaded],
                  margin=float(opts.margin_m),
                  info={"per_traversal": [len(im) for im, _ in loaded], "radius_m": opts.radius_m,
                        "margin_m": opts.margin_m})
    n = len(route.anchors())
    if n < opts.min_frames:
        raise ValueError(f"only {n} frames have a frame of another bag within data.radius_m "
                         f"= {opts.radius_m} m: do the traversals overlap (same pose frame)?")
    return route


def _metric_positives(trav: np.ndarray, xy: np.ndarray, radius: float) -> list[np.ndarray]:
    """Frames of other traversals within ``radius`` metres, nearest first."""
    tree = cKDTree(xy)
    out = []
    for i, cand in enumerate(tree.query_ball_point(xy, r=radius)):
        cand = np.asarray([j for j in cand if trav[j] != trav[i]], dtype=np.int64)
        d = np.linalg.norm(xy[cand] - xy[i], axis=1) if len(cand) else np.zeros(0)
        out.append(cand[np.argsort(d, kind="stable")])
    return out


def iter_route_frames(route: Route) -> Iterator[np.ndarray]:
    """Yield the frames of ``route`` again, in route order, at their native size."""
    for trav in route.traversals:
        kept = set(int(k) for k in trav.kept)
        last = int(trav.kept.max()) if len(trav.kept) else -1
        stream = stream_source(trav.path, trav.topic, None, trav.every)
        for pos, (_, image) in enumerate(stream.frames):
            if pos > last:
                break
            if pos in kept:
                yield image
