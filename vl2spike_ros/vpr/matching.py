"""Matching on similarity scores: top-k, acceptance threshold, sequence-consistent matching.

Ties are broken deterministically: equal scores rank the lower place id first.

Sequence matching (SeqSLAM-style) over the last ``L`` query frames and a set of velocities
``v`` (map places per query frame): for one velocity, the score of query i against place j is
the mean of ``S[i-l, j-round(v*l)]`` over ``l = 0..L-1`` (terms with negative indices left out;
``round`` rounds halves up); the sequence score is the maximum over the velocities. With the
velocities ``{1}`` (the default) this is the constant-velocity diagonal mean. Searching a range
(e.g. ``0.5:2:7``) tolerates a live run slower or faster than the mapping run, or a map built
at a stride, at the price of more chances for a wrong sequence to score high (README).
:func:`sequence_scores` (batch, for evaluation) and :class:`SequenceMatcher` (streaming, for
the node) compute exactly the same numbers.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

# Acceptance threshold on the best match's cosine similarity used by default wherever a match
# is accepted or rejected: the node's ``match_threshold`` and ``vl2spike replay --threshold``.
# It is only a floor: what makes an accepted match trustworthy is the acceptance rule of
# :mod:`vl2spike_ros.vpr.acceptance` (margin + agreement, precision measured on validation).
DEFAULT_MATCH_THRESHOLD = 0.0
DEFAULT_SEQUENCE_VELOCITIES = "1"  # the node's ``sequence_velocities``, ``--seq-velocities``
MAX_VELOCITY = 10.0
MAX_VELOCITIES = 32
VELOCITIES_HELP = ("velocities (map places per query frame) searched by sequence matching: "
                   "'1' (constant speed, the default), a list '0.5,1,2', or MIN:MAX:N (N evenly "
                   "spaced values, e.g. 0.5:2:7 for a live run up to 2x slower or faster than "
                   "the mapping run; a map built at stride 2 from a same-speed run: 0.5)")


def topk(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the best k per row: (scores ``[Q, k']``, ids ``[Q, k']``), k' = min(k, M).

    ``sim`` is ``[Q, M]``; best first.
    """
    sim = np.atleast_2d(np.asarray(sim))
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    k = min(k, sim.shape[1])
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, order, axis=1), order.astype(np.int64)


def match(scores: np.ndarray, ids: np.ndarray,
          threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best match per query: (best_id ``[Q]``, best_score ``[Q]``, accepted ``[Q]`` bool).

    ``accepted`` is ``best_score >= threshold`` and a valid id (FAISS pads with -1): a plain
    threshold, for analysis. The node and ``vl2spike replay`` accept matches with the rule of
    :mod:`vl2spike_ros.vpr.acceptance`, applied in :class:`~vl2spike_ros.vpr.pipeline.VPRPipeline`.
    """
    scores, ids = np.atleast_2d(scores), np.atleast_2d(ids)
    best_id, best = ids[:, 0], scores[:, 0]
    return best_id, best, (best >= threshold) & (best_id >= 0)


def parse_velocities(text: str | float | tuple | list) -> tuple[float, ...]:
    """Velocities from ``"1"``, ``"0.5,1,2"`` or ``"MIN:MAX:N"`` -> sorted unique tuple.

    Each velocity must lie in (0, :data:`MAX_VELOCITY`]; at most :data:`MAX_VELOCITIES`.
    A tuple/list/number is checked the same way. ValueError names the bad text.
    """
    if isinstance(text, (tuple, list)):
        vals = [float(v) for v in text]
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        vals = [float(text)]
    else:
        vals = _parse_velocity_text(str(text))
    if not vals or len(vals) > MAX_VELOCITIES:
        raise ValueError(f"sequence velocities {text!r}: give 1 to {MAX_VELOCITIES} values")
    for v in vals:
        if not (math.isfinite(v) and 0.0 < v <= MAX_VELOCITY):
            raise ValueError(f"sequence velocities {text!r}: {v} outside (0, {MAX_VELOCITY}]")
    return tuple(sorted(set(vals)))


def _parse_velocity_text(text: str) -> list[float]:
    try:
        if ":" in text:
            lo, hi, n = text.split(":")
            if int(n) < 1 or float(lo) > float(hi):
                raise ValueError
            return [float(v) for v in np.linspace(float(lo), float(hi), int(n))]
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"sequence velocities {text!r}: expected '1', a list like '0.5,1,2' "
                         "or MIN:MAX:N like '0.5:2:7'") from None


def velocity_offsets(velocity: float, length: int) -> tuple[int, ...]:
    """Map-place offsets ``round(v*l)`` (halves up) for ``l = 0..length-1``."""
    return tuple(int(math.floor(velocity * lag + 0.5)) for lag in range(length))


def _check_length(length: int) -> None:
    if length < 1:
        raise ValueError(f"sequence length must be >= 1, got {length}")


def sequence_scores(sim: np.ndarray, length: int,
                    velocities: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """Sequence-consistent similarity ``[Q, M]`` from single-frame similarity ``[Q, M]``."""
    _check_length(length)
    sim = np.asarray(sim, dtype=np.float32)
    n_q, n_m = sim.shape
    best = None
    for v in parse_velocities(velocities):
        acc = sim.copy()
        cnt = np.ones(sim.shape, dtype=np.float32)
        for lag, off in enumerate(velocity_offsets(v, min(length, n_q))):
            if lag == 0 or off >= n_m:
                continue
            acc[lag:, off:] += sim[:n_q - lag, :n_m - off]
            cnt[lag:, off:] += 1.0
        score = acc / cnt
        best = score if best is None else np.maximum(best, score)
    return best


class SequenceMatcher:
    """Streaming sequence matching over the last ``length`` query frames.

    ``update(sim_row [M]) -> seq_row [M]``; feeding rows 0..Q-1 of ``S`` reproduces
    ``sequence_scores(S, length, velocities)`` row by row. A change in map size resets the
    history.
    """

    def __init__(self, length: int, velocities: tuple[float, ...] = (1.0,)):
        _check_length(length)
        self.length = length
        self.velocities = parse_velocities(velocities)
        self._offsets = [velocity_offsets(v, length) for v in self.velocities]
        self._rows: deque[np.ndarray] = deque(maxlen=length)

    def reset(self) -> None:
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)

    def update(self, sim_row: np.ndarray) -> np.ndarray:
        row = np.asarray(sim_row, dtype=np.float32).ravel()
        if self._rows and self._rows[-1].shape != row.shape:
            self.reset()
        self._rows.append(row.copy())
        hist = list(self._rows)
        n_m = len(row)
        best = None
        for offsets in self._offsets:
            acc = row.copy()
            cnt = np.ones(row.shape, dtype=np.float32)
            for lag in range(1, len(hist)):
                off = offsets[lag]
                if off >= n_m:
                    continue
                acc[off:] += hist[-1 - lag][:n_m - off]
                cnt[off:] += 1.0
            score = acc / cnt
            best = score if best is None else np.maximum(best, score)
        return best
