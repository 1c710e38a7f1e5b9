"""One weights format for every network: safetensors + JSON sidecar.

The sidecar has ``kind``, ``config``, ``metadata``; old layouts load (migrated on read); broken
sidecars fail with one line naming the file and the field.
"""
import ast
import json
from pathlib import Path

import pytest
import torch

import vl2spike_ros.models as models_pkg
from vl2spike_ros.models import (CNNConfig, PlaceCNN, create_model, load_model, load_weights,
                                 read_model_meta, save_model)
from vl2spike_ros.models.schema import CONFIG_FIELDS, FORMAT
from vl2spike_ros.models.config import SpikformerConfig


def _student():
    torch.manual_seed(0)
    return create_model("spikformer_vpr", embed_dim=16, T=1, descriptor_dim=8).eval()


def _cnn():
    torch.manual_seed(1)
    return PlaceCNN(CNNConfig(widths=(4, 8, 8, 8), descriptor_dim=12)).eval()


def _rewrite(path: Path, info) -> None:
    path.with_suffix(".json").write_text(json.dumps(info) if not isinstance(info, str) else info)


def test_both_kinds_share_one_layout(tmp_path):
    for name, net in (("s", _student()), ("c", _cnn())):
        p = save_model(net, tmp_path / f"{name}.safetensors", {"note": name})
        info = json.loads(p.with_suffix(".json").read_text())
        assert set(info) == {"format", "kind", "config", "weights_sha256_16", "metadata"}
        assert info["format"] == FORMAT and info["metadata"] == {"note": name}
        assert info["kind"] == ("spikformer" if name == "s" else "cnn")
        back = load_weights(p)
        assert type(back) is type(net) and back.config == net.config and not back.training
        x = torch.randn(2, 1, 32, 64)
        torch.testing.assert_close(back.descriptor(x), net.descriptor(x))
    with pytest.raises(ValueError, match="holds a 'cnn' network"):
        load_model(tmp_path / "c.safetensors")


def test_old_layouts_load_and_are_migrated_on_read(tmp_path):
    s = save_model(_student(), tmp_path / "s.safetensors", {"vpr": {"descriptor": "stem2"}})
    cfg = json.loads(s.with_suffix(".json").read_text())["config"]
    _rewrite(s, {"format": "vl2spike_ros.spikformer_student/1", "config": cfg,
                 "weights_sha256_16": "0123456789abcdef",
                 "metadata": {"vpr": {"descriptor": "stem2"}}})
    meta = read_model_meta(s)
    assert meta["kind"] == "spikformer" and meta["format"] == FORMAT
    assert meta["metadata"] == {"vpr": {"descriptor": "stem2"}}
    assert isinstance(load_model(s), type(_student()))
    c = save_model(_cnn(), tmp_path / "c.safetensors")
    ccfg = json.loads(c.with_suffix(".json").read_text())["config"]
    _rewrite(c, {"kind": "cnn", "config": ccfg, "meta": {"vpr": {"descriptor": "map"}}})
    meta = read_model_meta(c)
    assert meta["kind"] == "cnn" and meta["metadata"] == {"vpr": {"descriptor": "map"}}
    assert meta["weights_sha256_16"] is None
    assert isinstance(load_weights(c), PlaceCNN)


def _cnn_cfg():
    return CNNConfig(widths=(4, 8, 8, 8), descriptor_dim=12).to_dict()


@pytest.mark.parametrize("info, message", [
    ({"kind": "cnn", "config": {k: v for k, v in _cnn_cfg().items() if k != "widths"}},
     "model.json: field config.widths missing"),
    ([1, 2], "model.json: top level must be a JSON object, got list"),
    ("{not json", "model.json: not valid JSON"),
    ({"kind": "proxy_teacher", "config": {}}, "model.json: field kind must be one of"),
    ({"config": _cnn_cfg()}, "model.json: field kind missing"),
    ({"kind": "cnn"}, "model.json: field config missing"),
    ({"kind": "cnn", "config": {**_cnn_cfg(), "img_size": "32x64"}},
     r"model.json: field config.img_size must be \[H, W\]"),
    ({"kind": "cnn", "config": {**_cnn_cfg(), "depth": 3}},
     "model.json: field config.depth unknown"),
    ({"kind": "cnn", "config": _cnn_cfg(), "metadata": []},
     "model.json: field metadata must be a JSON object"),
    ({"kind": "cnn", "config": _cnn_cfg(), "meta": {}, "metadata": {}},
     "model.json: fields metadata and meta both present"),
    ({"format": "vl2spike_ros.other/9", "kind": "cnn", "config": _cnn_cfg()},
     "model.json: field format: unknown format"),
    ({"kind": "cnn", "config": {**_cnn_cfg(), "widths": [0, 8, 8, 8]}},
     "model.json: field config invalid"),
])
def test_broken_sidecar_fails_with_one_line_naming_file_and_field(tmp_path, info, message):
    path = save_model(_cnn(), tmp_path / "model.safetensors")
    _rewrite(path, info)
    with pytest.raises(ValueError, match=message) as err:
        load_weights(path)
    assert type(err.value) is ValueError and "\n" not in str(err.value)


def test_missing_sidecar_or_weights(tmp_path):
    path = save_model(_cnn(), tmp_path / "model.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_weights(path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_weights(tmp_path / "missing.safetensors")


def test_schema_lists_every_config_field():
    import dataclasses
    fields = {f.name for f in dataclasses.fields(SpikformerConfig)}
    assert set(CONFIG_FIELDS["spikformer"]) == fields
    assert set(CONFIG_FIELDS["cnn"]) == {f.name for f in dataclasses.fields(CNNConfig)}


def test_models_package_does_not_import_vpr():
    for src in Path(models_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(src.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any("vpr" in n.split(".") for n in names), (src.name, names)
