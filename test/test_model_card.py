"""Model card: descriptor layers, parameter split, energy both ways, generalisation table."""
import json

import pytest
import torch

from vl2spike_ros.bench import generalisation as gen
from vl2spike_ros.bench import model_card as mc
from vl2spike_ros.models import create_model, default_vpr_weights, save_model, weights_hash
from vl2spike_ros.vpr.place import load_place_descriptor
from vl2spike_ros.vpr.whitening import Whitening

RAW_DIM = 4 * 16 * 32      # stem2 of embed 16: 4 channels after stage 1's max-pool, 16x32 grid
OUT_DIM = 8


def _weights(path):
    """Tiny stem2 Spikformer with a stored whitening (RAW_DIM -> OUT_DIM)."""
    torch.manual_seed(0)
    m = create_model("spikformer_vpr", embed_dim=16, T=1, descriptor_dim=4)
    wh = Whitening(torch.zeros(RAW_DIM), torch.randn(RAW_DIM, OUT_DIM))
    meta = {"name": "tiny", "vpr": {"descriptor": "stem2", "input_norm": "image"},
            "teacher": {"path": str(path), "sha256_16": "0" * 16, "kind": "x"}}
    return save_model(m, path, meta, extra_tensors=wh.to_tensors())


def _bench(path):
    """Bench results with the tiny weights as `vl2spike` and a HOG row, plus generalisation."""
    def result(r1, e=None):
        m = {d: {"tol1": {"r1": r1, "recall_at_95p": 1.0, "recall_at_100p": 0.5}}
             for d in gen.NORDLAND_SETS}
        m["crossdomain"] = {s: {"r1": r1 + 1, "recall_at_95p": 2.0, "recall_at_100p": 1.0}
                            for s in gen.CROSSDOMAIN}
        m["queries_per_s"] = 400.0
        if e is not None:
            m.update(energy_mj_per_query=e, energy_mj_per_query_spiking_hw=e / 4)
        return m
    place = load_place_descriptor(path)
    methods = {"hog": result(20.0), "teacher": result(40.0, 0.1),
               "vl2spike": {**result(33.3, 0.01), "model": place.model_meta(),
                            "descriptor_dim": place.dim}}
    return {"methods": methods, "targets": {},
            "generalisation": gen.report(methods, "vl2spike", {"hog": None, "teacher": None,
                                                               "vl2spike": path})}


ENERGY = {"weights_hash": None, "data": {"num_images": 2, "source": "test"},
          "student": {"macs": 2.0e6, "sops": 4.0e5, "energy_mj": 0.0123,
                      "energy_mj_spiking_hw": 0.00234,
                      "rate_projection": {"dense_macs": 1.9e6, "macs": 3.0e3, "acs": 9.0e5}},
          "teacher": {"macs": 4.4e9, "energy_mj": 20.28},
          "place_teacher": {"macs": 2.2e7, "energy_mj": 0.1033}}


def test_descriptor_layers_and_parameter_split(tmp_path):
    place = load_place_descriptor(_weights(tmp_path / "w.safetensors"))
    usage = mc.layer_usage(place)
    assert usage["stages"] == ["stem.stages.0", "stem.stages.1"]
    assert {"stem.stages.2", "stem.stages.3", "stem.rpe", "blocks", "head"} <= \
        set(usage["not_run"])
    assert not any(n.startswith("stem.stages.0") for n in usage["not_run"])
    split = mc.parameter_split(place, usage)
    stem = place.backbone.stem.stages
    assert split["input_layer"] == sum(p.numel() for p in stem[0].parameters()) == 2 * 9 + 4
    assert split["spiking"] == sum(p.numel() for p in stem[1].parameters())
    assert split["whitening_proj"] == RAW_DIM * OUT_DIM and split["whitening_mean"] == RAW_DIM
    assert split["descriptor_total"] == (split["input_layer"] + split["spiking"]
                                         + split["whitening_proj"] + split["whitening_mean"])
    assert split["file_total"] == split["backbone_total"] + RAW_DIM * (OUT_DIM + 1)
    assert split["descriptor_total"] < split["file_total"]


def test_card_from_json_names_layers_energy_and_generalisation(tmp_path):
    w = _weights(tmp_path / "w.safetensors")
    bench_json, energy_json = tmp_path / "bench.json", tmp_path / "energy.json"
    bench_json.write_text(json.dumps(_bench(w)))
    energy_json.write_text(json.dumps({**ENERGY, "weights_hash": weights_hash(w)}))
    out = tmp_path / "card.md"
    assert mc.main(["--bench-json", str(bench_json), "--energy-json", str(energy_json),
                    "--weights", str(w), "--out", str(out)]) == 0
    card = out.read_text()
    for text in ("`stem.stages.0`", "`stem.stages.1`", "`blocks`", "whitening projection",
                 "0.01230", "0.00234", "CLIP ViT-B/32", "place-CNN teacher", "gardens_point",
                 "essex3in1", "Targets for `vl2spike`", weights_hash(w)):
        assert text in card, text
    assert "Note:" not in card      # the energy report measured these weights
    energy_json.write_text(json.dumps(ENERGY))
    mc.card_from_json(out, bench_json, energy_json, w)
    assert "Note:" in out.read_text()


def test_card_refuses_missing_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        mc.card_from_json(tmp_path / "c.md", tmp_path / "nothing.json", None,
                          _weights(tmp_path / "w.safetensors"))


def test_packaged_card_describes_the_packaged_weights():
    card = default_vpr_weights().with_suffix(".md")
    if not default_vpr_weights().is_file() or not card.is_file():
        pytest.skip("no packaged weights/card (make weights)")
    assert weights_hash(default_vpr_weights()) in card.read_text(), \
        "stale model card: run `make model-card`"
