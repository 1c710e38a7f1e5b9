"""PlaceDescriptor: backbone + descriptor mode + input norm + whitening as one module.

Its settings are read from the weights metadata in one place; its fingerprint follows them.
"""
import json

import numpy as np
import pytest
import torch

from vl2spike_ros.models import CNNConfig, PlaceCNN, calibrate_bn, create_model, save_model
from vl2spike_ros.vpr.descriptors import preprocess
from vl2spike_ros.vpr.place import DescriptorSettings, PlaceDescriptor, load_place_descriptor
from vl2spike_ros.vpr.whitening import fit_whitening

IMGS = np.random.default_rng(0).integers(0, 255, (6, 32, 64), dtype=np.uint8)


def _student():
    torch.manual_seed(0)
    m = create_model("spikformer_vpr", embed_dim=16, T=1, descriptor_dim=8)
    calibrate_bn(m, [preprocess(IMGS, (32, 64), 1)])
    return m.eval()


def _whitening(dim_in, dim_out=5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(40, dim_in)).astype(np.float32)
    return fit_whitening(a, a + 0.1 * rng.normal(size=a.shape).astype(np.float32), dim=dim_out)


def _saved(tmp_path, vpr, whitening=None, name="w.safetensors"):
    extra = whitening.to_tensors() if whitening is not None else None
    return save_model(_student(), tmp_path / name, {"vpr": vpr}, extra_tensors=extra)


def _edit_vpr(path, **changes):
    jpath = path.with_suffix(".json")
    info = json.loads(jpath.read_text())
    info["metadata"].setdefault("vpr", {}).update(changes)
    jpath.write_text(json.dumps(info))


@pytest.mark.parametrize("mode, dim", [("pooled", 8), ("spatial", 32 * 8), ("stem2", 4 * 16 * 32)])
def test_forward_shape_and_unit_norm(mode, dim):
    place = PlaceDescriptor(_student(), DescriptorSettings.for_backbone(_student(), mode))
    x = preprocess(IMGS, (32, 64), 1)
    z = place(x)
    assert z.shape == (len(IMGS), dim) == (len(IMGS), place.dim)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(len(IMGS)))
    np.testing.assert_allclose(place.describe_images(IMGS), z.detach().numpy(), atol=1e-6)
    assert place.is_spiking and place.describe_images(IMGS, batch_size=4).dtype == np.float32


def test_whitening_is_applied_after_the_raw_descriptor():
    raw = PlaceDescriptor(_student(), DescriptorSettings.for_backbone(_student(), "spatial"))
    wh = _whitening(raw.dim)
    white = raw.with_whitening(wh)
    x = preprocess(IMGS, (32, 64), 1)
    assert white.dim == 5 and white.raw_dim == raw.dim
    torch.testing.assert_close(white(x), wh(raw(x)))
    with pytest.raises(ValueError, match=f"expects {raw.dim + 1}-d"):
        raw.with_whitening(_whitening(raw.dim + 1))
    assert white.with_mode("pooled").whitening is None     # it fitted the old mode


def test_settings_must_fit_the_backbone():
    cnn = PlaceCNN(CNNConfig(widths=(4, 8, 8, 8), descriptor_dim=12))
    with pytest.raises(ValueError, match="'map' or 'pooled'"):
        DescriptorSettings.for_backbone(cnn, "spatial")
    with pytest.raises(ValueError, match="'map' is a CNN descriptor"):
        DescriptorSettings.for_backbone(_student(), "map")
    with pytest.raises(ValueError, match="do not fit the backbone"):
        PlaceDescriptor(_student(), DescriptorSettings.for_backbone(cnn, "map"))
    with pytest.raises(ValueError, match="unknown VPR descriptor mode"):
        DescriptorSettings("spikformer", "stem0")


