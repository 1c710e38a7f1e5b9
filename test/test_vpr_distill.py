"""VPR student loss (InfoNCE + SVS from a frozen CNN teacher) and input normalisation."""
import numpy as np
import pytest
import torch

from vl2spike_ros.models import calibrate_bn, create_model, save_model
from vl2spike_ros.models.cnn import CNNConfig, PlaceCNN
from vl2spike_ros.vpr.descriptors import normalise, preprocess
from vl2spike_ros.vpr.place import load_place_descriptor
from vl2spike_ros.train.vpr_losses import SpikeVPRLoss, SVSWeights


def _student():
    torch.manual_seed(0)
    m = create_model("spikformer_vpr", embed_dim=16, T=2, descriptor_dim=4)
    return m.train()


def _teacher():
    torch.manual_seed(1)
    return PlaceCNN(CNNConfig(widths=(4, 8, 8, 8), descriptor_dim=12))


def _batch(b=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * b, 1, 32, 64, generator=g)
    idx = torch.arange(b) * 10
    return x[:b], x[b:], idx, idx


def _loss(teacher, **w):
    return SpikeVPRLoss(16, teacher=teacher, teacher_dim=12 if teacher else 0,
                        weights=SVSWeights(**w), teacher_tok_dim=8 if teacher else 0)


def test_without_teacher_only_infonce():
    out = _loss(None)(_student(), *_batch())
    assert set(out) == {"nce", "total"}
    assert torch.equal(out["total"], out["nce"])


def test_svs_terms_named_weighted_and_summed():
    loss = _loss(_teacher(), warmup_steps=0, ramp_steps=0)
    out = loss(_student(), *_batch())
    want = {"nce", "svs_cos", "svs_tok", "svs_rel", "svs_temp_feat", "svs_temp_mem",
            "svs_temp_rate", "total"}
    assert set(out) == want
    parts = sum(v for k, v in out.items() if k != "total")
    assert torch.allclose(out["total"], parts)
    assert all(torch.isfinite(v) for v in out.values())
    assert out["svs_tok"] > 0 and out["svs_cos"] > 0
    off_loss = _loss(_teacher(), tok=0.0, cos=0.0, rel=0.0, temporal=0.0)
    off = off_loss(_student(), *_batch())
    assert set(off) == {"nce", "total"}            # switched-off terms are not computed
    assert not any(hasattr(off_loss, m) for m in ("align", "proj_tok", "temporal"))
    rel_only = _loss(_teacher(), tok=0.0, cos=0.0, temporal=0.0)(_student(), *_batch())
    assert set(rel_only) == {"nce", "svs_rel", "total"}


def test_teacher_descriptor_and_map_in_one_pass_match_the_separate_calls():
    t = _teacher().eval()
    x = _batch()[0]
    d, m = t.descriptor_and_map(x)
    assert torch.allclose(d, t.descriptor(x)) and torch.allclose(m, t.feature_map(x))


def test_teacher_frozen_gradients_reach_student_and_projectors():
    teacher = _teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss = _loss(teacher, warmup_steps=0, ramp_steps=0)
    loss.train()
    assert not teacher.training
    student = _student()
    loss(student, *_batch())["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    stem = [p for p in student.stem.parameters() if p.grad is not None]
    assert stem and sum(float(p.grad.abs().sum()) for p in stem) > 0
    assert loss.proj_tok.weight.grad.abs().sum() > 0
    assert loss.align.projector[0].weight.grad.abs().sum() > 0
    after = teacher.state_dict()   # BN running stats untouched (eval mode)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_temporal_term_is_warm_started():
    loss = _loss(_teacher(), warmup_steps=2, ramp_steps=2, temporal=1.0)
    student = _student()
    seen = [loss(student, *_batch())["svs_temp_mem"].item() for _ in range(5)]
    assert seen[0] == 0.0 and seen[1] == 0.0      # steps 0, 1: warm-up
    assert seen[3] > 0.0                            # ramping


def test_patch_normalisation_is_local():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (1, 32, 64)).astype(np.float32)
    x[:, :, :32] *= 10.0                            # one bright half
    y = normalise(x.copy(), "patch8")
    b = y.reshape(1, 4, 8, 8, 8)
    assert np.allclose(b.mean(axis=(2, 4)), 0, atol=1e-5)
    assert np.allclose(b.std(axis=(2, 4)), 1, atol=0.05)
    with pytest.raises(ValueError, match="normalisation"):
        normalise(x.copy(), "patchy")
    with pytest.raises(ValueError, match="divisible"):
        normalise(np.zeros((1, 30, 64), np.float32), "patch8")


def test_input_norm_travels_with_the_weights(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (4, 32, 64), dtype=np.uint8)
    m = create_model("spikformer_vpr", embed_dim=16, T=1, descriptor_dim=8)
    calibrate_bn(m, [preprocess(imgs, (32, 64), 1, "patch8")])
    w = save_model(m.eval(), tmp_path / "w.safetensors", {"vpr": {"input_norm": "patch8"}})
    loaded = load_place_descriptor(w)
    assert loaded.settings.input_norm == "patch8"
    want = torch.nn.functional.normalize(
        loaded.backbone.descriptor(preprocess(imgs, (32, 64), 1, "patch8")),
        dim=-1).detach().numpy()
    assert np.allclose(loaded.describe_images(imgs), want, atol=1e-5)
    t = _teacher()
    save_model(t.eval(), tmp_path / "t.safetensors", {"vpr": {"input_norm": "patch8"}})
    assert load_place_descriptor(tmp_path / "t.safetensors").settings.input_norm == "patch8"
    bad = save_model(m.eval(), tmp_path / "b.safetensors", {"vpr": {"input_norm": "zscore"}})
    with pytest.raises(ValueError, match=r"b\.json: field metadata\.vpr: .*'zscore'"):
        load_place_descriptor(bad)


def test_relational_within_view_ignores_cross_view_pairs():
    from vl2spike_ros.train.losses import relational_kl

    g = torch.Generator().manual_seed(3)
    z, t = torch.randn(8, 5, generator=g), torch.randn(8, 6, generator=g)
    whole = _loss(_teacher(), rel_within_view=False)._relational(z, t)
    within = _loss(_teacher(), rel_within_view=True)._relational(z, t)
    assert torch.allclose(whole, relational_kl(z, t, 0.1))
    assert torch.allclose(within, 0.5 * (relational_kl(z[:4], t[:4], 0.1)
                                         + relational_kl(z[4:], t[4:], 0.1)))
    assert not torch.allclose(whole, within)


def test_unknown_or_misfitting_norm_in_cnn_weights_is_refused(tmp_path):
    save_model(_teacher().eval(), tmp_path / "t.safetensors", {"vpr": {"input_norm": "patch7"}})
    with pytest.raises(ValueError, match="patch 7"):
        load_place_descriptor(tmp_path / "t.safetensors")


def test_student_and_teacher_must_share_the_input_norm(tmp_path):
    from vl2spike_ros.train.recipes import StudentRecipe, train_student
    from vl2spike_ros.train.vpr_train import TrainConfig

    save_model(_teacher().eval(), tmp_path / "t.safetensors", {"vpr": {"input_norm": "patch8"}})
    with pytest.raises(ValueError, match="one norm"):
        train_student(tmp_path, tmp_path / "s.safetensors", TrainConfig(epochs=1), tmp_path,
                      StudentRecipe(teacher_path=tmp_path / "t.safetensors", norm="image"))
