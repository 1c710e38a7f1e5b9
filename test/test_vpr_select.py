"""Default VPR weights are chosen on validation places; the model card finds them in the bench."""
import json

import pytest
import torch

from vl2spike_ros.models import create_model, save_model
from vl2spike_ros.train.recipes import last_val_r1, select_default


def _weights(path, seed, val):
    torch.manual_seed(seed)
    m = create_model("spikformer_vpr", embed_dim=16, T=1, descriptor_dim=4)
    hist = [{"epoch": 1, "val_r1_s2w": 0.0, "val_r1_w2s": 0.0}]
    if val is not None:
        hist.append({"epoch": 2, "val_r1_s2w": val[0], "val_r1_w2s": val[1]})
    return save_model(m, path, {"name": path.stem, "history": hist})


def test_best_validation_recall_is_copied_and_recorded(tmp_path):
    a = _weights(tmp_path / "a.safetensors", 0, (20.0, 30.0))   # mean 25
    b = _weights(tmp_path / "b.safetensors", 1, (28.0, 18.0))   # mean 23
    assert last_val_r1(a) == 25.0
    dest = tmp_path / "default.safetensors"
    out = select_default({"a": a, "b": b}, dest)
    assert out["chosen"] == "a"
    assert dest.read_bytes() == a.read_bytes()
    sel = json.loads(dest.with_suffix(".json").read_text())["metadata"]["selected_as_default"]
    assert sel["chosen"] == "a" and sel["val_r1"] == {"a": 25.0, "b": 23.0}
    from vl2spike_ros.vpr.place import load_place_descriptor
    load_place_descriptor(dest)  # still a loadable model


def test_weights_without_validation_history_are_refused(tmp_path):
    a = _weights(tmp_path / "a.safetensors", 0, None)
    json_path = a.with_suffix(".json")
    info = json.loads(json_path.read_text())
    info["metadata"]["history"] = [{"epoch": 1}]
    json_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="validation"):
        select_default({"a": a}, tmp_path / "d.safetensors")
    assert not (tmp_path / "d.safetensors").exists()


def test_model_card_names_the_benchmarked_row(tmp_path):
    from vl2spike_ros.bench.model_card import method_of
    from vl2spike_ros.vpr.place import load_place_descriptor

    a = _weights(tmp_path / "a.safetensors", 0, (1.0, 1.0))
    b = _weights(tmp_path / "b.safetensors", 1, (1.0, 1.0))
    bench = {"methods": {"x": {"model": load_place_descriptor(a).model_meta()},
                         "y": {"model": load_place_descriptor(b).model_meta()}, "hog": {}}}
    assert method_of(bench, b) == "y"
    c = _weights(tmp_path / "c.safetensors", 2, (1.0, 1.0))
    with pytest.raises(ValueError, match="not among"):
        method_of(bench, c)
