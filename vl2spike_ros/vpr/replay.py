"""Replay a sequence of frames through :class:`VPRPipeline` (exactly what the ROS node runs)."""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from vl2spike_ros.atomic import atomic_path
from vl2spike_ros.vpr.evaluation import (acceptance_metrics, correct_by_frames, correct_by_radius,
                                         evaluate_ranked, has_positive_by_radius)

log = logging.getLogger(__name__)
CSV_FIELDS = ("frame", "stamp_ns", "best_id", "best_score", "accepted", "top_ids", "top_scores",
              "latency_ms", "firing_rate", "energy_mj", "margin", "confidence")
GEO_FIELDS = ("lat", "lon", "alt")  # best place's WGS84 position, when the map has a geo origin


def replay_frames(pipeline, frames: Iterable[tuple[int, np.ndarray]],
                  total: int | None = None) -> list[dict]:
    """Run ``(stamp_ns, image)`` pairs through ``pipeline.process``; one row dict per frame.

    ``frames`` may be a generator: frames are consumed one at a time and not kept, so memory
    does not grow with the frames' pixels (only the small per-frame rows are kept).
    """
    rows = []
    bar = tqdm(frames, total=total, desc="replay", leave=False, mininterval=2, disable=None)
    for i, (stamp, img) in enumerate(bar):
        r = pipeline.process(img)
        rows.append({"frame": i, "stamp_ns": int(stamp), "best_id": r.best_id,
                     "best_score": r.best_score, "accepted": r.accepted,
                     "top_ids": [int(x) for x in r.ids],
                     "top_scores": [float(x) for x in r.scores],
                     "latency_ms": r.latency_ms, "firing_rate": r.firing_rate,
                     "energy_mj": r.energy_mj, "margin": r.margin, "confidence": r.confidence})
    if not rows:
        raise ValueError("no frames to replay")
    return rows


def write_csv(rows: list[dict], path: str | Path) -> None:
    """Write the matches CSV (lists joined with spaces) atomically.

    Rows with ``lat, lon, alt`` keys (a map with a geo origin) add those columns.
    """
    fields = CSV_FIELDS + (GEO_FIELDS if rows and "lat" in rows[0] else ())
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "top_ids": " ".join(map(str, r["top_ids"])),
                        "top_scores": " ".join(f"{s:.6f}" for s in r["top_scores"])})


def summarise(rows: list[dict]) -> dict:
    """Latency (ms) percentiles, frames/s of the pipeline, mean firing rate and energy."""
    lat = np.array([r["latency_ms"] for r in rows])
    out = {"frames": len(rows), "accepted": int(sum(r["accepted"] for r in rows)),
           "latency_ms": {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                          "p95": float(np.percentile(lat, 95)), "max": float(lat.max())},
           "frames_per_s": float(1e3 / lat.mean())}
    for key in ("firing_rate", "energy_mj"):
        vals = [r[key] for r in rows if r[key] is not None]
        if vals:
            out[f"mean_{key}"] = float(np.mean(vals))
    return out


def place_positions(places: list[dict]) -> np.ndarray | None:
    """Planar ``[N, 2]`` positions of map places when every place has a pose, else None."""
    if not places or not all("pose" in p for p in places):
        return None
    return np.array([p["pose"][:2] for p in places], dtype=np.float64)


def replay_metrics(rows: list[dict], place_xy: np.ndarray | None = None,
                   query_xy: np.ndarray | None = None, radius: float | None = None,
                   tolerance: int = 1) -> dict:
    """Recall/PR from replay rows: metric radius if positions given, else frame i = place i.

    ``acceptance``: precision and recall of the matches the pipeline accepted (as the node).
    """
    ids = np.array([r["top_ids"] for r in rows])
    scores = np.array([r["top_scores"] for r in rows])
    ns = tuple(n for n in (1, 5, 10, 20) if n <= ids.shape[1])
    if radius is not None and place_xy is not None and query_xy is not None:
        correct = correct_by_radius(ids, query_xy, place_xy, radius)
        hp = has_positive_by_radius(query_xy, place_xy, radius)
        truth = f"radius {radius} m"
    else:
        correct = correct_by_frames(ids, np.arange(len(rows)), tolerance)
        hp, truth = None, f"aligned, tolerance +-{tolerance} frames"
    res = evaluate_ranked(scores, correct, ns, hp)
    res["ground_truth"] = truth
    res["acceptance"] = acceptance_metrics(np.array([bool(r["accepted"]) for r in rows]),
                                           correct[:, 0], hp)
    return res
