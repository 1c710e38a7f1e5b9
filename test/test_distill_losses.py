"""Distillation losses on tiny tensors: zero at agreement, gradients only to the student."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from vl2spike_ros.train.config import (
    KDConfig, SPLConfig, SVSAlignConfig, SVSTemporalConfig, config_from_dict, load_config,
    parse_overrides,
)
from vl2spike_ros.train.losses import (
    LogitKDLoss, SPLLoss, SVSAlignLoss, SVSTemporalLoss, ramp_weight, relational_kl,
)


def test_kd_zero_when_equal_and_grad_only_to_student():
    loss = LogitKDLoss(KDConfig(enabled=True, weight=1.0, temperature=3.0))
    t = torch.randn(5, 4, requires_grad=True)
    s = t.detach().clone().requires_grad_(True)
    out = loss(s, t)
    assert set(out) == {"kd", "total"}
    assert out["total"].item() == pytest.approx(0.0, abs=1e-6)
    out2 = loss(torch.randn(5, 4, requires_grad=True), t)
    assert out2["kd"].item() > 0
    out2["total"].backward()
    assert t.grad is None


def test_svs_align_identity_zero_and_positive():
    cfg = SVSAlignConfig(enabled=True, projector="identity")
    loss = SVSAlignLoss(cfg, 8, 8)
    t = F.normalize(torch.randn(6, 8), dim=-1).requires_grad_(True)
    s = (3.0 * t.detach()).requires_grad_(True)  # same direction, other scale
    out = loss(s, t)
    assert out["svs_cos"].item() == pytest.approx(0.0, abs=1e-5)
    assert out["svs_rel"].item() == pytest.approx(0.0, abs=1e-5)
    s2 = torch.randn(6, 8, requires_grad=True)
    out2 = loss(s2, t)
    assert out2["svs_cos"].item() > 0 and out2["svs_rel"].item() > 0
    out2["total"].backward()
    assert s2.grad is not None and s2.grad.abs().sum() > 0
    assert t.grad is None


def test_svs_align_projector_trains():
    loss = SVSAlignLoss(SVSAlignConfig(enabled=True, projector="mlp", proj_hidden=16), 8, 12)
    out = loss(torch.randn(4, 8), torch.randn(4, 12))
    out["total"].backward()
    assert all(p.grad is not None for p in loss.projector.parameters())


def test_relational_kl_structure_only():
    t = torch.randn(5, 6)
    rot = torch.linalg.qr(torch.randn(6, 6))[0]
    assert relational_kl(t @ rot, t, 0.1).item() == pytest.approx(0.0, abs=1e-5)


def test_svs_temporal_zero_when_constant_and_ramped():
    cfg = SVSTemporalConfig(enabled=True, weight=2.0, warmup_epochs=1.0, ramp_epochs=2.0)
    loss = SVSTemporalLoss(cfg)
    base = torch.randn(1, 3, 8)
    feats = base.repeat(4, 1, 1).requires_grad_(True)
    v = {"a": torch.randn(1, 3, 5).repeat(4, 1, 1)}
    r = {"a": torch.full((4,), 0.2)}
    out = loss(feats, v, r, progress_epochs=5.0)
    assert out["total"].item() == pytest.approx(0.0, abs=1e-7)
    varying = torch.randn(4, 3, 8, requires_grad=True)
    v2 = {"a": torch.randn(4, 3, 5, requires_grad=True)}
    r2 = {"a": torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)}
    assert loss(varying, v2, r2, progress_epochs=0.5)["total"].item() == 0.0  # warm-up
    half = loss(varying, v2, r2, progress_epochs=2.0)
    full = loss(varying, v2, r2, progress_epochs=3.0)
    assert full["total"].item() == pytest.approx(2 * half["total"].item(), rel=1e-5)
    full["total"].backward()
    assert varying.grad.abs().sum() > 0 and v2["a"].grad.abs().sum() > 0
    assert r2["a"].grad is not None
    assert ramp_weight(10, 1.5, 1, 1) == 1.5


def test_svs_temporal_final_target():
    loss = SVSTemporalLoss(SVSTemporalConfig(enabled=True, warmup_epochs=0, ramp_epochs=0,
                                             target="final"))
    x = torch.randn(3, 2, 4)
    out = loss(x, {}, {}, 1.0)
    assert out["svs_temp_feat"].item() > 0
    with pytest.raises(ValueError, match="temporal target"):
        SVSTemporalLoss(SVSTemporalConfig(target="bogus"))(x, {}, {}, 1.0)


def test_spl_zero_at_agreement_and_ema():
    text = F.normalize(torch.randn(3, 8), dim=-1)
    cfg = SPLConfig(enabled=True, projector="identity", proto_momentum=0.5, proto_nce_weight=0.0)
    loss = SPLLoss(cfg, text, 8)
    labels = torch.tensor([0, 1, 2, 1])
    feats = text[labels].clone().requires_grad_(True)
    t_logits = torch.randn(4, 3, requires_grad=True)
    out = loss(feats, labels, t_logits.detach().clone(), t_logits)
    assert {"spl_proto", "spl_proto_nce", "spl_logit", "total"} <= set(out)
    assert out["spl_proto"].item() == pytest.approx(0.0, abs=1e-5)
    assert out["spl_logit"].item() == pytest.approx(0.0, abs=1e-5)
    assert bool(loss.proto_init.all())
    assert torch.allclose(loss.prototypes, text, atol=1e-6)
    # EMA: new batch of class 0 moves prototype 0 half-way
    new = torch.randn(1, 8)
    loss(new, torch.tensor([0]), torch.randn(1, 3), torch.randn(1, 3))
    assert torch.allclose(loss.prototypes[0], 0.5 * text[0] + 0.5 * new[0], atol=1e-6)
    loss.eval()
    before = loss.prototypes.clone()
    loss(torch.randn(2, 8), torch.tensor([1, 2]), torch.randn(2, 3), torch.randn(2, 3))
    assert torch.equal(before, loss.prototypes)


def test_spl_grads_only_to_student():
    text = torch.randn(3, 6, requires_grad=True)
    loss = SPLLoss(SPLConfig(enabled=True, proj_hidden=8), text, 4)
    feats = torch.randn(5, 4, requires_grad=True)
    s_logits = torch.randn(5, 3, requires_grad=True)
    t_logits = torch.randn(5, 3, requires_grad=True)
    out = loss(feats, torch.tensor([0, 1, 2, 0, 1]), s_logits, t_logits)
    assert out["spl_proto_nce"].item() > 0
    out["total"].backward()
    assert feats.grad.abs().sum() > 0 and s_logits.grad.abs().sum() > 0
    assert t_logits.grad is None and text.grad is None


def test_config_yaml_overrides_and_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  spl: {enabled: true, temperature: 2}\noptim: {epochs: 3}\n")
    cfg = load_config(p, parse_overrides(["optim.lr=0.01", "loss.kd.enabled=true",
                                          "teacher.templates=['a {}']"]))
    assert cfg.loss.spl.enabled and cfg.loss.spl.temperature == 2.0
    assert cfg.optim.epochs == 3 and cfg.optim.lr == 0.01 and cfg.loss.kd.enabled
    assert cfg.teacher.templates == ("a {}",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3
    with pytest.raises(ValueError, match="unknown config key"):
        config_from_dict({"loss": {"spl": {"temprature": 1}}})
    with pytest.raises(ValueError, match="cannot parse"):
        parse_overrides(["a=[x {}]"])
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["nope"])
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_repo_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "config" / "distill"
    smoke = load_config(root / "smoke.yaml")
    assert smoke.loss.svs_align.enabled and smoke.loss.spl.enabled
