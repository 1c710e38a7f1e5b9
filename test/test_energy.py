"""Energy accounting: op_counter rules, student/teacher reports, the ``vl2spike energy`` CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

from vl2spike_ros.energy import (E_AC_PJ, E_MAC_PJ, energy_mj, spike_count_rules, student_energy,
                                 teacher_energy)
from vl2spike_ros.models import calibrate_bn, create_model


def _calibrated_vpr(seed: int = 0):
    torch.manual_seed(seed)
    m = create_model("spikformer_vpr")
    g = torch.Generator().manual_seed(seed)
    calibrate_bn(m, [torch.randn(8, 1, 32, 64, generator=g) for _ in range(2)])
    return m.eval()


def _images(b: int = 3, seed: int = 7) -> torch.Tensor:
    return torch.randn(b, 1, 32, 64, generator=torch.Generator().manual_seed(seed))


def test_student_report_keys_and_consistency():
    m = _calibrated_vpr()
    r = student_energy(m, _images())
    for k in ("energy_mj", "sops", "macs_first_layer", "firing_rate", "per_layer_firing_rate"):
        assert k in r
    assert set(r["per_layer_firing_rate"]) == {n for n, _ in m.lif_nodes()}
    assert all(0.0 <= v <= 1.0 for v in r["per_layer_firing_rate"].values())
    assert 0.0 < r["firing_rate"] < 1.0 and r["sops"] > 0
    assert math.isclose(r["energy_mj"], (E_MAC_PJ * r["macs"] + E_AC_PJ * r["sops"]) * 1e-9,
                        rel_tol=1e-9)
    assert E_MAC_PJ == pytest.approx(4.6) and E_AC_PJ == pytest.approx(0.9)
    assert m.training is False


def test_first_layer_macs_match_analytic_count():
    m = _calibrated_vpr()
    conv = m.stem.stages[0].conv_bn.block[0]
    h, w = m.config.img_size
    # 3x3, stride 1, padding 1: one MAC per output position, out channel and kernel tap
    analytic = h * w * conv.out_channels * conv.in_channels * 9
    r = student_energy(m, _images(2))
    assert r["macs_first_layer"] == analytic
    # the rest of the dense work is only the descriptor projection on the pooled feature
    assert r["macs_other"] == m.desc_proj.in_features * m.desc_proj.out_features


def test_energy_rises_with_firing_rate():
    m = _calibrated_vpr()
    x = _images()
    low = student_energy(m, x)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.bias += 0.5  # every layer pushed towards threshold
    high = student_energy(m, x)
    assert high["firing_rate"] > low["firing_rate"]
    assert high["sops"] > low["sops"] and high["energy_mj"] > low["energy_mj"]
    assert high["macs_first_layer"] == low["macs_first_layer"]


def test_sops_of_spike_counts_are_count_times_fanout():
    syn_rules, _ = spike_count_rules()
    lin = nn.Linear(5, 4, bias=False)
    conv = nn.Conv1d(5, 6, kernel_size=1, bias=False)
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 3, (7, 5), generator=g).float()  # residual sums: 0, 1, 2
    counts[0, 0] = 2.0
    binary = (counts > 0).float()
    for x, expect in ((counts, counts.sum() * 4), (binary, binary.sum() * 4)):
        c = SynOpCounter(extra_rules=syn_rules)
        with torch.no_grad(), DispatchCounterMode([c]):
            lin(x)
        assert c.get_total() == int(expect)
    c = SynOpCounter(extra_rules=syn_rules)
    with torch.no_grad(), DispatchCounterMode([c]):
        conv(counts.T.unsqueeze(0))  # [1, 5 channels, 7 positions]
    assert c.get_total() == int(counts.sum() * 6)
    # real-valued input is not a synaptic operation
    c = SynOpCounter(extra_rules=syn_rules)
    with torch.no_grad(), DispatchCounterMode([c]):
        lin(torch.randn(7, 5, generator=g))
    assert c.get_total() == 0


def test_teacher_macs_include_attention():
    d, heads, ff, L, b = 16, 2, 32, 5, 3
    layer = nn.TransformerEncoderLayer(d, heads, ff, batch_first=True, dropout=0.0).eval()
    r = teacher_energy(layer, torch.randn(b, L, d))
    analytic = 3 * L * d * d + 2 * L * L * d + L * d * d + 2 * L * d * ff
    assert r["macs"] == analytic
    assert r["energy_mj"] == pytest.approx(energy_mj(analytic, 0))
    assert torch.backends.mha.get_fastpath_enabled()  # restored afterwards


def test_resolve_student_rejects_wrong_variant(tmp_path):
    from vl2spike_ros.bench.energy_report import resolve_student
    from vl2spike_ros.models import save_model

    path = save_model(create_model("spikformer_vpr"), tmp_path / "w.safetensors")
    model, info = resolve_student(None, str(path), None)
    assert info["trained"] and info["weights_hash"] and model.config.name == "spikformer_vpr"
    with pytest.raises(ValueError, match="not 'spikformer_cifar'"):
        resolve_student("spikformer_cifar", str(path), None)
    with pytest.raises(FileNotFoundError):
        resolve_student(None, str(tmp_path / "missing.safetensors"), None)


@pytest.mark.data
@pytest.mark.slow
def test_energy_cli_on_real_frames(tmp_path, data_root):
    from vl2spike_ros.cli import main

    out = tmp_path / "energy.json"
    rc = main(["energy", "--json", str(out), "--num-images", "2", "--no-proxy",
               "--data-root", str(data_root), "--variant", "spikformer_vpr",
               "--weights", str(_saved_vpr(tmp_path))])
    assert rc == 0
    r = json.loads(out.read_text())
    for k in ("energy_mj", "sops", "firing_rate"):
        assert r["student"][k] > 0
    assert r["teacher"]["macs"] > 4e9  # ViT-B/32 at 224: ~4.4 GMAC
    assert r["ratio"] == pytest.approx(r["student"]["energy_mj"] / r["teacher"]["energy_mj"])
    assert r["weights"].endswith("w.safetensors") and r["data"]["num_images"] == 2
    assert (tmp_path / "energy_firing_rates.png").stat().st_size > 1000


def _saved_vpr(tmp_path):
    from vl2spike_ros.models import save_model

    return save_model(_calibrated_vpr(), tmp_path / "w.safetensors")


def test_speed_bench_measures_every_mode():
    """Smoke test of ``vl2spike bench speed``'s measurement (no timing assertions)."""
    from vl2spike_ros.bench.speed import measure_model

    m = create_model("spikformer_vpr").eval()
    x = _images(4)
    r = measure_model(m, x[:1], x, seconds=0.01, compile_=False, heavy=True)
    assert set(r["modes"]) == {"eager", "channels_last"}
    assert r["mode"] in r["modes"] and r["fps_batch1"] > 0 and r["fps_batch4"] > 0
    assert r["latency_ms_p95"] >= r["latency_ms_p50"] > 0


def test_energy_cli_missing_weights_is_one_line_error(tmp_path, capsys):
    from vl2spike_ros.cli import main

    rc = main(["energy", "--weights", str(tmp_path / "nope.safetensors"), "--no-proxy"])
    assert rc == 2
    assert "not found" in capsys.readouterr().err


def test_binary_spikes_times_count_matrix_uses_spikingjelly_rule():
    # Spiking self-attention: (k^T v) is an integer count matrix, q the binary spike train;
    # each q spike accumulates one column of the count matrix (nnz(q) x rows).
    syn_rules, _ = spike_count_rules()
    g = torch.Generator().manual_seed(1)
    kv = torch.randint(0, 4, (2, 3, 3), generator=g).float()
    kv[0, 0, 0] = 3.0
    q = (torch.rand(2, 3, 5, generator=g) < 0.4).float()
    c = SynOpCounter(extra_rules=syn_rules)
    with torch.no_grad(), DispatchCounterMode([c]):
        torch.bmm(kv, q)
    assert c.get_total() == int(q.sum()) * 3
