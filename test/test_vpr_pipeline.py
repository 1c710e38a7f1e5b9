"""VPRPipeline end to end: map build, eval, replay of a bag agree; mismatch refused."""
import cv2
import numpy as np
import pytest
import torch

from vl2spike_ros.models import calibrate_bn, create_model, save_model
from vl2spike_ros.vpr.acceptance import DEFAULT_MATCH_MARGIN
from vl2spike_ros.vpr.descriptors import preprocess
from vl2spike_ros.vpr.placemap import MapMismatchError, index_path

N = 10


def _frames(seed: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, (N, 8, 16))
    base = np.stack([cv2.resize(b, (64, 32), interpolation=cv2.INTER_LINEAR) for b in base])
    jit = np.random.default_rng(seed).normal(0, noise, base.shape)
    return np.clip(base + jit, 0, 255).astype(np.uint8)


def _tiny_weights(path, seed=0, descriptor="pooled"):
    torch.manual_seed(seed)
    m = create_model("spikformer_vpr", embed_dim=16, T=1, descriptor_dim=16)
    calibrate_bn(m, [preprocess(_frames(seed, 5.0), (32, 64), 1)])
    return save_model(m.eval(), path, {"vpr": {"descriptor": descriptor}})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vl2spike_ros.io.bags import BagWriteOptions, write_image_bag

    tmp = tmp_path_factory.mktemp("vpr")
    w = _tiny_weights(tmp / "w.safetensors")
    db, q = tmp / "db", tmp / "q"
    db.mkdir()
    q.mkdir()
    for i, (a, b) in enumerate(zip(_frames(1, 2.0), _frames(2, 20.0))):
        cv2.imwrite(str(db / f"img{i}.png"), a)
        cv2.imwrite(str(q / f"img{i}.png"), b)
    # the bag carries the queries at 4x size in RGB: the pipeline must resize/grey them itself
    big = [cv2.cvtColor(cv2.resize(b, (256, 128), interpolation=cv2.INTER_NEAREST),
                        cv2.COLOR_GRAY2RGB) for b in _frames(2, 20.0)]
    write_image_bag(tmp / "qbag", big, BagWriteOptions(storage="mcap"))
    return tmp, w, db, q


def test_replay_matches_eval(setup):
    from vl2spike_ros.cli.cmd_eval import run_eval
    from vl2spike_ros.cli.cmd_map import build_map_from_source
    from vl2spike_ros.cli.cmd_replay import ReplayOptions, run_replay
    from vl2spike_ros.vpr.evaluation import correct_by_frames
    from vl2spike_ros.vpr.place import load_place_descriptor
    from vl2spike_ros.vpr.runner import model_method, rank
    from vl2spike_ros.data.sources import load_source

    tmp, w, db, q = setup
    info = build_map_from_source(str(db), str(tmp / "map"), weights=str(w))
    assert info["n_places"] == N
    rows, out = run_replay(ReplayOptions(str(tmp / "qbag"), str(tmp / "map"), weights=str(w),
                                         top_k=3, tolerance=0))
    m = model_method(load_place_descriptor(w))
    qi = load_source(q, size=(32, 64)).images
    # the bag's 4x RGB frames resized by the pipeline give the folder's 32x64 grey frames
    _, ids = rank(m, m.describe(qi), m.describe(load_source(db, size=(32, 64)).images), 3)
    assert [r["best_id"] for r in rows] == ids[:, 0].tolist()
    res = run_eval(str(db), str(q), weights=str(w), tolerance=0)
    assert out["metrics"]["recall"]["r1"] == pytest.approx(res["recall"]["r1"])
    expect = 100.0 * correct_by_frames(ids[:, :1], np.arange(N), 0).mean()
    assert res["recall"]["r1"] == pytest.approx(expect)
    assert all(r["latency_ms"] > 0 and r["energy_mj"] > 0 for r in rows)
    assert all(0.0 <= r["firing_rate"] <= 1.0 for r in rows)
    # acceptance: replay (the node's pipeline, streaming) and eval (batch) decide alike
    acc = out["metrics"]["acceptance"]
    assert acc["accepted"] == res["acceptance"]["accepted"] == sum(r["accepted"] for r in rows)
    assert acc["correct_accepted"] == res["acceptance"]["correct_accepted"]
    assert "margin" in res["acceptance"]["rule"] and out["margin"] == DEFAULT_MATCH_MARGIN


def test_pipeline_sequence_mode_equals_batch(setup):
    from vl2spike_ros.vpr.matching import sequence_scores
    from vl2spike_ros.vpr.pipeline import VPRPipeline
    from vl2spike_ros.data.sources import load_source

    tmp, w, db, q = setup
    from vl2spike_ros.cli.cmd_map import build_map_from_source
    build_map_from_source(str(db), str(tmp / "map_seq"), weights=str(w))
    pipe = VPRPipeline(w, tmp / "map_seq", top_k=2, seq_len=3, energy=False)
    qi = load_source(q).images
    got = [pipe.process(im).best_id for im in qi]
    d_db = pipe.place.describe_images(load_source(db).images)
    d_q = np.concatenate([pipe.describe(im) for im in qi])
    want = np.argsort(-sequence_scores(d_q @ d_db.T, 3), axis=1, kind="stable")[:, 0]
    assert got == want.tolist()


