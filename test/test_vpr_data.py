"""Datasets (folders, VPR-methods layout, Nordland), baselines, and training resume."""
import cv2
import numpy as np
import pytest
import torch

from vl2spike_ros.vpr.baselines import hog_descriptors, patch_normalise, sad_similarity
from vl2spike_ros.data.datasets import (list_images, load_image_set, load_nordland,
                                        load_nordland_frames, load_nordland_spread,
                                        nordland_split_range, parse_utm)


def test_natural_order_and_utm(tmp_path):
    for sub in ("database", "queries"):
        (tmp_path / sub).mkdir()
    for i, name in enumerate(["@500010.0@4100000.0@10@S@x.jpg", "@500000.5@4100002.0@10@S@y.jpg"]):
        cv2.imwrite(str(tmp_path / "database" / name), np.full((8, 8, 3), i * 50, np.uint8))
    for name in ("img10.png", "img2.png"):
        cv2.imwrite(str(tmp_path / "queries" / name), np.zeros((8, 8), np.uint8))
    assert [p.name for p in list_images(tmp_path / "queries")] == ["img2.png", "img10.png"]
    assert parse_utm("@500010.0@4100000.0@10@S@x.jpg") == (500010.0, 4100000.0)
    assert parse_utm("img2.png") is None
    db, q = (load_image_set(tmp_path / sub, size=(4, 4)) for sub in ("database", "queries"))
    assert db.images.shape == (2, 4, 4, 3) and db.utm.shape == (2, 2)
    assert q.utm is None and q.names == ["img2.png", "img10.png"]
    with pytest.raises(FileNotFoundError, match="database"):
        load_image_set(tmp_path / "queries" / "database")
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path)


def test_nordland_spread_and_frames(tmp_path):
    for season in ("summer", "winter"):
        (tmp_path / season).mkdir()
        for i in range(5):
            cv2.imwrite(str(tmp_path / season / f"images-{i:05d}.png"),
                        np.full((2, 3), i + (10 if season == "winter" else 0), np.uint8))
    spread = load_nordland_spread(tmp_path, 5)
    assert spread.shape == (5, 2, 3) and spread[:, 0, 0].tolist() == [0, 2, 4, 10, 14]
    assert load_nordland_frames(tmp_path, "winter", 1, 2, 2)[:, 0, 0].tolist() == [11, 13]
    with pytest.raises(ValueError, match="only 2 Nordland winter"):
        load_nordland_frames(tmp_path, "winter", 1, 3, 2)
    with pytest.raises(FileNotFoundError, match="spring"):
        load_nordland_frames(tmp_path, "spring")


def test_split_ranges():
    assert nordland_split_range(10, "train") == range(0, 6)
    assert nordland_split_range(10, "test") == range(6, 10)
    with pytest.raises(ValueError):
        nordland_split_range(10, "val")


def test_baselines_shapes_and_self_match():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (6, 32, 64), dtype=np.uint8)
    h = hog_descriptors(imgs)
    assert h.shape == (6, 7 * 15 * 36)
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1.0, rtol=1e-5)
    p = patch_normalise(imgs)
    s = sad_similarity(p, p)
    assert (np.argmax(s, axis=1) == np.arange(6)).all()
    assert (np.argmax(h @ h.T, axis=1) == np.arange(6)).all()


@pytest.mark.data
def test_nordland_hog_beats_chance(data_root):
    s, idx = load_nordland(data_root / "nordland", "summer", "test")
    w, _ = load_nordland(data_root / "nordland", "winter", "test")
    assert idx[0] == 2146 and s.shape[1:] == (32, 64)
    s, w = s[:100], w[:100]
    sim = hog_descriptors(s) @ hog_descriptors(w).T
    r1 = np.mean(np.abs(np.argmax(sim, axis=1) - np.arange(100)) <= 1)
    assert r1 > 0.15  # chance is ~3 %


def test_training_resumes_from_checkpoint(tmp_path):
    from vl2spike_ros.models import load_weights, save_model
    from vl2spike_ros.models.cnn import CNNConfig, PlaceCNN
    from vl2spike_ros.train.checkpoint import MODEL_FILE, read_state_json
    from vl2spike_ros.train.vpr_train import TrainConfig, train_descriptor

    torch.manual_seed(0)
    a = torch.randn(16, 1, 32, 64)
    b = a + 0.1 * torch.randn_like(a)
    cfg = TrainConfig(epochs=2, batch_size=8, exclude_radius=0)
    model = PlaceCNN(CNNConfig(widths=(4, 8), descriptor_dim=16))
    calls = []

    def val_fn(_m):  # "crash" during epoch 2, after epoch 1's checkpoint was written
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        train_descriptor(model, a, b, cfg, ckpt=tmp_path / "c.ckpt", val_fn=val_fn)
    assert read_state_json(tmp_path / "c.ckpt")["epoch"] == 1
    resumed = train_descriptor(model, a, b, cfg, ckpt=tmp_path / "c.ckpt")
    assert [h["epoch"] for h in resumed] == [1, 2]
    in_ckpt = load_weights(tmp_path / "c.ckpt" / MODEL_FILE).state_dict()  # same format as distill
    for k, v in model.state_dict().items():
        torch.testing.assert_close(in_ckpt[k], v)
    with pytest.raises(ValueError, match="other settings"):
        train_descriptor(model, a, b, TrainConfig(**{**cfg.__dict__, "epochs": 3}),
                         ckpt=tmp_path / "c.ckpt")
    with pytest.raises(ValueError, match="written for another model"):
        train_descriptor(PlaceCNN(CNNConfig(widths=(4, 4), descriptor_dim=16)), a, b, cfg,
                         ckpt=tmp_path / "c.ckpt")
    save_model(model, tmp_path / "m.safetensors")
    back = load_weights(tmp_path / "m.safetensors")
    x = torch.randn(2, 1, 32, 64)
    torch.testing.assert_close(back.descriptor(x), model.eval().descriptor(x))