def test_load_reads_settings_and_model_meta(tmp_path):
    path = _saved(tmp_path, {"descriptor": "stem2", "input_norm": "patch8"})
    place = load_place_descriptor(path)
    assert place.settings == DescriptorSettings("spikformer", "stem2", "patch8", (32, 64), 1)
    meta = place.model_meta()
    assert set(meta) == {"variant", "weights_hash", "descriptor_dim", "input_size", "fingerprint"}
    assert meta["input_size"] == [1, 32, 64] and meta["descriptor_dim"] == place.dim
    assert meta["fingerprint"] == place.fingerprint == load_place_descriptor(path).fingerprint
    want = place(preprocess(IMGS, (32, 64), 1, "patch8")).detach().numpy()
    np.testing.assert_allclose(place.describe_images(IMGS), want, atol=1e-6)


def test_fingerprint_follows_everything_that_changes_descriptors(tmp_path):
    path = _saved(tmp_path, {"descriptor": "spatial"})
    seen = {"base": load_place_descriptor(path).fingerprint}
    _edit_vpr(path, note="not a descriptor setting")
    assert load_place_descriptor(path).fingerprint == seen["base"]
    _edit_vpr(path, descriptor="pooled")              # only the JSON sidecar changes
    seen["mode"] = load_place_descriptor(path).fingerprint
    _edit_vpr(path, descriptor="spatial", input_norm="patch8")
    seen["norm"] = load_place_descriptor(path).fingerprint
    _edit_vpr(path, input_norm="image")
    assert load_place_descriptor(path).fingerprint == seen["base"]
    place = load_place_descriptor(path)
    seen["white"] = place.with_whitening(_whitening(place.dim)).fingerprint
    other = save_model(create_model("spikformer_vpr", embed_dim=16, T=1, descriptor_dim=8),
                       tmp_path / "o.safetensors", {"vpr": {"descriptor": "spatial"}})
    seen["weights"] = load_place_descriptor(other).fingerprint
    assert len(set(seen.values())) == len(seen), seen


def test_old_and_new_layouts_give_the_same_place_descriptor(tmp_path):
    new = _saved(tmp_path, {"descriptor": "stem2"}, name="new.safetensors")
    old = _saved(tmp_path, {"descriptor": "stem2"}, name="old.safetensors")
    info = json.loads(old.with_suffix(".json").read_text())
    old.with_suffix(".json").write_text(json.dumps(
        {"format": "vl2spike_ros.spikformer_student/1", "config": info["config"],
         "weights_sha256_16": info["weights_sha256_16"], "metadata": info["metadata"]}))
    a, b = load_place_descriptor(new), load_place_descriptor(old)
    assert a.settings == b.settings and a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.describe_images(IMGS), b.describe_images(IMGS))
    torch.manual_seed(1)
    cnn = PlaceCNN(CNNConfig(widths=(4, 8, 8, 8), descriptor_dim=12)).eval()
    c = save_model(cnn, tmp_path / "c.safetensors")
    cfg = json.loads(c.with_suffix(".json").read_text())["config"]
    c.with_suffix(".json").write_text(json.dumps(
        {"kind": "cnn", "config": cfg, "meta": {"vpr": {"descriptor": "map"}}}))
    place = load_place_descriptor(c)
    assert place.settings.mode == "map" and place.dim == cnn.map_dim and not place.is_spiking


@pytest.mark.parametrize("vpr, message", [
    ([], "w.json: field metadata.vpr must be a JSON object"),
    ({"descriptor": 3}, "w.json: field metadata.vpr.descriptor must be a string"),
    ({"input_norm": "zscore"}, "w.json: field metadata.vpr: unknown input normalisation"),
])
def test_broken_vpr_metadata_is_one_clear_line(tmp_path, vpr, message):
    path = _saved(tmp_path, {})
    jpath = path.with_suffix(".json")
    info = json.loads(jpath.read_text())
    info["metadata"]["vpr"] = vpr
    jpath.write_text(json.dumps(info))
    with pytest.raises(ValueError, match=message) as err:
        load_place_descriptor(path)
    assert "\n" not in str(err.value)


def test_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_place_descriptor(tmp_path / "nope.safetensors")
