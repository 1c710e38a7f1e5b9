"""Database-vs-queries evaluation of one method (learned model, HOG or SAD) with timing.

Used by ``vl2spike eval`` and ``vl2spike bench vpr``. Ground truth: metric radius when both
sides have positions and ``radius`` is given, else sequence alignment (query i = place
``i``, +-``tolerance`` frames). The acceptance rule (:mod:`vl2spike_ros.vpr.acceptance`) is
applied as the node applies it, the queries taken as one stream in order, and the precision and
recall of the accepted matches are reported under ``acceptance``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from vl2spike_ros.vpr.acceptance import AcceptanceRule, accept_batch
from vl2spike_ros.vpr.baselines import BASELINES
from vl2spike_ros.vpr.evaluation import (DEFAULT_NS, acceptance_metrics, correct_by_frames,
                                         correct_by_radius, evaluate_ranked,
                                         has_positive_by_radius)
from vl2spike_ros.vpr.matching import sequence_scores, topk
from vl2spike_ros.vpr.place import PlaceDescriptor
from vl2spike_ros.vpr.placemap import PlaceMap

log = logging.getLogger(__name__)


@dataclass
class Method:
    """A VPR method: ``describe(images [N,H,W(,C)] uint8) -> [N, D]``, ``similarity``.

    ``similarity(q, db) -> [Q, M]``.
    """

    name: str
    describe: Callable[[np.ndarray], np.ndarray]
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray]
    faiss_ok: bool = False          # descriptors are unit vectors searched by inner product
    energy_mj: float | None = None  # per query, if known


def model_method(place: PlaceDescriptor, name: str = "model", batch_size: int = 64) -> Method:
    """Wrap a learned place descriptor as a :class:`Method` (FAISS inner-product search)."""
    return Method(name, lambda x: place.describe_images(x, batch_size),
                  lambda q, d: q @ d.T, faiss_ok=True)


def baseline_method(name: str) -> Method:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    desc, sim = BASELINES[name]
    return Method(name, desc, sim, faiss_ok=name == "hog")


def rank(method: Method, q: np.ndarray, db: np.ndarray, k: int, seq_len: int = 1,
         velocities: tuple[float, ...] = (1.0,)) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) ``[Q, k]``; FAISS exact search when possible and ``seq_len == 1``."""
    if method.faiss_ok and seq_len == 1:
        pm = PlaceMap(db.shape[1], {"variant": method.name})
        pm.add(db)
        return pm.search(q, min(k, len(db)))
    sim = method.similarity(q, db)
    if seq_len > 1:
        sim = sequence_scores(sim, seq_len, velocities)
    return topk(sim, k)


@dataclass(frozen=True)
class GroundTruth:
    """When a match is correct.

    Within ``radius`` metres when it is given and both sides carry positions ``db_xy``
    ``[M, 2]`` / ``q_xy`` ``[Q, 2]``; else by sequence alignment (query i shows database place
    i, +-``tolerance`` frames).
    """

    tolerance: int = 1
    radius: float | None = None
    db_xy: np.ndarray | None = None
    q_xy: np.ndarray | None = None

    @property
    def metric(self) -> bool:
        return self.radius is not None and self.db_xy is not None and self.q_xy is not None


@dataclass(frozen=True)
class MatchSettings:
    """Sequence matching and acceptance of an evaluation (the node's matching parameters)."""

    seq_len: int = 1
    velocities: tuple[float, ...] = (1.0,)
    rule: AcceptanceRule = AcceptanceRule()


def evaluate_sets(method: Method, db_images: np.ndarray, q_images: np.ndarray,
                  truth: GroundTruth = GroundTruth(), matching: MatchSettings = MatchSettings(),
                  ns=DEFAULT_NS) -> dict:
    """Metrics dict: ``recall {r1,r5,...}, pr_auc, recall_at_100p, acceptance, queries_per_s``.

    ``queries_per_s`` times query description + search (the database is built beforehand).
    """
    seq_len, velocities = matching.seq_len, matching.velocities
    db = method.describe(db_images)
    method.describe(q_images[:1])  # warm-up: first-call overheads are not per-query cost
    t0 = time.perf_counter()
    q = method.describe(q_images)
    scores, ids = rank(method, q, db, max(ns), seq_len, velocities)
    dt = time.perf_counter() - t0
    if truth.metric:
        correct = correct_by_radius(ids, truth.q_xy, truth.db_xy, truth.radius)
        hp = has_positive_by_radius(truth.q_xy, truth.db_xy, truth.radius)
        gt = f"radius {truth.radius} m"
    else:
        if len(q_images) > len(db_images):
            raise ValueError(f"{len(q_images)} queries but only {len(db_images)} database images: "
                             "sequence alignment needs query i to show database place i "
                             "(or give positions and a radius)")
        correct = correct_by_frames(ids, np.arange(len(q)), truth.tolerance)
        hp, gt = None, f"aligned, tolerance +-{truth.tolerance} frames"
    res = evaluate_ranked(scores, correct, ns, hp)
    accepted, _ = accept_batch(method.similarity(q, db), ids[:, 0], scores[:, 0],
                               matching.rule, velocities)
    res["acceptance"] = {"rule": matching.rule.describe(),
                         **acceptance_metrics(accepted, correct[:, 0], hp)}
    res.update({"queries_per_s": len(q) / max(dt, 1e-9), "n_db": int(len(db)),
                "n_queries": int(len(q)), "ground_truth": gt, "seq_len": int(seq_len),
                "sequence_velocities": list(velocities), "method": method.name})
    if method.energy_mj is not None:
        res["energy_mj_per_query"] = method.energy_mj
    return res
