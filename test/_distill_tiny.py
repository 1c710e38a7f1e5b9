"""Helpers for the distillation tests.

A tiny randomly initialised open_clip model saved as a local checkpoint, tiny image folders
and tiny distill configs.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

TINY_CLIP = "vl2spike-tiny-clip"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_clip_checkpoint(tmp: Path, seed: int = 0) -> Path:
    """Register the tiny config with open_clip and save a random model's state_dict to a file."""
    import open_clip
    import torch

    cfg_dir = tmp / "oc_cfg"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    path = tmp / "tiny_clip.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def tiny_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 8,
                      seed: int = 0) -> Path:
    """``root/<class>/<i>.png`` random 32x32 images with a class-dependent mean colour."""
    rng = np.random.default_rng(seed)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 120, (32, 32, 3)).astype(np.uint8) + np.uint8(100 * ci)
            cv2.imwrite(str(root / c / f"{i}.png"), img)
    return root


def tiny_distill_dict(folder: Path, ckpt: Path, **loss) -> dict:
    """Return a distill config dict for a few CPU steps on ``folder`` (tiny CLIP teacher)."""
    return {
        "model": "spikformer_cifar",
        "model_overrides": {"embed_dim": 32, "num_heads": 2, "depth": 1, "T": 2},
        "device": "cpu", "threads": 1, "progress": False, "tensorboard": False, "seed": 0,
        "data": {"source": "folder", "path": str(folder), "val_fraction": 0.25},
        "teacher": {"kind": "openclip", "name": TINY_CLIP, "pretrained": str(ckpt),
                    "model_config": str(ckpt.parent / "oc_cfg" / f"{TINY_CLIP}.json"),
                    "templates": ["a photo of a {}.", "a picture of a {}."]},
        "loss": {"kd": {"enabled": True}, "svs_align": {"enabled": True},
                 "svs_temporal": {"enabled": True, "warmup_epochs": 0.0}, "spl": {"enabled": True},
                 **loss},
        "optim": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "warmup_epochs": 0.0},
    }
