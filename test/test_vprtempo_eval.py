"""Precomputed-similarity evaluation and loading its results into ``vl2spike bench vpr``.

VPRTempo runs in its own venv; these tests run without ``vprtempo`` installed.
"""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from vl2spike_ros.bench import vpr as bench_vpr
from vl2spike_ros.bench.nordland import (DIRECTIONS, curves_to_json, evaluate_method,
                                         evaluate_similarity, markdown_table,
                                         precomputed_result)
from vl2spike_ros.vpr.evaluation import pr_auc
from vl2spike_ros.vpr.runner import Method

REPO = Path(__file__).resolve().parents[1]


def _seasons(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Summer = random textures, winter = the same places with heavy noise (aligned)."""
    rng = np.random.default_rng(seed)
    summer = rng.integers(0, 256, (n, 4, 6)).astype(np.float32)
    winter = np.clip(summer + rng.normal(0, 140, summer.shape), 0, 255)
    return {"summer": summer.astype(np.uint8), "winter": winter.astype(np.uint8)}


def _method() -> Method:
    def describe(x):
        d = x.reshape(len(x), -1).astype(np.float32) - 127.5
        return d / np.linalg.norm(d, axis=1, keepdims=True)
    return Method("fake", describe, lambda q, db: q @ db.T, faiss_ok=False)


def _strip(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in ("queries_per_s", "descriptor_dim")}


def test_precomputed_similarity_matches_evaluate_method():
    seasons, m = _seasons(), _method()
    ref, ref_curves = evaluate_method(m, seasons, seq_len=3)
    desc = {k: m.describe(v) for k, v in seasons.items()}
    sims = {d: m.similarity(desc[q], desc[db]) for d, (q, db) in DIRECTIONS.items()}
    res, curves = evaluate_similarity(sims, {"summer_to_winter": 2.0, "winter_to_summer": 4.0},
                                      seq_len=3)
    assert _strip(res) == _strip(ref)
    # the fake method is neither perfect nor hopeless, so equal numbers are informative
    r1 = res["summer_to_winter"]["tol0"]["r1"]
    assert 0.0 < r1 < 100.0
    seq = res["sequence"]["summer_to_winter"]["tol1"]["r1"]
    assert seq != res["summer_to_winter"]["tol1"]["r1"]
    assert res["queries_per_s"] == pytest.approx((40 / 2.0 + 40 / 4.0) / 2)
    for d in DIRECTIONS:
        np.testing.assert_array_equal(curves[d]["precision"], ref_curves[d]["precision"])
        assert pr_auc(curves[d]) == pytest.approx(res[d]["tol1"]["pr_auc"])


def test_precomputed_similarity_rejects_bad_input():
    sim = np.random.default_rng(1).random((5, 5))
    secs = {d: 1.0 for d in DIRECTIONS}
    with pytest.raises(ValueError, match="missing for direction"):
        evaluate_similarity({"summer_to_winter": sim}, secs)
    with pytest.raises(ValueError, match="Q <= M"):
        evaluate_similarity({d: sim[:, :3] for d in DIRECTIONS}, secs)
    with pytest.raises(ValueError, match="finite"):
        evaluate_similarity({d: np.full((5, 5), np.nan) for d in DIRECTIONS}, secs)
    with pytest.raises(ValueError, match="query time"):
        evaluate_similarity({d: sim for d in DIRECTIONS}, {d: 0.0 for d in DIRECTIONS})


def _result_json(seq_len: int = 5) -> dict:
    seasons, m = _seasons(n=30, seed=2), _method()
    desc = {k: m.describe(v) for k, v in seasons.items()}
    sims = {d: m.similarity(desc[q], desc[db]) for d, (q, db) in DIRECTIONS.items()}
    res, curves = evaluate_similarity(sims, {d: 1.0 for d in DIRECTIONS}, seq_len=seq_len)
    res.update({"n_places": 30, "train_seconds": 12.5,
                "pr_curve_tol1": curves_to_json(curves)})
    return json.loads(json.dumps(res))


def test_precomputed_result_round_trip_and_protocol_checks():
    obj = _result_json()
    res, curves = precomputed_result(obj, "x.json", seq_len=5, n_places=30)
    assert "pr_curve_tol1" not in res and res["train_seconds"] == 12.5
    for d in DIRECTIONS:
        assert pr_auc(curves[d]) == pytest.approx(res[d]["tol1"]["pr_auc"], abs=1e-5)
    with pytest.raises(ValueError, match="seq_len 5.*uses 3"):
        precomputed_result(obj, "x.json", seq_len=3)
    with pytest.raises(ValueError, match="30 places.*has 1430"):
        precomputed_result(obj, "x.json", n_places=1430)
    bad = json.loads(json.dumps(obj))
    del bad["winter_to_summer"]["tol2"]["r5"]
    with pytest.raises(ValueError, match=r"x\.json.*missing winter_to_summer\.tol2\.r5"):
        precomputed_result(bad, "x.json")
    bad = dict(obj, pr_curve_tol1={"summer_to_winter": {}})
    with pytest.raises(ValueError, match="malformed pr_curve_tol1"):
        precomputed_result(bad, "x.json")


def test_bench_loads_vprtempo_json(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_vpr, "VPRTEMPO_JSON", tmp_path / "absent.json")
    res, curves = bench_vpr.load_vprtempo(None, 5, 30)
    assert "skipped" in res and "make bench-vprtempo" in res["skipped"] and curves is None
    with pytest.raises(FileNotFoundError, match="nope.json"):
        bench_vpr.load_vprtempo(tmp_path / "nope.json", 5, 30)
    broken = tmp_path / "broken.json"
    broken.write_text('{"summer_to_winter": ')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        bench_vpr.load_vprtempo(broken, 5, 30)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"r1": 5.0}))
    with pytest.raises(ValueError, match="wrong.json: not a VPR result"):
        bench_vpr.load_vprtempo(wrong, 5, 30)
    good = tmp_path / "vt.json"
    good.write_text(json.dumps(_result_json()))
    monkeypatch.setattr(bench_vpr, "VPRTEMPO_JSON", good)  # picked up without the option
    res, curves = bench_vpr.load_vprtempo(None, 5, 30)
    assert set(curves) == set(DIRECTIONS) and res["source"] == str(good)
    table = markdown_table({"methods": {"vprtempo": res}})
    assert table.count("| vprtempo |") == 2


def test_targets_count_vprtempo_as_baseline():
    vt, _ = precomputed_result(_result_json(), "vt")
    weak = json.loads(json.dumps(vt))
    for d in DIRECTIONS:
        weak[d]["tol1"]["r1"] = vt[d]["tol1"]["r1"] - 1.0
    methods = {"sad": weak, "vprtempo": vt, "vl2spike": weak}
    t = bench_vpr._targets(methods)
    assert t["summer_to_winter"]["best_baseline"] == "vprtempo"
    assert t["summer_to_winter"]["baseline_r1"] == vt["summer_to_winter"]["tol1"]["r1"]
    t = bench_vpr._targets({"sad": weak, "vprtempo": {"skipped": "x"}, "vl2spike": vt})
    assert t["winter_to_summer"]["best_baseline"] == "sad"


def test_vprtempo_module_layout_matches_its_main(monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "run_vprtempo", REPO / "bench" / "vprtempo" / "run_vprtempo.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_vprtempo", mod)  # dataclasses look the module up
    spec.loader.exec_module(mod)  # no vprtempo/torch import at module level
    assert mod.module_layout(1430, 1100) == (2, 1100, 330)
    assert mod.module_layout(1000, 500) == (2, 500, 500)
    assert mod.module_layout(2500, 1000) == (3, 1000, 500)
    assert mod.module_layout(60, 1100) == (1, 60, 60)
    with pytest.raises(ValueError):
        mod.module_layout(0, 10)