@pytest.mark.parametrize("seq_len", [1, 3, 5])
def test_pipeline_acceptance_equals_batch_and_survives_map_growth(setup, seq_len):
    """Acceptance is decided in the pipeline, frame by frame, exactly as accept_batch decides.

    A place added mid-run (mapping mode) is scored for the recent frames too: from then on the
    decisions equal those of a pipeline that had the full map from the start.
    """
    from vl2spike_ros.data.sources import load_source
    from vl2spike_ros.vpr.acceptance import accept_batch
    from vl2spike_ros.vpr.pipeline import MatchOptions, VPRPipeline, build_map

    tmp, w, db, q = setup
    opts = MatchOptions(margin=0.0, velocities=(0.5, 1.0, 2.0))
    full = VPRPipeline(w, None, top_k=2, seq_len=seq_len, energy=False, options=opts)
    db_imgs, qi = load_source(db).images, load_source(q).images
    full.set_map(build_map(full.place, db_imgs))
    res = [full.process(im) for im in qi]
    rows = np.concatenate([full.map.similarity(r.descriptor) for r in res])
    want, margin = accept_batch(rows, [r.best_id for r in res], [r.best_score for r in res],
                                full.rule, opts.velocities)
    assert [r.accepted for r in res] == want.tolist() and any(want)
    np.testing.assert_allclose([r.margin for r in res], margin, atol=1e-6)
    assert all(r.confidence is None for r in res)  # tiny weights: no calibration table
    grow = VPRPipeline(w, None, top_k=2, seq_len=seq_len, energy=False, options=opts)
    grow.set_map(build_map(grow.place, db_imgs[:-1]))
    first = [grow.process(im) for im in qi[:6]]
    grow.map.add(full.map.index.reconstruct_n(N - 1, 1))  # the missing place, as mapped
    later = [grow.process(im) for im in qi[6:]]
    assert len(first) == 6 and len(grow.map) == N
    assert [r.accepted for r in later] == want[6:].tolist()
    assert [r.best_id for r in later] == [r.best_id for r in res[6:]]


def test_pipeline_refuses_map_of_other_model(setup):
    from vl2spike_ros.cli.cmd_map import build_map_from_source
    from vl2spike_ros.vpr.pipeline import VPRPipeline

    tmp, w, db, _ = setup
    build_map_from_source(str(db), str(tmp / "map2"), weights=str(w))
    other = _tiny_weights(tmp / "other.safetensors", seed=3)
    with pytest.raises(MapMismatchError, match="weights_hash"):
        VPRPipeline(other, tmp / "map2")
    with pytest.raises(ValueError, match="image"):
        VPRPipeline(w, tmp / "map2").process(np.zeros((4, 4, 2), np.uint8))


def test_spatial_descriptor_mode(setup):
    from vl2spike_ros.cli.cmd_map import build_map_from_source
    from vl2spike_ros.vpr.pipeline import VPRPipeline
    from vl2spike_ros.vpr.place import load_place_descriptor
    from vl2spike_ros.data.sources import load_source

    tmp, w_pooled, db, q = setup
    w = _tiny_weights(tmp / "spatial.safetensors", descriptor="spatial")
    place = load_place_descriptor(w)
    model = place.backbone
    n_tok = model.config.num_tokens
    assert place.model_meta()["descriptor_dim"] == place.dim == n_tok * 16
    d = place.describe_images(load_source(db).images)
    assert d.shape == (N, n_tok * 16)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    # the descriptor is the per-token head output on the grid, flattened
    import torch
    from vl2spike_ros.vpr.descriptors import preprocess
    with torch.no_grad():
        tok = model.forward_features(preprocess(load_source(db).images[:2], (32, 64), 1))
        per_tok = model.desc_proj(model.desc_norm(tok.mean(0)))
    want = torch.nn.functional.normalize(per_tok.flatten(1), dim=-1).numpy()
    np.testing.assert_allclose(d[:2], want, atol=1e-5)
    build_map_from_source(str(db), str(tmp / "map_sp"), weights=str(w))
    pipe = VPRPipeline(w, tmp / "map_sp", top_k=3)
    r = pipe.process(load_source(q).images[0])
    assert r.ids.shape == (3,) and r.best_id == int(r.ids[0])
    # a pooled-mode map of the same architecture is refused (other weights file, other dim)
    build_map_from_source(str(db), str(tmp / "map_pooled"), weights=str(w_pooled))
    with pytest.raises(MapMismatchError):
        VPRPipeline(w, tmp / "map_pooled")


def test_cli_eval_map_replay_json(setup, tmp_path, capsys):
    import json

    from vl2spike_ros.cli import main

    tmp, w, db, q = setup
    out = tmp_path / "eval.json"
    assert main(["eval", "--db", str(db), "--queries", str(q), "--tolerance", "1",
                 "--json", str(out), "--weights", str(w)]) == 0
    res = json.loads(out.read_text())
    assert {"r1", "r5", "r10"} <= set(res["recall"])
    assert 0.0 <= res["recall"]["r1"] <= res["recall"]["r5"] <= res["recall"]["r10"] <= 100.0
    assert 0.0 <= res["pr_auc"] <= 1.0 and res["queries_per_s"] > 0
    assert {"accepted", "precision", "recall", "rule"} <= set(res["acceptance"])
    assert "accepted, precision" in capsys.readouterr().out
    assert main(["map", "build", str(db), "--out", str(tmp_path / "m"), "--weights", str(w)]) == 0
    index_path(tmp_path / "m").write_bytes(b"\x00" * 10)
    rc = main(["replay", str(tmp / "qbag"), "--map", str(tmp_path / "m"), "--weights", str(w),
               "--json", str(tmp_path / "r.json")])
    assert rc == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
