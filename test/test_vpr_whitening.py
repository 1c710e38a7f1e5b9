"""Learned descriptor whitening.

Fit, apply, storage inside weights files, map-descriptor CNN, and the whole-map SVS
alignment term.
"""
import numpy as np
import pytest
import torch

from vl2spike_ros.models import (create_model, load_extra_tensors, load_model, load_weights,
                                 save_model)
from vl2spike_ros.models.cnn import CNNConfig, PlaceCNN
from vl2spike_ros.train.vpr_losses import SpikeVPRLoss, SVSWeights
from vl2spike_ros.vpr.place import DescriptorSettings, PlaceDescriptor, load_place_descriptor
from vl2spike_ros.vpr.whitening import Whitening, fit_whitening, split_whitening

from test_vpr_distill import _batch, _teacher  # noqa: E402  (shared tiny teacher/batch)


def _views(n=300, d=40, nuisance=6.0, seed=0):
    """Two views of n places: shared place signal + a strong view-dependent nuisance."""
    rng = np.random.default_rng(seed)
    place = rng.normal(size=(n, d))
    basis = rng.normal(size=(3, d))
    a = place + nuisance * rng.normal(size=(n, 3)) @ basis
    b = place + nuisance * rng.normal(size=(n, 3)) @ basis
    return a.astype(np.float32), b.astype(np.float32)


def _r1(q, db):
    return float((np.argmax(q @ db.T, axis=1) == np.arange(len(q))).mean())


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_whitening_suppresses_view_nuisance_on_unseen_places():
    a, b = _views(seed=0)
    wh = fit_whitening(a[:200], b[:200], dim=32, shrink=0.1)
    qa, qb = a[200:], b[200:]                       # places not used for fitting
    ya, yb = wh(torch.from_numpy(qa)).numpy(), wh(torch.from_numpy(qb)).numpy()
    assert ya.shape == (100, 32)
    assert np.allclose(np.linalg.norm(ya, axis=1), 1.0, atol=1e-5)
    raw = _r1(_unit(qa), _unit(qb))
    assert _r1(ya, yb) > raw + 0.2, (raw, _r1(ya, yb))


def test_whitening_pca_path_and_bad_input():
    a, b = _views(n=120, d=50)
    wh = fit_whitening(a, b, dim=16, pca_dim=20)
    assert (wh.in_dim, wh.out_dim) == (50, 16)
    with pytest.raises(ValueError, match="matching"):
        fit_whitening(a, b[:10])
    with pytest.raises(ValueError, match="shrink"):
        fit_whitening(a, b, shrink=0)
    with pytest.raises(ValueError, match=r"\[B, 50\]"):
        wh(torch.zeros(2, 49))


def test_whitening_tensors_round_trip_and_incomplete_refused():
    a, b = _views(n=80, d=10)
    wh = fit_whitening(a, b, dim=8)
    state, back = split_whitening({"w": torch.ones(1), **wh.to_tensors()})
    assert set(state) == {"w"}
    assert back.proj.dtype == torch.float32 and torch.equal(back.mean, wh.mean)
    assert torch.allclose(back.proj, wh.proj, rtol=1e-3, atol=1e-6)   # stored as float16
    assert wh.to_tensors()["vpr_whitening.proj"].dtype == torch.float16
    huge = Whitening(torch.zeros(2), torch.tensor([[1e6, 1.0], [0.5, 2.0]]))  # overflows float16
    assert huge.to_tensors()["vpr_whitening.proj"].dtype == torch.float32
    assert Whitening.from_tensors({"w": torch.ones(1)}) is None
    with pytest.raises(ValueError, match="incomplete whitening"):
        Whitening.from_tensors({"vpr_whitening.mean": wh.mean})


def _student(dim=4):
    torch.manual_seed(0)
    m = create_model("spikformer_vpr", embed_dim=16, T=2, descriptor_dim=dim)
    return m


def _place(backbone, mode="spatial", whitening=None):
    return PlaceDescriptor(backbone, DescriptorSettings.for_backbone(backbone, mode), whitening)


