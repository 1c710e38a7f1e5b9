"""Spikformer student: registry, shapes, gradients, state reset, capture, save/load."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from vl2spike_ros.models import (
    SpikformerConfig,
    SpikformerStudent,
    calibrate_bn,
    create_model,
    default_vpr_weights,
    get_config,
    list_models,
    load_model,
    save_model,
    weights_hash,
)

# Small overrides per variant so every test stays fast; the 224 variant is shrunk in width/size.
SMALL = {
    "spikformer_cifar": dict(embed_dim=32, depth=1, num_heads=2, T=2),
    "spikformer_vpr": dict(),
    "spikformer_imagenet": dict(img_size=(64, 64), embed_dim=32, depth=1, num_heads=2, T=2,
                                num_classes=7),
}


def _small(name: str) -> SpikformerStudent:
    torch.manual_seed(0)
    return create_model(name, **SMALL[name])


def _images(model: SpikformerStudent, b: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = model.config
    return torch.rand(b, c.in_chans, *c.img_size, generator=g)


def test_registry_has_required_variants():
    names = list_models()
    for n in ("spikformer_cifar", "spikformer_vpr", "spikformer_imagenet"):
        assert n in names
    vpr = get_config("spikformer_vpr")
    assert vpr.img_size == (32, 64) and vpr.in_chans == 1
    assert get_config("spikformer_cifar").img_size == (32, 32)
    assert get_config("spikformer_imagenet").img_size == (224, 224)
    with pytest.raises(Exception):
        vpr.T = 8  # frozen
    with pytest.raises(ValueError, match="unknown model variant"):
        get_config("nope")
    with pytest.raises(ValueError, match="override"):
        get_config("spikformer_vpr", bogus=1)
    with pytest.raises(ValueError, match="divisible"):
        get_config("spikformer_vpr", img_size=(30, 64))


def test_full_imagenet_variant_constructs():
    m = create_model("spikformer_imagenet")
    assert m.config.grid_size == (14, 14)
    assert m.head.out_features == 1000


@pytest.mark.parametrize("name", ["spikformer_cifar", "spikformer_vpr", "spikformer_imagenet"])
def test_shapes_every_variant(name):
    m = _small(name)
    cfg = m.config
    x = _images(m, b=3)
    tokens = m.forward_features(x)
    assert tokens.shape == (cfg.T, 3, cfg.num_tokens, cfg.embed_dim)
    assert m.pool(tokens).shape == (3, cfg.embed_dim)
    assert m(x).shape == (3, cfg.num_classes)
    d = m.descriptor(x)
    assert d.shape == (3, cfg.descriptor_dim) and d.dtype == torch.float32
    torch.testing.assert_close(d.norm(dim=1), torch.ones(3))
    # explicit time sequence, with a different T than the config
    seq = x.unsqueeze(0).repeat(3, 1, 1, 1, 1)
    assert m.forward_features(seq).shape == (3, 3, cfg.num_tokens, cfg.embed_dim)
    assert torch.isfinite(tokens).all()


def test_static_image_equals_repeated_sequence():
    m = _small("spikformer_vpr").eval()
    calibrate_bn(m, [_images(m, 4, seed=s) for s in range(2)])
    x = _images(m, 2)
    seq = x.unsqueeze(0).repeat(m.config.T, 1, 1, 1, 1)
    torch.testing.assert_close(m.forward_features(x), m.forward_features(seq))


@pytest.mark.parametrize("name", ["spikformer_cifar", "spikformer_vpr", "spikformer_imagenet"])
def test_gradients_reach_every_parameter(name):
    m = _small(name).train()
    x = _images(m, 4)
    g = torch.Generator().manual_seed(3)
    tokens = m.forward_features(x)
    desc = m.descriptor_from_tokens(tokens)
    noise = torch.randn(desc.shape, generator=g)
    loss = m.forward_head(tokens).square().mean() + (desc * noise).sum()
    loss.backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {pname}"


def test_state_reset_gives_identical_forwards():
    m = _small("spikformer_vpr").eval()
    calibrate_bn(m, [_images(m, 4, seed=s) for s in range(2)])
    x, other = _images(m, 2, seed=5), _images(m, 2, seed=6)
    a = m.forward_features(x)
    m.forward_features(other)  # would leave membrane state behind without a reset
    b = m.forward_features(x)
    torch.testing.assert_close(a, b)
    assert a.sum() > 0, "calibrated model should fire"


def test_calibrate_bn_makes_eval_model_fire():
    m = _small("spikformer_vpr").eval()
    x = _images(m, 4)
    n = calibrate_bn(m, [x, _images(m, 4, seed=9)])
    assert n == 2 and not m.training
    with m.capture() as cap:
        m.forward_features(x)
    assert cap.spike_rates["stem.stages.3.neuron"] > 0
    with pytest.raises(ValueError):
        calibrate_bn(m, [])


def test_capture_membrane_potentials_and_rates_keep_grad():
    m = _small("spikformer_vpr").train()
    x = _images(m, 2)
    nodes = dict(m.lif_nodes())
    with m.capture() as cap:
        tokens = m.forward_features(x)
    assert set(cap.v_seq) == set(nodes) == set(cap.spike_rates)
    T = m.config.T
    for name, v in cap.v_seq.items():
        assert v.shape[0] == T and v.shape[1] == 2, name
        assert v.requires_grad
        assert 0.0 <= cap.spike_rates[name].item() <= 1.0
        assert cap.step_spike_rates[name].shape == (T,)
    assert cap.step_features.shape == (T, 2, m.config.embed_dim)
    torch.testing.assert_close(cap.step_features.mean(0), m.pool(tokens))
    loss = sum(v.square().mean() for v in cap.v_seq.values()) + cap.step_features.var(0).mean()
    loss.backward()
    assert m.stem.stages[0].conv_bn.block[0].weight.grad.abs().sum() > 0
    # off again afterwards: no membrane sequences are stored
    m.forward_features(x)
    assert all(not n.store_v_seq and n.v_seq is None for n in nodes.values())


def test_wrong_shape_inputs_raise():
    m = _small("spikformer_vpr")
    bad = [torch.rand(1, 32, 64), torch.rand(2, 3, 32, 64), torch.rand(2, 1, 32, 32),
           torch.rand(1, 2, 2, 1, 32, 64), torch.rand(0, 1, 32, 64)]
    for x in bad:
        with pytest.raises(ValueError, match=r"shape \["):
            m.forward_features(x)
    with pytest.raises(ValueError, match="float"):
        m(torch.zeros(1, 1, 32, 64, dtype=torch.uint8))


def test_save_load_roundtrip(tmp_path):
    m = _small("spikformer_vpr").eval()
    calibrate_bn(m, [_images(m, 4)])
    path = save_model(m, tmp_path / "vpr.safetensors", metadata={"note": "test"})
    meta = json.loads((tmp_path / "vpr.json").read_text())
    assert meta["config"]["name"] == "spikformer_vpr" and meta["metadata"] == {"note": "test"}
    assert weights_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    m2 = load_model(path, expected="spikformer_vpr")
    assert isinstance(m2, SpikformerStudent) and not m2.training
    assert m2.config == m.config
    x = _images(m, 3)
    torch.testing.assert_close(m.descriptor(x), m2.descriptor(x))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left nothing behind


def test_wrong_variant_and_missing_file(tmp_path):
    m = _small("spikformer_vpr")
    path = save_model(m, tmp_path / "vpr.safetensors")
    with pytest.raises(ValueError, match="expected 'spikformer_cifar'"):
        load_model(path, expected="spikformer_cifar")
    # a JSON claiming another variant than the weights hold
    jpath = tmp_path / "vpr.json"
    meta = json.loads(jpath.read_text())
    meta["config"] = get_config("spikformer_cifar").to_dict()
    jpath.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit"):
        load_model(path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError):
        weights_hash(tmp_path / "missing.safetensors")


def test_config_dict_roundtrip_and_default_weights_path():
    cfg = get_config("spikformer_cifar", T=3)
    assert SpikformerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert default_vpr_weights().name == "vpr_default.safetensors"
