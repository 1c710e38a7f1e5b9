"""Acceptance of a place match: when is a match trusted enough to hand to navigation.

A false place match fed to navigation (a wrong loop closure) is worse than none, so a match is
*accepted* only when the evidence of the last few frames singles its place out:

1. the best (reported) score is at least ``threshold`` (a cosine floor, default 0: off in effect);
2. the *evidence*, sequence matching over the last :data:`EVIDENCE_LENGTH` frames (at the
   configured velocities), has seen that many frames since the last reset;
3. the reported place and the single-frame best place both lie within ``neighbourhood`` places
   (:data:`NEIGHBOURHOOD`) of the evidence's best place (single frame and sequence agree);
4. the evidence's *margin* -- its best score minus its best score outside +-``neighbourhood``
   places of the best -- is at least ``margin`` (:data:`DEFAULT_MATCH_MARGIN`).

The default margin was chosen on the Nordland *validation* places (never the held-out segment)
as the smallest margin whose accepted matches reach :data:`TARGET_PRECISION` there; ``vl2spike
bench accept`` regenerates it into ``bench/results/acceptance.json`` and the calibration table
:data:`CALIBRATION_FILE` packaged with the default weights. A match's *confidence* is that
table read at its margin: the 95 % Wilson lower bound of the validation precision of matches
with at least this margin (non-decreasing in the margin). It only applies to the weights it was
measured with (by weights hash); for other weights the confidence is None.

One code path: :class:`~vl2spike_ros.vpr.pipeline.VPRPipeline` decides every frame of the node
and of ``vl2spike replay`` with :func:`decide`; :func:`accept_batch` gives the same decisions
for a whole similarity matrix (eval, benchmarks).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vl2spike_ros.paths import ASSETS_DIR
from vl2spike_ros.vpr.matching import DEFAULT_MATCH_THRESHOLD, sequence_scores

log = logging.getLogger(__name__)

NEIGHBOURHOOD = 2          # places either side of the best that count as the same place
EVIDENCE_LENGTH = 5        # frames of the sequence evidence
TARGET_PRECISION = 0.95    # precision of accepted matches the default margin is chosen for
DEFAULT_MATCH_MARGIN = 0.01  # chosen on validation: bench/results/acceptance.json
CALIBRATION_FILE = ASSETS_DIR / "vpr_default_acceptance.json"
CALIBRATION_FORMAT = "vl2spike_ros.acceptance/1"


@dataclass(frozen=True)
class AcceptanceRule:
    """The acceptance rule's settings (module docstring); ``threshold``/``margin`` are tunable."""

    threshold: float = DEFAULT_MATCH_THRESHOLD
    margin: float = DEFAULT_MATCH_MARGIN
    neighbourhood: int = NEIGHBOURHOOD
    evidence_length: int = EVIDENCE_LENGTH

    def __post_init__(self) -> None:
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"match margin must be a finite number >= 0, got {self.margin}")
        if self.neighbourhood < 0 or self.evidence_length < 1:
            raise ValueError(f"neighbourhood must be >= 0 and evidence length >= 1 (got "
                             f"{self.neighbourhood}, {self.evidence_length})")

    def describe(self) -> str:
        """One line naming the rule and its settings (for reports)."""
        return (f"score >= {self.threshold:g}, {self.evidence_length}-frame sequence evidence "
                f"agrees with the single frame within +-{self.neighbourhood} places, evidence "
                f"margin >= {self.margin:g}")


def outside_margin(rows: np.ndarray, best: np.ndarray, neighbourhood: int) -> np.ndarray:
    """Best score minus the best score outside +-``neighbourhood`` places of ``best``.

    ``rows [Q, M]``, ``best [Q]`` -> ``[Q]`` float64; NaN where no place lies outside (a map of
    at most ``2 * neighbourhood + 1`` places says nothing about distinctiveness).
    """
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    best = np.asarray(best, dtype=np.int64).reshape(-1)
    near = np.abs(np.arange(rows.shape[1])[None] - best[:, None]) <= neighbourhood
    other = np.where(near, -np.inf, rows).max(axis=1)
    top = rows[np.arange(len(rows)), best]
    return np.where(np.isfinite(other), top - other, np.nan)


