"""Fair distillation benchmark: paired CIs, results fields, per-term gradients, fixed subsets."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from scipy import stats as sps

from _distill_tiny import tiny_clip_checkpoint, tiny_distill_dict, tiny_image_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---- paired confidence intervals -------------------------------------------------------------

def test_paired_ci_matches_scipy_t():
    from vl2spike_ros.bench.distill_report import paired_ci

    rng = np.random.default_rng(0)
    a = (0.55 + 0.01 * rng.standard_normal(4)).tolist()
    b = (0.54 + 0.01 * rng.standard_normal(4)).tolist()
    got = paired_ci(a, b)
    ref = sps.ttest_rel(a, b).confidence_interval(0.95)
    d = np.subtract(a, b)
    assert got["n"] == 4 and got["per_seed"] == pytest.approx(d.tolist())
    assert got["mean"] == pytest.approx(d.mean())
    assert got["sd"] == pytest.approx(d.std(ddof=1))
    assert got["t_crit"] == pytest.approx(sps.t.ppf(0.975, 3))
    assert got["ci"] == pytest.approx([ref.low, ref.high])


def test_paired_ci_by_hand_and_edge_cases():
    from vl2spike_ros.bench.distill_report import paired_ci

    got = paired_ci([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2   # t(0.975, 3) * sd / sqrt(4)
    assert got["ci"] == pytest.approx([2.5 - half, 2.5 + half])
    assert got["excludes_zero"]
    assert not paired_ci([0.1, -0.1], [0.0, 0.0])["excludes_zero"]
    one = paired_ci([0.5], [0.4])
    assert one["ci"] is None and one["mean"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="equally long"):
        paired_ci([0.1, 0.2], [0.1])


# ---- results JSON / table / plot -------------------------------------------------------------

def _fake_runs(arms, seeds):
    runs = {}
    for i, a in enumerate(arms):
        for s in seeds:
            runs[(a, s)] = {"test_top1": 0.50 + 0.01 * i + 0.002 * s, "val_top1": 0.5,
                            "firing_rate": 0.1, "energy_mj": 0.003, "steps": 12,
                            "train_images": 40, "run_wall_s": 1.0, "run_dir": f"r/{a}{s}",
                            "grad_norm_mean": {"ce": 0.5, **({"kd": 0.2} if i else {})}}
    return runs


def test_bench_json_keeps_old_fields_and_adds_paired_cis(tmp_path):
    from vl2spike_ros.bench.distill import write_outputs
    from vl2spike_ros.bench.distill_report import summarise

    arms, seeds = ["ce", "kd", "vl2spike"], [0, 1, 2]
    spec = {"seeds": seeds, "arms": {a: {} for a in arms}}
    base = {"data": {"train_limit": 40, "subset_seed": 0}, "teacher": {"kd_templates": []}}
    teacher = {"teacher_id": "t", "top1": 0.7, "val_top1": 0.7, "energy_mj": 0.07,
               "test_images": 100, "disjoint_from_student": True}
    res = summarise(spec, base, spec["arms"], _fake_runs(arms, seeds), teacher,
                    {"wall_s": 60.0, "parallel": 2, "selection": [], "chosen": {}})
    out = tmp_path / "distill.json"
    write_outputs(res, out)
    data = json.loads(out.read_text())
    assert data["seeds"] == seeds and "fraction" in data["units"]["top1"]
    for a in arms:
        r = data["arms"][a]
        assert {"top1_mean", "top1_std", "energy_mj", "per_seed", "top1_ci95"} <= set(r)
        assert sorted(r["per_seed"]) == ["0", "1", "2"]
    kd = data["paired"]["ce"]["kd"]
    assert kd["mean"] == pytest.approx(0.01) and kd["ci"] == pytest.approx([0.01, 0.01])
    assert set(data["paired"]["kd"]) == {"vl2spike"}
    assert data["budget"]["fixed_subset"] and data["budget"]["kd_prompts_same_as_spl"]
    md = out.with_suffix(".md").read_text()
    assert "95 % CI" in md and "+1.00 [+1.00, +1.00] *" in md
    # a resumed invocation reads finished runs back: the runs' own time is reported beside it
    runs_s = sum(sum(data["arms"][a]["run_wall_s"]) for a in arms)
    assert runs_s > 0 and data["runs_wall_s_total"] == pytest.approx(runs_s, abs=0.1)
    assert "own wall time summed" in md
    assert out.with_suffix(".png").stat().st_size > 0


def test_finished_run_is_read_back_not_retrained(tmp_path):
    from vl2spike_ros.bench.distill import _one_run

    (tmp_path / "metrics.json").write_text(json.dumps({"test_top1": 0.4, "run_wall_s": 3.0}))
    got = _one_run({"bogus": "not a config"}, str(tmp_path), "ce seed0")
    assert got["cached"] and got["test_top1"] == 0.4


def test_resolve_key_ignores_how_overrides_are_written():
    from vl2spike_ros.bench.distill import resolve

    base = {"loss": {"svs_align": {"projector": "mlp"}}}
    _, k1 = resolve(base, {"seed": 1})
    _, k2 = resolve(base, {"seed": 1, "loss.svs_align.projector": "mlp"})
    _, k3 = resolve(base, {"seed": 2})
    assert k1 == k2 != k3


# ---- data: fixed subset, disjoint teacher split ------------------------------------------------

def test_fixed_subset_and_student_indices():
    from vl2spike_ros.train.config import DataConfig
    from vl2spike_ros.train.distill_data import split_indices, student_indices

    labels = np.repeat(np.arange(4), 25)
    fixed = DataConfig(train_limit=20, subset_seed=7, val_fraction=0.2)
    a, va = split_indices(fixed, labels, 0)
    b, vb = split_indices(fixed, labels, 1)
    assert np.array_equal(a, b) and np.array_equal(va, vb) and len(a) == 20
    assert not np.intersect1d(a, va).size
    free = DataConfig(train_limit=20, val_fraction=0.2)
    assert not np.array_equal(split_indices(free, labels, 0)[0], split_indices(free, labels, 1)[0])
    used = student_indices({"train_limit": 20, "val_fraction": 0.2}, [0, 1], labels)
    assert set(used) == set(np.concatenate([*split_indices(free, labels, 0),
                                            *split_indices(free, labels, 1)]))


# ---- per-term gradients ----------------------------------------------------------------------

def test_term_grad_norms_and_per_term_clipping():
    from vl2spike_ros.train.grad_terms import (
        clip_scales, group_terms, scaled_total, term_group, term_grad_norms,
    )

    assert [term_group(t) for t in ("ce", "kd", "svs_cos", "svs_temp_mem", "spl_logit")] == \
        ["ce", "kd", "svs_align", "svs_temporal", "spl"]
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    terms = {"ce": (w * w).sum() / 2, "svs_cos": 10 * w.sum(), "svs_rel": w.sum() * 0.0,
             "total": torch.zeros(()), "_acc": torch.ones(())}
    norms = term_grad_norms(terms, [w])
    assert norms == pytest.approx({"ce": 5.0, "svs_cos": 10 * math.sqrt(2), "svs_rel": 0.0})
    groups = group_terms(terms)
    assert list(groups) == ["ce", "svs_align"]
    scales = clip_scales(groups, [w], max_norm=1.0)
    assert scales == pytest.approx({"ce": 0.2, "svs_align": 1 / (10 * math.sqrt(2))})
    scaled_total(groups, scales).backward()
    # each group's gradient clipped to norm 1: [3,4]/5 + [1,1]/sqrt(2)
    assert w.grad.tolist() == pytest.approx([0.6 + 1 / math.sqrt(2), 0.8 + 1 / math.sqrt(2)])


def test_temporal_rate_term_per_image():
    from vl2spike_ros.train.config import SVSTemporalConfig
    from vl2spike_ros.train.losses import SVSTemporalLoss

    loss = SVSTemporalLoss(SVSTemporalConfig(enabled=True, warmup_epochs=0, ramp_epochs=0,
                                             rate_granularity="sample"))
    feats = torch.randn(1, 3, 4).expand(2, 3, 4)
    flat = {"l": torch.tensor([[0.1, 0.5, 0.9], [0.1, 0.5, 0.9]])}      # [T=2, B=3], constant in T
    assert loss(feats, {}, flat, 1.0)["svs_temp_rate"].item() == pytest.approx(0.0)
    moved = {"l": torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.5, 0.9]])}
    assert loss(feats, {}, moved, 1.0)["svs_temp_rate"].item() > 0
    with pytest.raises(ValueError, match="rate_granularity"):
        SVSTemporalConfig(rate_granularity="neuron")


def test_temporal_feature_term_gradient_bounded_for_silent_steps():
    from vl2spike_ros.train.config import SVSTemporalConfig
    from vl2spike_ros.train.losses import SVSTemporalLoss

    loss = SVSTemporalLoss(SVSTemporalConfig(enabled=True, warmup_epochs=0, ramp_epochs=0))
    feats = torch.rand(2, 4, 8)
    feats[0, :2] = 0.0   # step 0 of two images: no spikes yet
    feats.requires_grad_(True)
    loss(feats, {}, {}, 1.0)["svs_temp_feat"].backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().max() < 10.0


# ---- trainer: gradient-norm log, per-term clipping, shared KD prompts --------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_bench")
    return tiny_image_folder(root / "imgs"), tiny_clip_checkpoint(root)


def test_trainer_logs_grad_norms_and_clips_per_term(tiny, tmp_path):
    from vl2spike_ros.train.config import config_from_dict
    from vl2spike_ros.train.trainer import GRAD_LOG_FILE, run_distill

    folder, ckpt = tiny
    over = {"teacher.online": True, "teacher.kd_templates": [], "optim.grad_norm_every": 2,
            "optim.clip_mode": "per_term", "loss.svs_temporal.rate_granularity": "sample"}
    res = run_distill(config_from_dict(tiny_distill_dict(folder, ckpt), over), tmp_path)
    header = (tmp_path / GRAD_LOG_FILE).read_text().splitlines()[0].split(",")
    assert header[0] == "step" and {"ce", "kd", "svs_cos", "spl_proto"} <= set(header)
    assert {"ce", "kd", "svs_cos"} <= set(res.metrics["grad_norm_mean"])
    log_header = (tmp_path / "train_log.csv").read_text().splitlines()[0].split(",")
    assert {"clip_ce", "clip_kd", "clip_svs_align", "clip_spl"} <= set(log_header)


def test_disjoint_teacher_leaves_out_train_and_val_of_the_fair_spec():
    from pathlib import Path

    from vl2spike_ros.train.distill_data import student_indices
    from vl2spike_ros.train.teacher_train import exclusion_spec

    spec = Path(__file__).resolve().parents[1] / "config/distill/bench_cifar10_fair.yaml"
    ex = exclusion_spec(spec)
    assert ex["seeds"] == [0, 1, 2, 3] and ex["data"]["subset_seed"] == 0
    labels = np.repeat(np.arange(10), 5000)   # CIFAR-10 train: 50,000 images, 10 classes
    left_out = student_indices(ex["data"], ex["seeds"], labels)
    assert len(left_out) == 10_000            # 5,000 student images (one subset) + 5,000 val
    with pytest.raises(FileNotFoundError, match="disjoint-from"):
        exclusion_spec(spec.with_name("nope.yaml"))
