"""Acceptance rule: margin outside the neighbourhood, agreement, warm-up, calibration, bench."""
import json
from pathlib import Path

import numpy as np
import pytest

from vl2spike_ros.vpr.acceptance import (CALIBRATION_FILE, DEFAULT_MATCH_MARGIN,
                                         EVIDENCE_LENGTH, TARGET_PRECISION, AcceptanceRule,
                                         Calibration, accept_batch, decide, load_calibration,
                                         outside_margin)
from vl2spike_ros.vpr.matching import SequenceMatcher, parse_velocities, sequence_scores, topk

ROOT = Path(__file__).resolve().parents[1]


def test_outside_margin_ignores_the_neighbourhood():
    row = np.array([[0.1, 0.5, 0.9, 0.85, 0.2, 0.3, 0.6]])
    # best 2; +-2 covers places 0..4, the best outside is place 6 (0.6)
    assert outside_margin(row, np.array([2]), 2)[0] == pytest.approx(0.3)
    assert outside_margin(row, np.array([2]), 0)[0] == pytest.approx(0.05)
    assert np.isnan(outside_margin(row[:, :5], np.array([2]), 2)[0])  # nothing outside


def _stream(n_frames=40, n_places=30, seed=0, aligned=True):
    """Similarity of a run over the map (frame i shows place i) with noise and one aliased place.

    ``aligned=False``: noise only (the run is somewhere the map does not cover).
    """
    rng = np.random.default_rng(seed)
    sim = rng.normal(0, 0.15, (n_frames, n_places)).astype(np.float32)
    if aligned:
        sim[np.arange(n_frames), np.arange(n_frames) % n_places] += 0.6
        sim[:, 7] += 0.3  # a place that looks like everything
    return sim


@pytest.mark.parametrize("seq_len", [1, 5, 3])
@pytest.mark.parametrize("velocities", ["1", "0.5:2:4"])
def test_streaming_decisions_equal_batch(seq_len, velocities):
    sim = _stream()
    vel = parse_velocities(velocities)
    rule = AcceptanceRule(threshold=0.1, margin=0.05)
    ranked = sequence_scores(sim, seq_len, vel) if seq_len > 1 else sim
    scores, ids = topk(ranked, 1)
    want, want_margin = accept_batch(sim, ids[:, 0], scores[:, 0], rule, vel)
    ev = SequenceMatcher(EVIDENCE_LENGTH, vel)
    for i, row in enumerate(sim):
        ev_row = ev.update(row)
        got, margin = decide(rule, (ids[i, 0], scores[i, 0]), int(np.argmax(row)), ev_row,
                             len(ev) >= EVIDENCE_LENGTH)
        assert got == want[i], i
        np.testing.assert_equal(margin, want_margin[i])
    assert want.sum() > 10 and not want[:EVIDENCE_LENGTH - 1].any()  # warm-up frames: never


def test_rule_rejects_disagreement_low_margin_and_low_score():
    sim = _stream()
    scores, ids = topk(sim, 1)
    base, margin = accept_batch(sim, ids[:, 0], scores[:, 0], AcceptanceRule(margin=0.0))
    assert base[EVIDENCE_LENGTH:].mean() > 0.8
    wrong = (ids[:, 0] + 10) % sim.shape[1]  # reported place far from the evidence's
    assert not accept_batch(sim, wrong, scores[:, 0], AcceptanceRule(margin=0.0))[0].any()
    high = AcceptanceRule(margin=float(np.nanmax(margin)) + 1e-3)
    assert not accept_batch(sim, ids[:, 0], scores[:, 0], high)[0].any()
    floor = AcceptanceRule(threshold=2.0, margin=0.0)
    assert not accept_batch(sim, ids[:, 0], scores[:, 0], floor)[0].any()
    noise = _stream(aligned=False)  # off the map: accepted less often, never with a big margin
    s, i = topk(noise, 1)
    off_map, off_margin = accept_batch(noise, i[:, 0], s[:, 0], AcceptanceRule(margin=0.0))
    assert off_map.mean() < 0.5 < base.mean()
    assert np.nanmax(off_margin) < np.nanmedian(margin[base])
    with pytest.raises(ValueError):
        AcceptanceRule(margin=-0.1)


def test_calibration_steps_and_loading(tmp_path):
    cal = Calibration("abc", (0.0, 0.01, 0.05), (0.8, 0.95, 0.99), "test")
    assert cal.at(-0.1) is None and cal.at(float("nan")) is None
    assert cal.at(0.0) == 0.8 and cal.at(0.02) == 0.95 and cal.at(0.5) == 0.99
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal.to_json()))
    assert load_calibration("abc", path) == cal
    assert load_calibration("other", path) is None
    assert load_calibration("abc", tmp_path / "missing.json") is None
    path.write_text(json.dumps({**cal.to_json(), "confidence": [0.9, 0.8, 0.99]}))
    with pytest.raises(ValueError, match="cal.json"):
        load_calibration("abc", path)


def test_packaged_calibration_matches_default_margin_and_weights():
    """The default margin, the packaged table and bench/results/acceptance.json agree."""
    from vl2spike_ros.models import default_vpr_weights, read_model_meta

    table = json.loads(CALIBRATION_FILE.read_text())
    res = json.loads((ROOT / "bench" / "results" / "acceptance.json").read_text())
    assert res["chosen_margin"] == DEFAULT_MATCH_MARGIN
    assert res["calibration"] == table
    assert "validation" in res["protocol"]["chosen_on"]
    assert res["validation"]["single_frame"]["precision"] >= 100 * TARGET_PRECISION
    weights = default_vpr_weights()
    if weights.is_file():
        assert table["weights_hash"] == read_model_meta(weights)["weights_sha256_16"], (
            "default weights changed: rerun `vl2spike bench accept`")
    cal = load_calibration(table["weights_hash"])
    assert cal is not None and cal.at(DEFAULT_MATCH_MARGIN) >= TARGET_PRECISION


def test_bench_choice_and_calibration_on_synthetic_outcomes():
    from vl2spike_ros.bench.accept import (MIN_ACCEPTED, Outcome, calibration, choose_margin,
                                           operating_point, wilson_lower)

    assert wilson_lower(0, 0) == 0.0 and wilson_lower(10, 10) < 1.0
    assert wilson_lower(95, 100) < 0.95 < wilson_lower(990, 1000) + 0.01
    rng = np.random.default_rng(0)
    margin = rng.uniform(0, 0.2, 2000)
    correct = rng.uniform(size=2000) < np.where(margin < 0.05, 0.5, 0.99)
    o = Outcome(np.ones(2000, bool), margin, correct)
    sweep = [operating_point(o, m) for m in np.round(np.arange(0, 0.2, 0.01), 3)]
    chosen = choose_margin(sweep, 0.95)
    assert 0.02 <= chosen <= 0.05
    assert operating_point(o, chosen)["precision"] >= 95.0
    cal = calibration(sweep, "h", "synthetic")
    assert list(cal.confidence) == sorted(cal.confidence) and len(set(cal.confidence)) == len(
        cal.confidence)
    none = Outcome(np.ones(50, bool), np.zeros(50), np.zeros(50, bool))
    with pytest.raises(ValueError, match=str(MIN_ACCEPTED)):
        choose_margin([operating_point(none, 0.0)], 0.95)