def test_student_weights_carry_whitening_and_loaders_apply_it(tmp_path):
    m = _student().eval()
    raw = _place(m)
    raw_dim = raw.dim
    imgs = np.random.default_rng(0).integers(0, 255, (40, 32, 64), dtype=np.uint8)
    da = raw.describe_images(imgs[:20])
    db = raw.describe_images(imgs[20:])
    wh = fit_whitening(da, db, dim=6)
    path = tmp_path / "w.safetensors"
    save_model(m, path, {"vpr": {"descriptor": "spatial"}}, extra_tensors=wh.to_tensors())
    assert set(load_extra_tensors(path)) == {"vpr_whitening.mean", "vpr_whitening.proj"}
    load_model(path)                                # the network itself still loads strictly
    place = load_place_descriptor(path)
    assert place.model_meta()["descriptor_dim"] == 6 and place.dim == 6
    got = place.describe_images(imgs[:5])
    stored = Whitening.from_tensors(wh.to_tensors())             # as kept in the file
    want = stored(torch.from_numpy(raw.describe_images(imgs[:5]))).numpy()
    assert got.shape == (5, 6) and np.allclose(got, want, atol=1e-5)
    bad = Whitening(torch.zeros(raw_dim + 1), torch.zeros(raw_dim + 1, 3))
    save_model(m, path, {"vpr": {"descriptor": "spatial"}}, extra_tensors=bad.to_tensors())
    with pytest.raises(ValueError, match=f"expects {raw_dim + 1}-d descriptors"):
        load_place_descriptor(path)


def test_cnn_map_descriptor_with_whitening(tmp_path):
    torch.manual_seed(0)
    cnn = PlaceCNN(CNNConfig(widths=(4, 8, 8, 8), descriptor_dim=12)).eval()
    x = torch.randn(3, 1, 32, 64)
    z = _place(cnn, "map")(x)
    assert z.shape == (3, cnn.map_dim) == (3, 8 * 4 * 8)
    assert torch.allclose(z, torch.nn.functional.normalize(cnn.features(x).flatten(1), dim=-1))
    a, b = _views(n=60, d=cnn.map_dim)
    wh = fit_whitening(a, b, dim=5)
    path = tmp_path / "t.safetensors"
    save_model(cnn, path, {"vpr": {"descriptor": "map"}}, extra_tensors=wh.to_tensors())
    assert isinstance(load_weights(path), PlaceCNN)
    place = load_place_descriptor(path)
    assert place.settings.mode == "map" and place.model_meta()["descriptor_dim"] == 5
    assert not place.is_spiking
    stored = Whitening.from_tensors(wh.to_tensors())
    assert torch.allclose(place(x), stored(z), atol=1e-5)


def test_unknown_descriptor_mode_refused(tmp_path):
    cnn = PlaceCNN(CNNConfig(widths=(4, 8, 8, 8), descriptor_dim=12))
    path = tmp_path / "t.safetensors"
    save_model(cnn, path, {"vpr": {"descriptor": "mystery"}})
    with pytest.raises(ValueError, match=r"t\.json: field metadata\.vpr: unknown VPR descriptor "
                                         r"mode 'mystery'"):
        load_place_descriptor(path)


def test_map_term_uses_the_descriptor_head_when_it_matches_the_teacher():
    w = SVSWeights(tok=1.0, map=1.0, cos=0.0, rel=0.0, temporal=0.0, nce=0.0)
    loss = SpikeVPRLoss(16, teacher=_teacher(), teacher_dim=12, weights=w, teacher_tok_dim=8,
                        spatial_head_dim=8)
    assert not hasattr(loss, "proj_tok")            # the student's own head is the projector
    student = _student(dim=8).train()
    out = loss(student, *_batch())
    assert set(out) == {"svs_tok", "svs_map", "total"}  # nce weight 0: not computed
    assert 0 < float(out["svs_map"].detach()) < 2
    out["total"].backward()
    assert student.desc_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="8-channel head"):
        loss(_student(dim=4).train(), *_batch())
    other = SpikeVPRLoss(16, teacher=_teacher(), teacher_dim=12, weights=w, teacher_tok_dim=8,
                         spatial_head_dim=4)
    assert hasattr(other, "proj_tok")
    assert set(other(_student(dim=4).train(), *_batch())) == {"svs_tok", "svs_map", "total"}


def _tiny_nordland(root, n=40):
    """summer/ and winter/ with n aligned 64x32 frames: a place pattern + season-wide change."""
    import cv2

    rng = np.random.default_rng(0)
    places = rng.integers(0, 200, (n, 32, 64)).astype(np.float32)
    for season, shift in (("summer", 0.0), ("winter", 40.0)):
        (root / season).mkdir(parents=True)
        for i, p in enumerate(places):
            img = np.clip(p + shift + rng.normal(0, 5, p.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / season / f"images-{i:05d}.png"), img)


