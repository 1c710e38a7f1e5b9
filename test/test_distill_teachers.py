"""Teachers of the distillation.

OpenCLIP through open_clip's real loading code (tiny random config), the proxy teacher's
pretrained text side and tower save/load, clear errors for missing weights.
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from _distill_tiny import TINY_CLIP, tiny_clip_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def clip_ckpt(tmp_path_factory):
    return tiny_clip_checkpoint(tmp_path_factory.mktemp("clip"))


def test_openclip_teacher_loads_local_checkpoint(clip_ckpt):
    import open_clip

    from vl2spike_ros.train.teachers import OpenCLIPTeacher

    teacher = OpenCLIPTeacher(TINY_CLIP, pretrained=str(clip_ckpt))
    img = torch.rand(3, 3, 40, 40)  # resized to the model's 32x32 by .preprocess
    fi = teacher.encode_image(img)
    ft = teacher.encode_text(["a photo of a cat.", "a photo of a dog."])
    assert fi.shape == (3, 32) and ft.shape == (2, 32)
    assert torch.allclose(fi.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(ft.norm(dim=-1), torch.ones(2), atol=1e-5)
    # same weights as the saved file, read by open_clip itself
    ref = open_clip.create_model(TINY_CLIP, pretrained=str(clip_ckpt)).eval()
    with torch.no_grad():
        want = torch.nn.functional.normalize(ref.encode_image(teacher.preprocess(img)), dim=-1)
    assert torch.allclose(fi, want, atol=1e-5)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training  # stays in eval mode
    emb = teacher.class_embeddings(["cat", "dog", "ship"], ["a {}.", "a photo of a {}."])
    assert emb.shape == (3, 32)


def test_openclip_missing_checkpoint_fails_fast(tmp_path):
    from vl2spike_ros.train.teachers import OpenCLIPTeacher

    t0 = time.time()
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        OpenCLIPTeacher("ViT-B-32", pretrained=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="unknown open_clip model"):
        OpenCLIPTeacher("not-a-model")
    with pytest.raises((ValueError, RuntimeError)):
        OpenCLIPTeacher("ViT-B-32", pretrained="no_such_tag_xyz")
    assert time.time() - t0 < 60


def test_openclip_offline_hub_error(monkeypatch):
    from vl2spike_ros.train.teachers import OpenCLIPTeacher

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError):
        OpenCLIPTeacher("RN50", pretrained="openai")  # not cached anywhere, hub offline


def test_proxy_teacher_text_side_and_tower_roundtrip(tmp_path):
    from vl2spike_ros.train.teachers import (
        ProxyImageTower, ProxyTeacher, load_proxy_tower, save_proxy_tower,
    )

    teacher = ProxyTeacher(ProxyImageTower(widths=(8, 16), embed_dim=384))
    txt = teacher.encode_text(["a photo of a cat.", "a photo of a kitten.", "a photo of a truck."])
    assert txt.shape == (3, 384)
    sim = txt @ txt.T
    assert sim[0, 1] > sim[0, 2]  # a real pretrained sentence encoder, not random
    img = teacher.encode_image(torch.rand(2, 3, 32, 32))
    assert img.shape == (2, 384)
    path = tmp_path / "proxy.safetensors"
    save_proxy_tower(teacher.tower, path, {"logit_scale": 20.0})
    tower, meta = load_proxy_tower(path)
    assert meta["widths"] == [8, 16] and len(meta["sha256"]) == 64
    loaded = ProxyTeacher.load(path)
    assert loaded.logit_scale == 20.0 and loaded.teacher_id.startswith("proxy:")
    assert torch.allclose(loaded.encode_image(torch.ones(1, 3, 32, 32)),
                          teacher.encode_image(torch.ones(1, 3, 32, 32)), atol=1e-5)


def test_proxy_missing_weights(tmp_path):
    from vl2spike_ros.train.teachers import build_teacher, load_proxy_tower

    with pytest.raises(FileNotFoundError, match="vl2spike teacher train"):
        load_proxy_tower(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="unknown teacher kind"):
        build_teacher("bogus")


def test_packaged_proxy_teacher_metadata():
    from vl2spike_ros.train.teachers import PROXY_ASSET, load_proxy_tower

    if not PROXY_ASSET.is_file():
        pytest.skip("packaged proxy teacher not built (vl2spike teacher train)")
    _, meta = load_proxy_tower(PROXY_ASSET)
    for key in ("zero_shot_top1_test", "command", "train_minutes", "templates"):
        assert key in meta
