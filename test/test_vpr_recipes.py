"""Unit tests: VPR recipes (YAML), route data sources, teacher grids, label-free whitening."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _route_data import (TINY_VIT_JSON, line_poses, tiny_vit_checkpoint, traversal, write_bag,
                         write_folder)
from vl2spike_ros.data.routes import (BAGS, FOLDERS, UNLABELED, RouteOptions, load_route,
                                      resolve_kind)
from vl2spike_ros.train import recipes as R
from vl2spike_ros.train.metrics_log import MetricsLog
from vl2spike_ros.train.vpr_all import factory_recipes, main_train, seed_variant, student_recipe
from vl2spike_ros.train.vpr_config import VPR_CONFIG_DIR, load_recipe
from vl2spike_ros.train.vpr_train import info_nce
from vl2spike_ros.train.whiten import fit_pca_whitening

SIZE = (32, 64)


# ----------------------------------------------------------------------------- recipes
def test_factory_yaml_recipes_are_exactly_the_shipped_settings():
    w = Path("weights")
    teacher, direct = w / "vpr_teacher_cnn.safetensors", w / "vpr_spikformer_direct.safetensors"
    rec = factory_recipes(w, teacher)
    assert rec["teacher"].optim == R.TEACHER_CFG
    assert (rec["teacher"].model.kind, rec["teacher"].model.descriptor) == ("cnn", "map")
    assert rec["direct"].optim == R.DIRECT_CFG
    assert rec["control"].optim == R.DISTILL_CFG and rec["distilled"].optim == R.DISTILL_CFG
    assert student_recipe(rec["direct"]) == R.StudentRecipe()
    assert student_recipe(rec["control"]) == R.StudentRecipe(
        init_from=direct, name="spikformer_continued", token_dim=R.CONTINUE_TOKEN_DIM)
    assert student_recipe(rec["distilled"]) == R.StudentRecipe(
        teacher_path=teacher, init_from=direct, svs=R.distill_svs(),
        token_dim=R.CONTINUE_TOKEN_DIM)
    for k in ("direct", "control", "distilled"):
        assert rec[k].model.descriptor == R.STUDENT_DESCRIPTOR
        assert (rec[k].data.train_frac, rec[k].data.val_frac) == (
            R.NORDLAND_TRAIN_FRACTION, R.VAL_FRACTION)


def test_another_seed_of_an_arm_gets_its_own_seed_checkpoint_and_file(tmp_path):
    rec = factory_recipes(tmp_path, tmp_path / "teacher.safetensors")["control"]
    out = tmp_path / "vpr_spikformer_direct_continued.safetensors"
    assert seed_variant(rec, out, None) == (rec, out)
    assert seed_variant(rec, out, rec.optim.seed) == (rec, out)
    r2, out2 = seed_variant(rec, out, 2)
    assert r2.optim.seed == 2 and r2.model.name == "spikformer_continued_seed2"
    assert out2.name == "vpr_spikformer_direct_continued_seed2.safetensors"
    assert student_recipe(r2).name == "spikformer_continued_seed2"   # its own checkpoint
    assert {k: v for k, v in vars(r2.optim).items() if k != "seed"} == \
        {k: v for k, v in vars(rec.optim).items() if k != "seed"}
    with pytest.raises(ValueError, match="control or distilled"):
        main_train(tmp_path, tmp_path, None, None, str(tmp_path), "direct", seed=2)


def test_every_shipped_recipe_parses():
    names = sorted(p.stem for p in VPR_CONFIG_DIR.glob("*.yaml"))
    assert {"teacher", "direct", "control", "distilled", "smoke_label_free"} <= set(names)
    for n in names:
        load_recipe(VPR_CONFIG_DIR / f"{n}.yaml")


def test_overrides_relative_paths_and_unknown_keys(tmp_path):
    r = load_recipe(VPR_CONFIG_DIR / "smoke_label_free.yaml",
                    {"optim.epochs": 3, "loss.tok": 0.5, "data.every": 2})
    assert (r.optim.epochs, r.loss.tok, r.data.every) == (3, 0.5, 2)
    assert Path(r.teacher.model_config) == (VPR_CONFIG_DIR / "tiny_vit.json").resolve()
    with pytest.raises(ValueError, match="optim.epochz"):
        load_recipe(VPR_CONFIG_DIR / "smoke_label_free.yaml", {"optim.epochz": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("whitening: {kind: zca}\n")
    with pytest.raises(ValueError, match="whitening.kind"):
        load_recipe(bad)
    with pytest.raises(FileNotFoundError):
        load_recipe(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------- data sources
def test_aligned_folders_give_index_positives_and_validation(tmp_path):
    a = write_folder(tmp_path / "a", traversal(20))
    b = write_folder(tmp_path / "b", traversal(20, variant=1))
    assert resolve_kind([a, b]) == FOLDERS and resolve_kind([a]) == UNLABELED
    route = load_route([a, b], SIZE, RouteOptions(val_frac=0.2), pos_tolerance=1)
    spread = load_route([a], SIZE, RouteOptions(max_frames=10))
    assert list(spread.traversals[0].kept) == [0, 2, 4, 6, 8, 11, 13, 15, 17, 19]
    assert route.images.shape[:3] == (32, 32, 64) and route.info["val_places"] == 4
    assert route.val[0].shape[0] == 4
    assert list(route.positives[5]) == [21, 20, 22]        # frame 5 of a: b's 5, then 4 / 6
    ia, ib = route.pairs()
    assert list(ib - ia) == [16] * 16


def test_bags_with_poses_match_by_radius_across_bags(tmp_path):
    b1 = write_bag(tmp_path / "b1", traversal(12), line_poses(12, 2.0))
    b2 = write_bag(tmp_path / "b2", traversal(12, variant=1), line_poses(12, 2.0, offset=0.5),
                   pose_type="pose_stamped", storage="sqlite3", compressed=True)
    assert resolve_kind([b1, b2]) == BAGS
    route = load_route([b1, b2], SIZE, RouteOptions(radius_m=1.0, margin_m=5.0))
    assert route.coords.shape == (24, 2) and route.margin == 5.0
    assert list(route.positives[3]) == [15]                # x = 6.0 vs b2's 6.5
    assert all(route.traversal[j] != route.traversal[i]
               for i, p in enumerate(route.positives) for j in p)


def test_navsatfix_bags_share_one_local_frame(tmp_path):
    fixes = [(48.0 + 1e-5 * i, 11.0, 500.0) for i in range(10)]      # ~1.1 m apart northwards
    later = [(lat + 3e-5, lon, alt) for lat, lon, alt in fixes]      # starts ~3.3 m further
    b1 = write_bag(tmp_path / "g1", traversal(10), fixes, pose_type="navsatfix")
    b2 = write_bag(tmp_path / "g2", traversal(10, variant=1), later, pose_type="navsatfix")
    route = load_route([b1, b2], SIZE, RouteOptions(radius_m=0.5, margin_m=3.0, min_frames=4))
    assert abs(route.coords[10, 1] - route.coords[3, 1]) < 0.2       # one frame, not two
    assert list(route.positives[3]) == [10]


def test_route_errors_are_one_line(tmp_path):
    few = write_folder(tmp_path / "few", traversal(3))
    with pytest.raises(ValueError, match="3 frames; training needs at least 8"):
        load_route([few], SIZE)
    a = write_folder(tmp_path / "a", traversal(10))
    b = write_folder(tmp_path / "b", traversal(12))
    with pytest.raises(ValueError, match="equal frame counts"):
        load_route([a, b], SIZE)
    (a / "0005.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="0005.png"):
        load_route([a], SIZE)
    nopose1 = write_bag(tmp_path / "n1", traversal(8))
    nopose2 = write_bag(tmp_path / "n2", traversal(8))
    with pytest.raises(ValueError, match="no pose topics"):
        load_route([nopose1, nopose2], SIZE)
    with pytest.raises(ValueError, match="/nope"):
        load_route([nopose1], SIZE, RouteOptions(topic="/nope"))
    with pytest.raises(FileNotFoundError):
        load_route([tmp_path / "missing"], SIZE)
    far = write_bag(tmp_path / "f", traversal(8), line_poses(8, 1.0, offset=1000.0))
    near = write_bag(tmp_path / "g", traversal(8), line_poses(8, 1.0))
    with pytest.raises(ValueError, match="radius_m"):
        load_route([far, near], SIZE)


# ----------------------------------------------------------------------------- losses, whitening
def test_info_nce_with_positions_masks_pairs_within_the_margin():
    z = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    far = torch.tensor([[0.0, 0], [100, 0], [200, 0], [300, 0]], dtype=torch.float64)
    near = torch.tensor([[0.0, 0], [1, 0], [200, 0], [300, 0]], dtype=torch.float64)
    a, b = info_nce(z, z, far, far, 0.1, 5.0), info_nce(z, z, near, near, 0.1, 5.0)
    assert float(b) < float(a)       # the masked pair is no longer a negative
    idx = torch.arange(4)
    assert torch.allclose(info_nce(z, z, idx, idx, 0.1, 0), info_nce(z, z, far, far, 0.1, 5.0))


def test_pca_whitening_whitens_the_training_frames():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 20)) * np.linspace(5, 0.1, 20)
    w = fit_pca_whitening(x.astype(np.float32), dim=8, shrink=1e-6)
    y = ((torch.from_numpy(x).float() - w.mean) @ w.proj).numpy()
    assert w.out_dim == 8
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(8), atol=1e-3)
    assert fit_pca_whitening(x[:5].astype(np.float32), dim=64).out_dim == 4   # N - 1
    with pytest.raises(ValueError):
        fit_pca_whitening(x[:2].astype(np.float32))


def test_metrics_log_keeps_its_header_across_rows(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    log.log(1, {"a": 1.0, "b": 2.0})
    log.log(2, {"b": 3.0, "c": 4.0})
    log.close()
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert rows == ["step,a,b", "1,1,2", "2,,3"]


# ----------------------------------------------------------------------------- teachers
def test_openclip_teacher_from_a_local_checkpoint_gives_a_patch_grid(tmp_path):
    from vl2spike_ros.train.teachers import build_teacher

    ckpt = tiny_vit_checkpoint(tmp_path)
    t = build_teacher("openclip", "", str(ckpt), model_config=str(TINY_VIT_JSON))
    x = torch.rand(2, 3, 40, 80)
    g, grid = t.encode_image_and_grid(x)
    assert g.shape == (2, 32) and grid.shape == (2, 32, 4, 4)
    torch.testing.assert_close(g, t.encode_image(x))          # the same global feature
    torch.testing.assert_close(torch.linalg.norm(g, dim=-1), torch.ones(2))
    with pytest.raises(FileNotFoundError):
        build_teacher("openclip", "", str(tmp_path / "missing.pt"),
                      model_config=str(TINY_VIT_JSON))


def test_place_cnn_teacher_gives_its_descriptor_and_conv_map(tmp_path):
    from vl2spike_ros.models import save_model
    from vl2spike_ros.models.cnn import PlaceCNN
    from vl2spike_ros.train.teachers import build_teacher

    path = save_model(PlaceCNN().eval(), tmp_path / "cnn.safetensors", {"vpr": {}})
    t = build_teacher("place_cnn", path=str(path))
    g, grid = t.encode_image_and_grid(torch.rand(3, 3, 56, 99))
    assert g.shape == (3, 256) and grid.shape == (3, 64, 4, 8)
    with pytest.raises(ValueError, match="image-only"):
        t.encode_text(["a road"])
    with pytest.raises(ValueError, match="teacher.path"):
        build_teacher("place_cnn")
