"""NIR export of the spiking stem: extraction, round trip, other simulators, variants, report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from vl2spike_ros.cli import main
from vl2spike_ros.export.chips import hardware_report, layer_counts
from vl2spike_ros.export.nir_io import (SIMULATORS, read_nir, run_norse, stem_from_nir, to_nir,
                                        write_nir)
from vl2spike_ros.export.reference import ReferenceStem, descriptor_from_spikes
from vl2spike_ros.export.spec import (IF, LIF, THRESHOLD, Conv, Neuron, SpikingStem,
                                      UnsupportedLayerError, extract_stem, ungroup)
from vl2spike_ros.export.variants import discretization_scale, make_variant
from vl2spike_ros.models import calibrate_bn, create_model, save_model
from vl2spike_ros.vpr.place import DescriptorSettings, PlaceDescriptor
from vl2spike_ros.vpr.whitening import Whitening

IMG = (16, 32)
POOLED_LAYER = "stem.stages.1.conv_bn.block.2"


def tiny_place(patch: int, seed: int = 0, calib: torch.Tensor | None = None) -> PlaceDescriptor:
    """Build a tiny stem2 place model; patch 8 max-pools in stage 1, patch 4 does not."""
    torch.manual_seed(seed)
    model = create_model("spikformer_vpr", img_size=IMG, patch_size=patch, embed_dim=16,
                         num_heads=2, descriptor_dim=16)
    x = calib if calib is not None else torch.randn(64, 1, *IMG)
    calibrate_bn(model, [x], max_batches=1)
    model.eval()
    settings = DescriptorSettings.for_backbone(model, "stem2")
    raw = PlaceDescriptor(model, settings)
    whitening = Whitening(torch.randn(raw.raw_dim) * 0.01, torch.randn(raw.raw_dim, 8))
    return raw.with_whitening(whitening).eval()


@pytest.fixture(scope="module")
def frames(data_root) -> torch.Tensor:
    """Load twelve real Nordland frames, summer and winter, preprocessed for the tiny model."""
    from vl2spike_ros.data.datasets import load_nordland_frames
    from vl2spike_ros.vpr.descriptors import preprocess

    imgs = np.concatenate([load_nordland_frames(data_root / "nordland", s, 2000, 6, 7)
                           for s in ("summer", "winter")])
    return preprocess(imgs, IMG, 1, "image")


def test_exact_stem_reproduces_the_model():
    place = tiny_place(patch=4)        # stem2 without max-pool: nothing to approximate
    stem = extract_stem(place, maxpool="error")
    assert stem.approximations == ()
    assert [type(x).__name__ for x in stem.layers] == ["Conv", "Neuron"] * 2
    x = torch.randn(6, 1, *IMG) * 1.5
    ref = ReferenceStem(stem)
    spikes = ref(x)
    with torch.no_grad():
        want = place.backbone.forward_stem(x, 2)
        assert torch.equal(spikes, want)
        assert torch.allclose(descriptor_from_spikes(spikes, stem.whitening), place(x),
                              atol=1e-6)
    assert 0.0 < ref.last_rates["stage1_lif"] < 1.0


def test_maxpool_on_membrane_is_refused_by_name_or_rewritten():
    place = tiny_place(patch=8)
    with pytest.raises(UnsupportedLayerError, match=POOLED_LAYER + ": MaxPool2d"):
        extract_stem(place, maxpool="error")
    stem = extract_stem(place)
    assert [x.name for x in stem.layers][-2:] == ["stage1_pool_count", "stage1_pool_or"]
    assert stem.layers[-1].kind == THRESHOLD and len(stem.approximations) == 1
    assert POOLED_LAYER in stem.approximations[0]
    assert stem.output_shape == place.backbone.stem.prefix_shape(2, IMG)


def test_unsupported_layers_are_named():
    place = tiny_place(patch=4)
    place.backbone.stem.stages[0].conv_bn.block[1] = nn.GroupNorm(1, 2)
    with pytest.raises(UnsupportedLayerError, match=r"stem\.stages\.0\.conv_bn\.block\.1: "
                                                    "GroupNorm"):
        extract_stem(place)
    place = tiny_place(patch=4)
    place.backbone.stem.stages[1].neuron.v_reset = None
    with pytest.raises(UnsupportedLayerError, match=r"stem\.stages\.1\.neuron: .*soft reset"):
        extract_stem(place)
    with pytest.raises(UnsupportedLayerError, match="'pooled'"):
        extract_stem(place.with_mode("pooled"))


def _same_layers(a: SpikingStem, b: SpikingStem) -> None:
    assert [x.name for x in a.layers] == [x.name for x in b.layers]
    for x, y in zip(a.layers, b.layers):
        if isinstance(x, Conv):
            assert torch.equal(x.weight, y.weight) and torch.equal(x.bias, y.bias)
            assert (x.stride, x.padding, x.groups) == (y.stride, y.padding, y.groups)
        else:
            assert (x.kind, x.v_reset) == (y.kind, y.v_reset)
            assert x.v_threshold == pytest.approx(y.v_threshold, rel=1e-6)
            assert (x.tau is None) == (y.tau is None)
            assert x.tau is None or x.tau == pytest.approx(y.tau, rel=1e-5)


def test_nir_file_round_trip(tmp_path):
    stem = extract_stem(tiny_place(patch=8))
    path = write_nir(to_nir(stem), tmp_path / "stem.nir")
    graph = read_nir(path)
    back = stem_from_nir(graph)
    _same_layers(stem, back)
    assert back.input_shape == stem.input_shape and back.T == stem.T
    assert back.approximations == stem.approximations
    assert torch.allclose(back.whitening.proj, stem.whitening.proj, rtol=1e-3, atol=1e-3)
    assert torch.equal(back.whitening.mean, stem.whitening.mean)
    assert "postprocess" in graph.metadata and "lif" in graph.metadata["mapping"]
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="bad.nir: not a readable NIR file"):
        read_nir(bad)
    with pytest.raises(FileNotFoundError, match="missing.nir"):
        read_nir(tmp_path / "missing.nir")


@pytest.mark.data
@pytest.mark.parametrize("simulator", sorted(SIMULATORS))
def test_nir_file_runs_the_same_in_another_simulator(tmp_path, frames, simulator):
    place = tiny_place(patch=8, calib=frames)
    stem = extract_stem(place)
    graph = read_nir(write_nir(to_nir(stem), tmp_path / "stem.nir"))
    theirs, their_rates = SIMULATORS[simulator](graph, frames)
    ref = ReferenceStem(stem)
    ours = ref(frames)
    assert theirs.shape == ours.shape and 0.0 < float(ours.mean()) < 1.0
    assert float((theirs != ours).float().mean()) < 1e-3
    cos = (descriptor_from_spikes(theirs, stem.whitening)
           * descriptor_from_spikes(ours, stem.whitening)).sum(1)
    assert float(cos.min()) >= 0.99
    for name, rate in ref.last_rates.items():
        assert their_rates[name] == pytest.approx(rate, abs=1e-3)


def test_int8_and_iaf_variants(tmp_path):
    stem = extract_stem(tiny_place(patch=8))
    iaf = make_variant(stem, "iaf")
    assert [x.kind for x in iaf.layers if isinstance(x, Neuron)] == [IF, IF, THRESHOLD]
    assert torch.allclose(iaf.layers[0].weight, stem.layers[0].weight / stem.layers[1].tau)
    q = make_variant(stem, "int8-iaf")
    assert len(q.approximations) == 3
    for conv, fconv, nrn in zip(q.layers[0::2], iaf.layers[0::2], q.layers[1::2]):
        scale = min(discretization_scale(fconv.weight, 8), discretization_scale(fconv.bias, 8))
        w, b = conv.weight * scale, conv.bias * scale
        assert torch.allclose(w, w.round(), atol=1e-3) and float(w.abs().max()) <= 128
        assert torch.allclose(b, b.round(), atol=1e-3) and float(b.abs().max()) <= 128
        m = nrn.v_threshold * scale + 0.5                # threshold half a step below m
        assert m == pytest.approx(round(m), abs=1e-3)
    x = torch.randn(4, 1, *IMG) * 1.5
    graph = read_nir(write_nir(to_nir(q), tmp_path / "q.nir"))
    assert torch.equal(run_norse(graph, x)[0], ReferenceStem(q)(x))
    assert all(x.kind == LIF for x in make_variant(stem, "int8").layers
               if isinstance(x, Neuron) and x.kind != THRESHOLD)


def test_grouped_conv_becomes_an_equal_dense_conv():
    w, x = torch.randn(6, 2, 3, 3), torch.randn(2, 4, 5, 5)
    dense = ungroup(w, 2)
    assert dense.shape == (6, 4, 3, 3)
    assert torch.allclose(nn.functional.conv2d(x, w, groups=2, padding=1),
                          nn.functional.conv2d(x, dense, padding=1), atol=1e-5)


def test_hardware_counts_and_chip_fit():
    w = torch.ones(1, 1, 3, 3)
    stem = SpikingStem((Conv("c", w, torch.zeros(1), (1, 1), (1, 1)),
                        Neuron("n", LIF, 1.0, 2.0)), (1, 4, 4), 2)
    (lc,) = layer_counts(stem)
    assert (lc.neurons, lc.synapses, lc.max_fan_in, lc.int8_bytes) == (16, 100, 9, 10)
    assert (lc.speck_kernel_memory, lc.speck_neuron_memory) == (16, 16)
    rep = hardware_report(stem)
    assert rep["speck"]["memory_fits"] and rep["speck"]["cores_used"] == 1
    assert not rep["xylo"]["fits"] and rep["xylo"]["output_neurons"] == 16   # max 8 outputs
    small = SpikingStem(stem.layers, (1, 2, 2), 2)
    assert hardware_report(small)["xylo"]["fits"]
    big = SpikingStem((Conv("c", torch.ones(128, 1, 3, 3), torch.zeros(128), (1, 1), (1, 1)),
                       Neuron("n", LIF, 1.0, 2.0)), (1, 64, 64), 2)
    rep = hardware_report(big)
    assert not rep["speck"]["memory_fits"] and not rep["xylo"]["fits"]


def test_cli_export_nir_and_report(tmp_path, capsys):
    place = tiny_place(patch=8)
    weights = save_model(place.backbone, tmp_path / "tiny.safetensors",
                         metadata={"vpr": {"descriptor": "stem2", "input_norm": "image"}},
                         extra_tensors={k: v for k, v in place.whitening.to_tensors().items()})
    out = tmp_path / "tiny.nir"
    assert main(["export", "nir", str(weights), "--out", str(out)]) == 0
    _same_layers(extract_stem(place), stem_from_nir(read_nir(out)))
    assert main(["export", "nir", str(weights), "--out", str(out)]) == 2   # no silent overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "nir", str(weights), "--maxpool", "error",
                 "--out", str(tmp_path / "x.nir")]) == 2
    assert POOLED_LAYER in capsys.readouterr().err
    assert not (tmp_path / "x.nir").exists()
    rep = tmp_path / "rep.json"
    assert main(["export", "report", str(weights), "--no-measure", "--variant", "int8-iaf",
                 "--json", str(rep)]) == 0
    hw = json.loads(rep.read_text())["hardware"]
    assert [lc["kind"] for lc in hw["layers"]] == [IF, IF, THRESHOLD]
    assert "Speck" in capsys.readouterr().out
