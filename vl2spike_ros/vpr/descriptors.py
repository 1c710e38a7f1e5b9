"""Descriptor building blocks: image preprocessing and the raw (unwhitened) descriptor modes.

:class:`vl2spike_ros.vpr.place.PlaceDescriptor` puts them together with a backbone and its
whitening; every consumer goes through it.

Preprocessing (shared by training, eval, replay and the ROS node): resize with
``cv2.INTER_AREA`` to the model's input (H, W), convert to grey or RGB as the model needs,
scale to [0, 1], then standardisation for illumination invariance: per image (``"image"``, zero
mean and unit std) or per ``p x p`` patch (``"patch<p>"``, e.g. ``"patch8"``: SeqSLAM-style local
contrast normalisation, robust to season and lighting changes). The normalisation a model was
trained with is part of its weights metadata (``metadata.vpr.input_norm``), read by
:func:`vl2spike_ros.vpr.place.load_place_descriptor`.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)


IMAGE_NORM = "image"


def _patch_of(norm: str) -> int:
    """0 for ``"image"``, p for ``"patch<p>"``; ValueError otherwise."""
    if norm == IMAGE_NORM:
        return 0
    if norm.startswith("patch") and norm[5:].isdigit() and int(norm[5:]) > 1:
        return int(norm[5:])
    raise ValueError(f"unknown input normalisation {norm!r} (expected 'image' or 'patch<p>', "
                     "e.g. 'patch8')")


def check_norm(norm: str, img_size: tuple[int, int]) -> str:
    """``norm`` if it is a known normalisation that fits ``img_size`` (H, W); ValueError if not."""
    p = _patch_of(norm)
    if p and (img_size[0] % p or img_size[1] % p):
        raise ValueError(f"input {img_size[0]}x{img_size[1]} is not divisible by the "
                         f"normalisation patch {p}")
    return norm


def normalise(x: np.ndarray, norm: str = IMAGE_NORM) -> np.ndarray:
    """Standardise float ``[C, h, w]`` in place per image or per ``p x p`` patch; returns it."""
    c, h, w = x.shape
    p = _patch_of(check_norm(norm, (h, w)))
    if p == 0:
        x -= x.mean()
        x /= x.std() + 1e-3
        return x
    b = x.reshape(c, h // p, p, w // p, p)
    b -= b.mean(axis=(2, 4), keepdims=True)
    b /= b.std(axis=(2, 4), keepdims=True) + 1e-2
    return x


def prepare_image(image: np.ndarray, img_size: tuple[int, int], in_chans: int,
                  norm: str = IMAGE_NORM) -> np.ndarray:
    """One ``uint8`` image ``[H, W]`` / ``[H, W, C]`` (RGB) -> float32 ``[C, h, w]``."""
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an image [H, W] or [H, W, 1|3|4], got shape {image.shape}")
    h, w = img_size
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if in_chans == 1:
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        x = image[None].astype(np.float32)
    else:
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        x = image.transpose(2, 0, 1).astype(np.float32)
    x *= 1.0 / 255.0
    return normalise(x, norm)


def preprocess(images: np.ndarray, img_size: tuple[int, int], in_chans: int,
               norm: str = IMAGE_NORM) -> torch.Tensor:
    """``uint8`` ``[N, H, W]`` or ``[N, H, W, C]`` -> float32 tensor ``[N, in_chans, h, w]``."""
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"expected images [N, H, W] or [N, H, W, C], got shape {images.shape}")
    _patch_of(norm)
    return torch.from_numpy(np.stack([prepare_image(im, img_size, in_chans, norm)
                                      for im in images]))


SPATIAL = "spatial"
POOLED = "pooled"
MAP = "map"  # CNN: the flattened last conv map (PlaceCNN.features), no learned projection
STEM = "stem"  # "stem<n>": Spikformer spike rates after the first n stem stages, flattened
DESCRIPTOR_MODES = (SPATIAL, POOLED, MAP, STEM + "<n>")


def check_mode(mode: str) -> str:
    """``mode`` if it is a known descriptor mode, else ValueError."""
    if mode in (SPATIAL, POOLED, MAP) or stem_stages(mode):
        return mode
    raise ValueError(f"unknown VPR descriptor mode {mode!r}; known: {', '.join(DESCRIPTOR_MODES)}")


def stem_stages(mode: str) -> int:
    """Return n of a ``"stem<n>"`` mode (n >= 1), else 0."""
    tail = mode[len(STEM):] if isinstance(mode, str) and mode.startswith(STEM) else ""
    return int(tail) if tail.isdigit() and int(tail) >= 1 else 0


def spatial_from_tokens(model, tokens: torch.Tensor) -> torch.Tensor:
    """Spikformer spike tokens ``[T, B, N, D]`` -> spatial place descriptor ``[B, N * d]``.

    Tokens are averaged over T (spike rates); each token goes through the model's own
    descriptor head (``desc_norm`` LayerNorm, which equalises token scale, then ``desc_proj``
    to d = ``config.descriptor_dim``); the grid is flattened and L2-normalised. Keeps the
    spatial layout that mean pooling over tokens would discard. (No per-token L2 norm: silent
    tokens are zero vectors and normalising them explodes the gradient.)
    """
    z = model.desc_proj(model.desc_norm(tokens.mean(0)))          # [B, N, d]
    return torch.nn.functional.normalize(z.float().flatten(1), dim=-1)


def raw_descriptor(backbone, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Map images ``[B, C, H, W]`` to L2-normalised descriptors ``[B, D]`` (no whitening).

    ``mode``: ``"spatial"`` (Spikformer tokens kept on their grid), ``"pooled"``
    (``backbone.descriptor``), ``"stem<n>"`` (Spikformer spike rates after n stem stages) or
    ``"map"`` (a CNN's conv map).
    """
    if mode == SPATIAL:
        return spatial_from_tokens(backbone, backbone.forward_features(x))
    if stem_stages(mode):   # spike rates over T, on the stem's (finer) grid
        rates = backbone.forward_stem(x, stem_stages(mode)).mean(0)
        return torch.nn.functional.normalize(rates.flatten(1).float(), dim=-1)
    if mode == MAP:
        return torch.nn.functional.normalize(backbone.features(x).flatten(1).float(), dim=-1)
    return torch.nn.functional.normalize(backbone.descriptor(x).float(), dim=-1)


def raw_descriptor_dim(backbone, mode: str) -> int:
    """Length of :func:`raw_descriptor`'s output for ``backbone`` in ``mode``."""
    cfg = backbone.config
    if mode == SPATIAL:
        return int(cfg.num_tokens * cfg.descriptor_dim)
    if stem_stages(mode):
        c, h, w = backbone.stem.prefix_shape(stem_stages(mode), tuple(cfg.img_size))
        return int(c * h * w)
    if mode == MAP:
        return int(backbone.map_dim)
    return int(cfg.descriptor_dim)
