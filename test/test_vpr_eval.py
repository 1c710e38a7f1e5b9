"""Recall@N, PR curve and sequence matching on hand-made similarity matrices."""
import numpy as np
import pytest

from vl2spike_ros.vpr.evaluation import (correct_by_frames, correct_by_radius, evaluate_aligned,
                                         pr_auc, pr_curve, recall_at_n, recall_at_precision)
from vl2spike_ros.vpr.matching import SequenceMatcher, match, sequence_scores, topk


def test_topk_ties_rank_lower_id_first():
    s, i = topk(np.array([[0.5, 0.9, 0.9, 0.1]]), 3)
    assert i.tolist() == [[1, 2, 0]]
    assert s.tolist() == [[0.9, 0.9, 0.5]]


def test_recall_with_ties_and_tolerance_edges():
    # top-2 lists (ties: lower id first): q0 [1, 2], q1 [0, 1], q2 [0, 2], q3 [1, 3]
    # tol 0: q0 miss; q1, q2, q3 hit at rank 2.
    # tol 1: q0, q1 hit at rank 1 (one frame off); q2, q3 at rank 2.
    # tol 2: q3's place 1 (two frames off) and q2's place 0 now count at rank 1.
    sim = np.array([[0.2, 0.8, 0.8, 0.0],
                    [0.7, 0.7, 0.1, 0.0],
                    [0.9, 0.0, 0.6, 0.1],
                    [0.0, 0.9, 0.1, 0.2]])
    scores, ids = topk(sim, 2)
    gt = np.arange(4)
    r0 = recall_at_n(correct_by_frames(ids, gt, 0), ns=(1, 2))
    r1 = recall_at_n(correct_by_frames(ids, gt, 1), ns=(1, 2))
    r2 = recall_at_n(correct_by_frames(ids, gt, 2), ns=(1, 2))
    assert r0 == {1: 0.0, 2: 75.0}
    assert r1 == {1: 50.0, 2: 100.0}
    assert r2 == {1: 100.0, 2: 100.0}


def test_recall_skips_n_larger_than_k_and_rejects_no_positive():
    corr = np.array([[False, True], [True, False]])
    assert recall_at_n(corr, ns=(1, 2, 5)) == {1: 50.0, 2: 100.0}
    with pytest.raises(ValueError, match="no query"):
        recall_at_n(corr, ns=(1,), has_positive=np.array([False, False]))


def test_correct_by_radius_ignores_padding():
    ids = np.array([[0, -1], [1, 0]])
    db = np.array([[0.0, 0.0], [10.0, 0.0]])
    q = np.array([[1.0, 0.0], [9.0, 0.0]])
    assert correct_by_radius(ids, q, db, 2.0).tolist() == [[True, False], [True, False]]


def test_pr_curve_sanity():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, False, True])
    c = pr_curve(scores, correct)
    assert c["precision"].tolist() == [1.0, 1.0, 1.0, 2 / 3, 3 / 4]
    assert c["recall"].tolist() == [0.0, 0.25, 0.5, 0.5, 0.75]
    assert recall_at_precision(c, 1.0) == 50.0
    assert pr_auc(c) == pytest.approx(0.25 + 0.25 + 0.25 * 0.75)
    perfect = pr_curve(scores, np.ones(4, bool))
    assert pr_auc(perfect) == pytest.approx(1.0)
    # tied scores form one threshold step
    tied = pr_curve(np.array([0.5, 0.5]), np.array([True, False]))
    assert tied["precision"].tolist() == [1.0, 0.5]


def test_match_threshold_and_padding():
    best_id, best, acc = match(np.array([[0.9, 0.1], [0.3, 0.2], [0.95, -1.0]]),
                               np.array([[4, 2], [1, 0], [-1, -1]]), threshold=0.5)
    assert best_id.tolist() == [4, 1, -1]
    assert acc.tolist() == [True, False, False]


def test_sequence_matching_recovers_aliased_frame_and_streaming_agrees():
    rng = np.random.default_rng(0)
    n = 12
    sim = rng.uniform(0.0, 0.5, (n, n)).astype(np.float32)
    sim[np.arange(n), np.arange(n)] = 0.8
    sim[6, 6], sim[6, 2] = 0.3, 0.95  # frame 6 alone matches the wrong place
    assert topk(sim, 1)[1][6, 0] == 2
    seq = sequence_scores(sim, 4)
    assert topk(seq, 1)[1][6, 0] == 6
    sm = SequenceMatcher(4)
    rows = np.stack([sm.update(r) for r in sim])
    np.testing.assert_array_equal(rows, seq)
    res = evaluate_aligned(sim, tolerances=(0,), ns=(1,), seq_len=4)
    assert res["tol0"]["recall"]["r1"] == 100.0
    with pytest.raises(ValueError):
        SequenceMatcher(0)


def test_acceptance_metrics_precision_and_recall():
    from vl2spike_ros.vpr.evaluation import acceptance_metrics

    acc = np.array([True, True, True, False, False])
    ok = np.array([True, False, True, True, False])
    m = acceptance_metrics(acc, ok)
    assert (m["accepted"], m["correct_accepted"]) == (3, 2)
    assert m["precision"] == pytest.approx(200 / 3) and m["recall"] == pytest.approx(40.0)
    hp = np.array([True, True, True, False, False])  # recall over queries with a true match
    assert acceptance_metrics(acc, ok, hp)["recall"] == pytest.approx(200 / 3)
    none = acceptance_metrics(np.zeros(5, bool), ok)
    assert none["precision"] is None and none["recall"] == 0.0
    with pytest.raises(ValueError):
        acceptance_metrics(acc[:2], ok)
