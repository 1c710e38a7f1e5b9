"""Matching on similarity scores: top-k, acceptance threshold, sequence-consistent matching.

Ties are broken deterministically: equal scores rank the lower place id first.
Sequence matching (SeqSLAM-style, constant velocity 1): the score of query i against place j
is the mean of ``S[i-l, j-l]`` over ``l = 0..L-1`` (terms with negative indices left out).
:func:`sequence_scores` (batch, for evaluation) and :class:`SequenceMatcher` (streaming, for
the node) compute exactly the same numbers.
"""
from __future__ import annotations

from collections import deque

import numpy as np

# Acceptance threshold on the best match's cosine similarity used by default wherever a match
# is accepted or rejected: the node's ``match_threshold`` and ``vl2spike replay --threshold``.
# With the default weights on the Nordland held-out segment 0.5 accepts 44 % of single-frame
# best matches at 58 % precision (README, "Two things to set deliberately on a robot").
DEFAULT_MATCH_THRESHOLD = 0.5


def topk(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Similarity ``[Q, M]`` -> (scores ``[Q, k']``, ids ``[Q, k']``), k' = min(k, M), best first."""
    sim = np.atleast_2d(np.asarray(sim))
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    k = min(k, sim.shape[1])
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, order, axis=1), order.astype(np.int64)


def match(scores: np.ndarray, ids: np.ndarray,
          threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best match per query: (best_id ``[Q]``, best_score ``[Q]``, accepted ``[Q]`` bool).

    ``accepted`` is ``best_score >= threshold`` and a valid id (FAISS pads with -1).
    """
    scores, ids = np.atleast_2d(scores), np.atleast_2d(ids)
    best_id, best = ids[:, 0], scores[:, 0]
    return best_id, best, (best >= threshold) & (best_id >= 0)


def sequence_scores(sim: np.ndarray, length: int) -> np.ndarray:
    """Sequence-consistent similarity ``[Q, M]`` from single-frame similarity ``[Q, M]``."""
    if length < 1:
        raise ValueError(f"sequence length must be >= 1, got {length}")
    sim = np.asarray(sim, dtype=np.float32)
    acc = sim.copy()
    cnt = np.ones(sim.shape, dtype=np.float32)
    for l in range(1, min(length, *sim.shape)):
        acc[l:, l:] += sim[:-l, :-l]
        cnt[l:, l:] += 1.0
    return acc / cnt


class SequenceMatcher:
    """Streaming sequence matching over the last ``length`` query frames.

    ``update(sim_row [M]) -> seq_row [M]``; feeding rows 0..Q-1 of ``S`` reproduces
    ``sequence_scores(S, length)`` row by row. A change in map size resets the history.
    """

    def __init__(self, length: int):
        if length < 1:
            raise ValueError(f"sequence length must be >= 1, got {length}")
        self.length = length
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
        acc = row.copy()
        cnt = np.ones(row.shape, dtype=np.float32)
        hist = list(self._rows)
        for l in range(1, min(len(hist), len(row))):
            acc[l:] += hist[-1 - l][:-l]
            cnt[l:] += 1.0
        return acc / cnt