def test_whiten_weights_fits_on_training_places_and_selection_uses_it(tmp_path):
    import json

    from vl2spike_ros.train.recipes import last_val_r1
    from vl2spike_ros.train.whiten import whiten_weights

    _tiny_nordland(tmp_path / "nordland")
    torch.manual_seed(0)
    cnn = PlaceCNN(CNNConfig(widths=(4, 8, 8, 8), descriptor_dim=12))
    src = tmp_path / "t.safetensors"
    save_model(cnn, src, {"history": [{"epoch": 1, "val_r1_s2w": 1.0, "val_r1_w2s": 1.0}]})
    out = tmp_path / "tw.safetensors"
    rep = whiten_weights(src, tmp_path / "nordland", out, descriptor="map", dim=8, shrink=1.0)
    # 40 places: 24 train (60 %), of which the last 10 % (2) are validation places
    assert rep["fitted_on_places"] == 22 and rep["dim"] == 8
    info = json.loads(out.with_suffix(".json").read_text())
    meta = info["metadata"]
    assert info["kind"] == "cnn" and "meta" not in info
    assert meta["vpr"]["descriptor"] == "map" and meta["vpr"]["whitening"] == rep
    assert load_extra_tensors(src) == {}                         # the source is untouched
    place = load_place_descriptor(out)
    assert place.model_meta()["descriptor_dim"] == 8 and place.settings.mode == "map"
    w = rep["val_r1_whitened"]
    assert last_val_r1(out) == 0.5 * (w["val_r1_s2w"] + w["val_r1_w2s"])
    with pytest.raises(ValueError, match="'map' or 'pooled'"):
        whiten_weights(src, tmp_path / "nordland", descriptor="spatial")


def test_energy_counts_the_descriptor_head_and_whitening_as_macs():
    from vl2spike_ros.energy import student_energy

    m = _student(dim=4).eval()
    for blk in m.modules():                 # make the tiny untrained model fire
        if isinstance(blk, torch.nn.BatchNorm2d):
            blk.bias.data.fill_(1.0)
    x = torch.randn(2, 1, 32, 64)
    raw = _place(m)
    raw_dim = raw.dim

    def describe(t):
        return raw(t)
    plain = student_energy(m, x, output=describe)
    a, b = _views(n=50, d=raw_dim)
    white = student_energy(m, x, output=raw.with_whitening(fit_whitening(a, b, dim=6)))
    assert white["macs"] - plain["macs"] == pytest.approx(raw_dim * 6, rel=0.05)
    assert white["energy_mj"] > plain["energy_mj"]
    assert plain["output"] == "describe"


def test_stem_descriptor_equals_the_stage_output_of_the_full_forward(tmp_path):
    m = _student(dim=4).eval()
    for blk in m.modules():
        if isinstance(blk, torch.nn.BatchNorm2d):
            blk.bias.data.fill_(1.0)
    x = torch.randn(3, 1, 32, 64)
    seen = {}
    h = m.stem.stages[2].register_forward_hook(lambda _m, _i, o: seen.setdefault("s", o))
    m.forward_features(x)
    h.remove()
    stem = m.forward_stem(x, 3)
    assert stem.shape == (2, 3, *m.stem.prefix_shape(3, (32, 64))) == (2, 3, 8, 8, 16)
    assert torch.equal(stem, seen["s"]) and stem.sum() > 0
    stem_place = _place(m, "stem3")
    z = stem_place(x)
    assert z.shape == (3, stem_place.dim) == (3, 8 * 8 * 16)
    assert torch.allclose(z, torch.nn.functional.normalize(stem.mean(0).flatten(1), dim=-1))
    with pytest.raises(ValueError, match="stem has 4 stages"):
        m.forward_stem(x, 5)
    path = tmp_path / "s.safetensors"
    save_model(m, path, {"vpr": {"descriptor": "stem3"}})
    place = load_place_descriptor(path)
    assert place.settings.mode == "stem3" and place.model_meta()["descriptor_dim"] == 1024
    for bad in ("stem0", "stemx", "stem"):
        save_model(m, path, {"vpr": {"descriptor": bad}})
        with pytest.raises(ValueError, match="unknown VPR descriptor mode"):
            load_place_descriptor(path)


def test_bench_hog_whitened_reference_is_fitted_on_training_places(tmp_path):
    from vl2spike_ros.bench.vpr import _hog_whitened
    from vl2spike_ros.data.datasets import load_nordland

    _tiny_nordland(tmp_path / "nordland", n=40)
    method = _hog_whitened(tmp_path / "nordland")
    test_s = load_nordland(tmp_path / "nordland", "summer", "test")[0]
    test_w = load_nordland(tmp_path / "nordland", "winter", "test")[0]
    ds, dw = method.describe(test_s), method.describe(test_w)
    assert ds.shape == dw.shape and ds.shape[0] == 16 and ds.shape[1] <= 44  # <= 2 x 22 pairs
    assert np.allclose(np.linalg.norm(ds, axis=1), 1.0, atol=1e-5)
    assert _r1(ds, dw) >= 0.9       # the synthetic season change is a global offset


def test_loss_without_teacher_and_without_infonce_is_refused():
    with pytest.raises(ValueError, match="needs InfoNCE"):
        SpikeVPRLoss(16, weights=SVSWeights(nce=0.0))
