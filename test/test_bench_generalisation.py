"""Generalisation bench (crossdomain sets, seed arms, targets) and rate-projection energy."""
import cv2
import numpy as np
import pytest
import torch

from vl2spike_ros.bench import generalisation as gen
from vl2spike_ros.bench.energy_report import place_projection_count, spiking_hw_energy
from vl2spike_ros.energy import E_AC_PJ, E_MAC_PJ, rate_projection_count, student_energy
from vl2spike_ros.models import calibrate_bn, create_model
from vl2spike_ros.vpr.descriptors import preprocess
from vl2spike_ros.vpr.evaluation import evaluate_ranked
from vl2spike_ros.vpr.place import DescriptorSettings, PlaceDescriptor
from vl2spike_ros.vpr.runner import Method
from vl2spike_ros.vpr.whitening import fit_whitening

SETS = list(gen.SET_LABELS)


def _method_result(r1: dict, e: float | None = None, qps: float = 500.0) -> dict:
    """Build a bench result with the given R@1 per set (tol 1 on Nordland)."""
    m = {d: {"tol1": {"r1": r1[d], "recall_at_95p": 10.0, "recall_at_100p": 5.0}}
         for d in gen.NORDLAND_SETS}
    m["crossdomain"] = {s: {"r1": r1[s], "recall_at_95p": 20.0, "recall_at_100p": 1.0}
                        for s in gen.CROSSDOMAIN}
    m["queries_per_s"] = qps
    if e is not None:
        m.update(energy_mj_per_query=e, energy_mj_per_query_spiking_hw=e / 5)
    return m


def _flat(v: float) -> dict:
    return {s: v for s in SETS}


def test_summary_row_means_and_incomplete_rows():
    row = gen.summary_row(_method_result({**_flat(10.0), "essex3in1": 30.0}))
    assert row["mean"] == pytest.approx(15.0) and row["essex3in1"] == 30.0
    assert row["recall_at_95p_mean"] == pytest.approx(15.0)
    assert row["recall_at_100p_mean"] == pytest.approx(3.0)
    no_cross = _method_result(_flat(1.0))
    del no_cross["crossdomain"]
    assert gen.summary_row(no_cross) is None and gen.summary_row({"skipped": "x"}) is None


def test_seed_arms_pair_by_training_seed_and_targets():
    methods = {"hog": _method_result(_flat(30.0)), "hog_whitened": _method_result(_flat(35.0)),
               "teacher": _method_result(_flat(50.0), e=0.1)}
    seeds = {}
    for k, (c, d) in enumerate([(30, 40), (32, 38), (28, 40)], start=1):
        sfx = "" if k == 1 else f"_seed{k}"
        methods["spikformer_continued" + sfx] = _method_result(_flat(float(c)))
        methods["vl2spike" + sfx] = _method_result(_flat(float(d)), e=0.01)
        seeds["spikformer_continued" + sfx] = seeds["vl2spike" + sfx] = 10 + k
    seeds["vl2spike_seed3"] = 99   # unpaired: no control with that seed
    summary = {n: gen.summary_row(m) for n, m in methods.items()}
    arms = gen.seed_arms(summary, seeds)
    assert arms["distilled"]["mean"]["n"] == 3 and arms["control"]["mean"]["mean"] == 30.0
    diff = arms["distilled_minus_control"]
    assert diff["seeds"] == [11, 12] and diff["mean"]["mean"] == pytest.approx(8.0)
    t = gen.targets(methods, summary, arms, "vl2spike")
    assert t["vs_hog_same_post"]["margin"] == pytest.approx(5.0) and t["vs_hog_same_post"]["met"]
    assert t["beats_plain_hog_every_set"]["met"]
    assert t["distilled_vs_control"]["paired_seeds"] == 2
    assert not t["distilled_vs_control"]["met"]          # only 2 paired seeds
    assert t["energy_vs_teacher"]["ratio_spiking_hw"] == pytest.approx(0.02)
    assert t["energy_vs_teacher"]["met"] and t["speed_met"]
    md = gen.markdown({"summary": summary, "arms": arms}, methods)
    assert "| distilled_minus_control (2 seeds) |" in md and "8.0 ± 2.8" in md
    assert md.count("\n") == 2 + len(methods) + 3


def test_targets_report_a_miss():
    methods = {"hog": _method_result({**_flat(30.0), "essex3in1": 40.0}),
               "hog_whitened": _method_result(_flat(36.0)),
               "vl2spike": _method_result(_flat(39.0))}
    summary = {n: gen.summary_row(m) for n, m in methods.items()}
    t = gen.targets(methods, summary, gen.seed_arms(summary, {}), "vl2spike")
    assert not t["vs_hog_same_post"]["met"] and not t["beats_plain_hog_every_set"]["met"]
    assert t["beats_plain_hog_every_set"]["margins"]["essex3in1"] == pytest.approx(-1.0)
    assert "skipped" in gen.targets(methods, summary, {}, "default")