def decide(rule: AcceptanceRule, reported: tuple[int, float], single_best: int,
           evidence_row: np.ndarray, warm: bool) -> tuple[bool, float]:
    """Decide one frame: (accepted, evidence margin).

    ``reported`` is the (place id, score) the caller reports (single-frame or sequence match;
    id -1 when none); ``evidence_row [M]`` the evidence's sequence scores; ``warm``: the
    evidence has seen ``rule.evidence_length`` frames.
    """
    row = np.asarray(evidence_row, dtype=np.float32).ravel()
    pid, score = int(reported[0]), float(reported[1])
    if pid < 0 or not len(row):
        return False, float("nan")
    ev_best = int(np.argmax(row))
    margin = float(outside_margin(row[None], np.array([ev_best]), rule.neighbourhood)[0])
    agree = (abs(pid - ev_best) <= rule.neighbourhood
             and abs(int(single_best) - ev_best) <= rule.neighbourhood)
    ok = warm and agree and score >= rule.threshold and margin >= rule.margin
    return bool(ok), margin


def accept_batch(sim: np.ndarray, reported_ids: np.ndarray, reported_scores: np.ndarray,
                 rule: AcceptanceRule = AcceptanceRule(),
                 velocities: tuple[float, ...] = (1.0,)) -> tuple[np.ndarray, np.ndarray]:
    """Decisions for query frames 0..Q-1 streamed in order: (accepted ``[Q]``, margin ``[Q]``).

    ``sim [Q, M]`` single-frame similarity; ``reported_ids/scores [Q]`` the reported best
    matches. Equal to :func:`decide` on the pipeline's streaming evidence, frame by frame.
    """
    sim = np.asarray(sim, dtype=np.float32)
    ids = np.asarray(reported_ids, dtype=np.int64).reshape(-1)
    scores = np.asarray(reported_scores, dtype=np.float64).reshape(-1)
    ev = sequence_scores(sim, rule.evidence_length, velocities)
    ev_best = np.argmax(ev, axis=1)
    margin = outside_margin(ev, ev_best, rule.neighbourhood)
    single = np.argmax(sim, axis=1)
    warm = np.arange(len(sim)) >= rule.evidence_length - 1
    agree = ((np.abs(ids - ev_best) <= rule.neighbourhood)
             & (np.abs(single - ev_best) <= rule.neighbourhood))
    with np.errstate(invalid="ignore"):
        ok = warm & agree & (ids >= 0) & (scores >= rule.threshold) & (margin >= rule.margin)
    return ok, margin


@dataclass(frozen=True)
class Calibration:
    """Confidence of an accepted match from its evidence margin, for one set of weights.

    ``margins`` ascending; ``confidence[i]`` applies from ``margins[i]`` up (non-decreasing).
    """

    weights_hash: str
    margins: tuple[float, ...]
    confidence: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        m, c = np.asarray(self.margins), np.asarray(self.confidence)
        if len(m) == 0 or len(m) != len(c) or np.any(np.diff(m) <= 0) or np.any(np.diff(c) < 0) \
                or np.any((c < 0) | (c > 1)):
            raise ValueError("acceptance calibration: margins must ascend and confidences be "
                             "non-decreasing values in [0, 1], one per margin")

    def at(self, margin: float) -> float | None:
        """Confidence (0..1) of a match with this margin; None below the first margin or NaN."""
        if not math.isfinite(margin) or margin < self.margins[0]:
            return None
        return float(self.confidence[int(np.searchsorted(self.margins, margin, "right")) - 1])

    def to_json(self) -> dict:
        return {"format": CALIBRATION_FORMAT, "weights_hash": self.weights_hash,
                "margins": list(self.margins), "confidence": list(self.confidence),
                "source": self.source}


def load_calibration(weights_hash: str, path: str | Path = CALIBRATION_FILE
                     ) -> Calibration | None:
    """Load the calibration table at ``path`` if measured with ``weights_hash``, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
        if obj.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"format {obj.get('format')!r}, expected {CALIBRATION_FORMAT!r}")
        cal = Calibration(str(obj["weights_hash"]), tuple(float(v) for v in obj["margins"]),
                          tuple(float(v) for v in obj["confidence"]), str(obj.get("source", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"acceptance calibration {path}: {exc}") from None
    if cal.weights_hash != weights_hash:
        log.info("acceptance calibration %s is for weights %s, not %s: no confidence",
                 path, cal.weights_hash, weights_hash)
        return None
    return cal
