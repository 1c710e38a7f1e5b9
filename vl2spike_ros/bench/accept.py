"""``vl2spike bench accept``: choose the acceptance margin on validation places; check it.

Data that *chooses* (never the held-out segment): the Nordland validation places, the last
:data:`~vl2spike_ros.train.recipes.VAL_FRACTION` of the training segment (places the weights
never trained on), both directions (summer queries vs a winter map of the same places, and
winter vs summer), frames streamed in route order as the node sees them. Every query is scored
with the acceptance rule of :mod:`vl2spike_ros.vpr.acceptance` at margin 0; the default margin
is the smallest one on a grid from which on every margin with at least :data:`MIN_ACCEPTED`
accepted matches reaches :data:`~vl2spike_ros.vpr.acceptance.TARGET_PRECISION`. The calibration
table (confidence = 95 % Wilson lower bound of the precision of matches with at least that
margin, made non-decreasing) comes from the same data.

Checks that choose nothing: the held-out 40 % of Nordland, and the cross-domain sets
(``vpr_crossdomain/{gardens_point,essex3in1}``, query i = reference i) when present. The
sequence-velocity study (maps built at stride 2 and 3, queries every frame) measures R@1 of
single-frame and 5-frame sequence matching at velocities 1 and over a range.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vl2spike_ros.bench.results_plot import plot_acceptance, png_path, replot
from vl2spike_ros.vpr.acceptance import (CALIBRATION_FILE, TARGET_PRECISION, AcceptanceRule,
                                         Calibration, accept_batch)
from vl2spike_ros.vpr.matching import (DEFAULT_MATCH_THRESHOLD, parse_velocities, sequence_scores,
                                       topk)

log = logging.getLogger(__name__)

RESULTS = Path("bench/results/acceptance.json")
GRID = tuple(round(0.005 * i, 3) for i in range(41))  # margins 0 .. 0.2
MIN_ACCEPTED = 20     # a grid margin with fewer accepted matches says nothing about precision
WILSON_Z = 1.96       # 95 % two-sided
SEQ_LEN_CHECK = 5     # the sequence length reported next to single-frame matching
TOLERANCE = 1         # a match is correct within +-1 place (as every recall in this project)
DIRECTIONS = (("summer", "winter"), ("winter", "summer"))
CROSSDOMAIN = ("gardens_point", "essex3in1")
STRIDES = (2, 3)
VELOCITY_SETS = ("1", "0.5:2:7", "0.5")
CHECK_MARGINS = (0.05, 0.1, 0.2)  # also reported for the cross-domain sets (larger margins)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "accept", help="choose the acceptance margin on Nordland validation places; check it "
                       "on the held-out segment, cross-domain sets and maps built at a stride")
    p.add_argument("--json", default=str(RESULTS), metavar="PATH",
                   help="results JSON (+ .png plot next to it)")
    p.add_argument("--weights", default=None, help="VPR weights (default: packaged default)")
    p.add_argument("--data-root", default=None, help="folder holding nordland/ (default: paths)")
    p.add_argument("--calibration", default=None, metavar="PATH",
                   help="write the calibration table here (default: the packaged "
                        f"{CALIBRATION_FILE.name} when the weights are the packaged default)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--plot-only", action="store_true",
                   help="only redraw the PNG from the existing --json (measures nothing)")
    p.set_defaults(func=_handler)


def wilson_lower(k: int, n: int, z: float = WILSON_Z) -> float:
    """Lower end of the Wilson score interval of a proportion ``k / n`` (0 when n = 0)."""
    if n == 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


@dataclass(frozen=True)
class Outcome:
    """Pooled per-query outcome at margin 0: accepted ``[Q]``, margin ``[Q]``, correct ``[Q]``."""

    accepted: np.ndarray
    margin: np.ndarray
    correct: np.ndarray


def outcomes(pairs: list[tuple[np.ndarray, np.ndarray]], seq_len: int = 1,
             velocities: tuple[float, ...] = (1.0,)) -> Outcome:
    """Score query/map descriptor pairs (query i shows place i) with the rule at margin 0."""
    acc, mar, cor = [], [], []
    rule = AcceptanceRule(DEFAULT_MATCH_THRESHOLD, 0.0)
    for q, db in pairs:
        sim = q @ db.T
        ranked = sequence_scores(sim, seq_len, velocities) if seq_len > 1 else sim
        scores, ids = topk(ranked, 1)
        a, m = accept_batch(sim, ids[:, 0], scores[:, 0], rule, velocities)
        acc.append(a)
        mar.append(m)
        cor.append(np.abs(ids[:, 0] - np.arange(len(q))) <= TOLERANCE)
    return Outcome(np.concatenate(acc), np.concatenate(mar), np.concatenate(cor))


def operating_point(o: Outcome, margin: float) -> dict:
    """Count the matches accepted at ``margin``: precision / recall (percent), Wilson bound."""
    with np.errstate(invalid="ignore"):
        acc = o.accepted & (o.margin >= margin)
    n, k = int(acc.sum()), int((acc & o.correct).sum())
    return {"margin": margin, "accepted": n, "correct_accepted": k,
            "precision": 100.0 * k / n if n else None, "recall": 100.0 * k / len(acc),
            "precision_wilson_lower": 100.0 * wilson_lower(k, n),
            "r1_of_reported": 100.0 * float(o.correct.mean())}


def choose_margin(sweep: list[dict], target: float = TARGET_PRECISION) -> float:
    """Smallest grid margin from which on every margin with enough accepted meets ``target``."""
    ok_from = None
    for row in reversed(sweep):  # from the largest margin down
        if row["accepted"] < MIN_ACCEPTED:
            continue
        if row["precision"] < 100.0 * target:
            break
        ok_from = row["margin"]
    if ok_from is None:
        raise ValueError(f"no margin reaches {100 * target:.0f} % precision with at least "
                         f"{MIN_ACCEPTED} accepted matches on the validation places")
    return ok_from


def calibration(sweep: list[dict], weights_hash: str, source: str) -> Calibration:
    """Confidence table: Wilson lower bound per grid margin (enough accepted), non-decreasing.

    Only the margins where the confidence changes are kept (a step function).
    """
    rows = [r for r in sweep if r["accepted"] >= MIN_ACCEPTED]
    conf = np.maximum.accumulate([round(r["precision_wilson_lower"] / 100.0, 4) for r in rows])
    keep = [i for i in range(len(rows)) if i == 0 or conf[i] > conf[i - 1]]
    return Calibration(weights_hash, tuple(rows[i]["margin"] for i in keep),
                       tuple(float(conf[i]) for i in keep), source)


def r1_at_stride(q: np.ndarray, db: np.ndarray, stride: int, seq_len: int,
                 velocities: tuple[float, ...]) -> float:
    """R@1 (percent, +-1 map place) of every query frame against a map of every stride-th."""
    sim = q @ db[::stride].T
    if seq_len > 1:
        sim = sequence_scores(sim, seq_len, velocities)
    truth = np.floor(np.arange(len(q)) / stride + 0.5)
    return float(100.0 * np.mean(np.abs(np.argmax(sim, axis=1) - truth) <= TOLERANCE))


def velocity_study(segment: dict[str, np.ndarray]) -> dict:
    """R@1 single frame vs 5-frame sequences per velocity set, maps at stride 1, 2, 3."""
    out = {}
    for stride in (1, *STRIDES):
        row = {}
        for qn, dn in DIRECTIONS:
            q, db = segment[qn], segment[dn]
            res = {"single": r1_at_stride(q, db, stride, 1, (1.0,))}
            for vs in VELOCITY_SETS:
                res[f"seq{SEQ_LEN_CHECK}_v{vs}"] = r1_at_stride(q, db, stride, SEQ_LEN_CHECK,
                                                                parse_velocities(vs))
            row[f"{qn}_to_{dn}"] = {k: round(v, 1) for k, v in res.items()}
        out[f"stride{stride}"] = row
    return out


def _segment(place, root: Path, idx: np.ndarray) -> dict[str, np.ndarray]:
    from vl2spike_ros.data.datasets import load_images, nordland_files

    return {s: place.describe_images(load_images([nordland_files(root, s)[i] for i in idx],
                                                 grayscale=True)) for s in ("summer", "winter")}


def _segments(place, root: Path) -> tuple[dict, dict, dict]:
    """Describe the validation and held-out places per season; also return the ranges."""
    from vl2spike_ros.data.datasets import nordland_files, nordland_split_range
    from vl2spike_ros.train.recipes import VAL_FRACTION, split_val

    n = len(nordland_files(root, "summer"))
    train = np.asarray(nordland_split_range(n, "train"))
    val = split_val(train, train, VAL_FRACTION)[2]
    test = np.asarray(nordland_split_range(n, "test"))
    ranges = {"validation": [int(val[0]), int(val[-1]) + 1],
              "held_out": [int(test[0]), int(test[-1]) + 1], "frames_per_season": n}
    return _segment(place, root, val), _segment(place, root, test), ranges


def _pairs(seg: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(seg[qn], seg[dn]) for qn, dn in DIRECTIONS]


def _check(pairs, margin: float) -> dict:
    """Operating point at ``margin``, single frame and 5-frame sequence matching."""
    return {"single_frame": operating_point(outcomes(pairs), margin),
            f"sequence_{SEQ_LEN_CHECK}": operating_point(outcomes(pairs, SEQ_LEN_CHECK), margin)}


def _crossdomain(place, root: Path | None, margin: float) -> dict:
    from vl2spike_ros.data.datasets import list_images, load_images

    out = {}
    for name in CROSSDOMAIN:
        base = root / "vpr_crossdomain" / name if root is not None else None
        if base is None or not (base / "query").is_dir():
            out[name] = {"skipped": "not found"}
            continue
        size = place.settings.img_size  # the sets mix frame sizes by a pixel or two
        q, ref = (place.describe_images(load_images(list_images(base / side), size=size))
                  for side in ("query", "ref"))
        out[name] = _check([(q, ref)], margin)
        single = outcomes([(q, ref)])
        out[name]["single_frame_larger_margins"] = [operating_point(single, m)
                                                    for m in CHECK_MARGINS]
    return out


def off_map(val: dict, test: dict, margin: float) -> dict:
    """Measure the accepted share (percent, all wrong) of a run the map does not cover.

    Queries: the first held-out frames (as many as validation places), map: the validation
    places of the other season. Nothing is chosen from this.
    """
    n = len(next(iter(val.values())))
    out = {}
    for m in (margin, *CHECK_MARGINS):
        o = outcomes([(test[qn][:n], val[dn]) for qn, dn in DIRECTIONS])
        with np.errstate(invalid="ignore"):
            acc = o.accepted & (o.margin >= m)
        out[f"margin_{m:g}"] = {"queries": int(len(acc)), "accepted": int(acc.sum()),
                                "accepted_percent": float(100.0 * acc.mean())}
    return out


def run_bench(place, root: Path, data_root: Path | None) -> tuple[dict, Calibration]:
    """Run the whole benchmark: (results dict, calibration table) for one place descriptor."""
    val, test, ranges = _segments(place, root)
    meta = place.model_meta()
    sweep = [operating_point(outcomes(_pairs(val)), m) for m in GRID]
    margin = choose_margin(sweep)
    cal = calibration(sweep, str(meta["weights_hash"]),
                      f"vl2spike bench accept: Nordland validation places {ranges['validation']}"
                      ", both directions, single frame")
    res = {"protocol": {"chosen_on": "Nordland validation places (last 10 % of the training "
                                     "segment), both directions, single-frame matching",
                        "ranges": ranges, "tolerance_places": TOLERANCE,
                        "target_precision": TARGET_PRECISION, "min_accepted": MIN_ACCEPTED,
                        "grid": list(GRID), "model": meta},
           "rule": AcceptanceRule(DEFAULT_MATCH_THRESHOLD, margin).describe(),
           "chosen_margin": margin, "validation": _check(_pairs(val), margin),
           "validation_sweep_single_frame": sweep, "calibration": cal.to_json(),
           "held_out_check": _check(_pairs(test), margin),
           "crossdomain_check": _crossdomain(place, data_root, margin),
           "off_map_check": off_map(val, test, margin),
           "sequence_velocities": {"held_out": velocity_study(test),
                                   "validation": velocity_study(val)}}
    return res, cal


def _summary(res: dict) -> str:
    lines = [f"chosen margin {res['chosen_margin']} ({res['rule']})"]
    for part in ("validation", "held_out_check"):
        for mode, p in res[part].items():
            prec = "n/a" if p["precision"] is None else f"{p['precision']:.1f}%"
            lines.append(f"  {part:15s} {mode:12s} accepted {p['accepted']:5d}  precision "
                         f"{prec} (>= {p['precision_wilson_lower']:.1f}%)  recall "
                         f"{p['recall']:.1f}%  R@1 {p['r1_of_reported']:.1f}%")
    return "\n".join(lines)


def _handler(ns) -> int:
    import torch

    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.paths import data_root, nordland_root
    from vl2spike_ros.vpr.place import load_place_descriptor

    if ns.plot_only:
        print(replot("accept", ns.json))
        return 0
    torch.set_num_threads(ns.threads)
    root = nordland_root(Path(ns.data_root) / "nordland" if ns.data_root else None)
    place = load_place_descriptor(ns.weights)
    res, cal = run_bench(place, root, Path(ns.data_root) if ns.data_root else data_root(False))
    write_json_atomic(ns.json, res)
    plot_acceptance(res, png_path(ns.json))
    target = ns.calibration or (CALIBRATION_FILE if ns.weights is None else None)
    if target is not None:
        write_json_atomic(target, cal.to_json())
        res_note = f"calibration table -> {target}"
    else:
        res_note = "no calibration table written (pass --calibration PATH)"
    print(_summary(res) + f"\n{res_note}; results -> {ns.json}")
    return 0