def _write_set(root, name, imgs):
    for side, arr in (("ref", imgs), ("query", imgs[::-1])):
        (root / name / side).mkdir(parents=True)
        for i, im in enumerate(arr):
            cv2.imwrite(str(root / name / side / f"{i:04d}.png"), im)


def test_load_and_evaluate_crossdomain(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (6, 20, 30, 3), dtype=np.uint8)
    for name in gen.CROSSDOMAIN:
        _write_set(tmp_path, name, imgs)
    sets = gen.load_crossdomain(tmp_path)
    assert set(sets) == set(gen.CROSSDOMAIN)
    db, q, tol = sets["essex3in1"]
    assert db.shape[1:3] == gen.LOAD_SIZE and tol == 0

    def describe(x):
        f = x.reshape(len(x), -1).astype(np.float32)
        return f / np.linalg.norm(f, axis=1, keepdims=True)
    res = gen.evaluate_crossdomain(Method("pix", describe, lambda a, b: a @ b.T), sets)
    # query i shows reference 5 - i: within tol 2 only for i = 2, 3; never at tol 0
    assert res["essex3in1"]["r1"] == pytest.approx(0.0)
    assert res["gardens_point"]["r1"] == pytest.approx(100.0 * 2 / 6)
    assert {"recall_at_95p", "recall_at_100p", "pr_auc", "r5"} <= set(res["essex3in1"])
    assert res["essex3in1"]["r10"] is None                 # fewer than 10 places
    with pytest.raises(FileNotFoundError, match="gardens_point/ref"):
        gen.load_crossdomain(tmp_path / "gardens_point")


def test_recall_at_95p_in_ranked_metrics():
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    correct = np.array([[True], [True], [False], [True]])
    r = evaluate_ranked(scores, correct, ns=(1,))
    assert r["recall_at_100p"] == pytest.approx(50.0) and r["recall_at_95p"] == pytest.approx(50.0)


def test_rate_projection_commutes_with_time_average_and_counts_spikes():
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(3, 4, 2, 5, 5, generator=g) < 0.2).float()      # [T, B, C, h, w]
    w = torch.randn(50, 7, generator=g)
    rates = s.mean(0).flatten(1)
    per_step = torch.stack([st.flatten(1) @ w for st in s]).mean(0)
    torch.testing.assert_close(rates @ w, per_step)
    c = rate_projection_count(s, 7)
    assert c["in_dim"] == 50 and c["dense_macs"] == 350
    assert c["spikes"] == pytest.approx(float(s.sum()) / 4) and c["acs"] == pytest.approx(
        7 * float(s.sum()) / 4)
    assert c["energy_mj_spiking"] == pytest.approx((E_AC_PJ * c["acs"] + E_MAC_PJ * c["macs"])
                                                   * 1e-9)
    with pytest.raises(ValueError, match="integer"):
        rate_projection_count(s * 0.5, 7)
    with pytest.raises(ValueError, match="out_dim"):
        rate_projection_count(s, 0)


def test_place_projection_count_replaces_the_dense_whitening_macs():
    imgs = np.random.default_rng(1).integers(0, 255, (6, 32, 64), dtype=np.uint8)
    torch.manual_seed(0)
    m = create_model("spikformer_vpr", embed_dim=16, T=2, descriptor_dim=8)
    x = preprocess(imgs, (32, 64), 1)
    calibrate_bn(m, [x])
    raw = PlaceDescriptor(m.eval(), DescriptorSettings.for_backbone(m, "stem2"))
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, raw.dim)).astype(np.float32)
    place = raw.with_whitening(fit_whitening(a, a + 0.1 * a[::-1], dim=6))
    c = place_projection_count(place, x)
    with torch.no_grad():
        spikes = m.forward_stem(x, 2)
    assert c["spikes"] == pytest.approx(float(spikes.sum()) / len(x)) and c["out_dim"] == 6
    dense = student_energy(m, x, output=place)
    assert dense["macs"] >= c["dense_macs"]       # the whitening is inside the dense count
    hw = spiking_hw_energy(dense["energy_mj"], c)
    assert hw == pytest.approx(dense["energy_mj"] - c["energy_mj_dense"] + c["energy_mj_spiking"])
    assert place_projection_count(raw, x) is None
    assert place_projection_count(raw.with_mode("pooled"), x) is None
    assert spiking_hw_energy(1.0, None) == 1.0
