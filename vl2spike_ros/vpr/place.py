"""PlaceDescriptor: the one path from images to place descriptors.

backbone (Spikformer student or PlaceCNN) + descriptor mode (``pooled`` / ``spatial`` /
``stem<n>`` / ``map``) + input normalisation + optional learned whitening, as one ``nn.Module``:
``forward(x [B, C, H, W] float) -> [B, D]`` L2-normalised. The descriptor settings are read from
the weights metadata (``metadata.vpr``) in one place, :func:`load_place_descriptor`; map
building, eval, replay, the node, energy and speed benchmarks and whitening all use the module.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vl2spike_ros.models import (config_path_for, default_vpr_weights, kind_of,
                                 load_extra_tensors, load_weights, read_model_meta, weights_hash)
from vl2spike_ros.models.schema import CNN, KINDS, SPIKFORMER
from vl2spike_ros.vpr.descriptors import (IMAGE_NORM, MAP, POOLED, check_mode, check_norm,
                                          prepare_image, preprocess, raw_descriptor,
                                          raw_descriptor_dim)
from vl2spike_ros.vpr.whitening import Whitening

log = logging.getLogger(__name__)

__all__ = ["DescriptorSettings", "PlaceDescriptor", "load_place_descriptor", "settings_from_meta"]

FINGERPRINT_LEN = 16
DESCRIBE_BATCH = 128


@dataclass(frozen=True)
class DescriptorSettings:
    """How images become place descriptors for one backbone (``metadata.vpr`` of its weights).

    ``kind``: ``"spikformer"`` | ``"cnn"``; ``mode``: descriptor mode; ``input_norm``:
    ``"image"`` | ``"patch<p>"``; ``img_size`` (H, W) and ``in_chans``: the backbone's input.
    """

    kind: str
    mode: str = POOLED
    input_norm: str = IMAGE_NORM
    img_size: tuple[int, int] = (32, 64)
    in_chans: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", tuple(int(s) for s in self.img_size))
        if self.kind not in KINDS:
            raise ValueError(f"unknown backbone kind {self.kind!r}; known: {', '.join(KINDS)}")
        check_mode(self.mode)
        if not isinstance(self.input_norm, str):
            raise ValueError(f"input normalisation must be a string, got {self.input_norm!r}")
        check_norm(self.input_norm, self.img_size)
        if self.kind == CNN and self.mode not in (MAP, POOLED):
            raise ValueError(f"a CNN descriptor is 'map' or 'pooled', got {self.mode!r}")
        if self.kind == SPIKFORMER and self.mode == MAP:
            raise ValueError("'map' is a CNN descriptor; a Spikformer uses 'spatial', 'pooled' "
                             "or 'stem<n>'")

    @classmethod
    def for_backbone(cls, backbone: nn.Module, mode: str = POOLED,
                     input_norm: str = IMAGE_NORM) -> "DescriptorSettings":
        """Build the settings for ``backbone`` (kind and input size from its config)."""
        cfg = backbone.config
        return cls(kind_of(backbone), mode, input_norm, tuple(cfg.img_size), int(cfg.in_chans))


def settings_from_meta(meta: dict[str, Any], where: str) -> DescriptorSettings:
    """Read the descriptor settings from a weights sidecar (``models.read_model_meta`` layout).

    The one reader of ``metadata.vpr``. ``where`` names the file in the ``ValueError``.
    """
    vpr = meta["metadata"].get("vpr", {})
    if not isinstance(vpr, dict):
        raise ValueError(f"{where}: field metadata.vpr must be a JSON object")
    for key in ("descriptor", "input_norm"):
        if key in vpr and not isinstance(vpr[key], str):
            raise ValueError(f"{where}: field metadata.vpr.{key} must be a string, "
                             f"got {vpr[key]!r}")
    cfg = meta["config"]
    try:
        return DescriptorSettings(meta["kind"], vpr.get("descriptor", POOLED),
                                  vpr.get("input_norm", IMAGE_NORM), tuple(cfg["img_size"]),
                                  int(cfg["in_chans"]))
    except ValueError as exc:
        raise ValueError(f"{where}: field metadata.vpr: {exc}") from None


def _hash_tensor(h: "hashlib._Hash", name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


class PlaceDescriptor(nn.Module):
    """Images ``[B, C, H, W]`` float -> L2-normalised place descriptors ``[B, dim]``.

    ``backbone``: a Spikformer student or PlaceCNN (its parameters are this module's);
    ``settings``: :class:`DescriptorSettings`; ``whitening``: fitted
    :class:`~vl2spike_ros.vpr.whitening.Whitening` applied after the raw descriptor, or None;
    ``weights_hash``: hash of the weights file it was loaded from (None when built in memory).
    """

    def __init__(self, backbone: nn.Module, settings: DescriptorSettings,
                 whitening: Whitening | None = None, weights_hash: str | None = None):
        super().__init__()
        cfg = backbone.config
        if (settings.kind != kind_of(backbone) or settings.img_size != tuple(cfg.img_size)
                or settings.in_chans != int(cfg.in_chans)):
            raise ValueError(f"descriptor settings {settings} do not fit the backbone "
                             f"{type(backbone).__name__} {cfg.name!r}")
        self.backbone = backbone
        self.settings = settings
        self.raw_dim = raw_descriptor_dim(backbone, settings.mode)
        if whitening is not None and whitening.in_dim != self.raw_dim:
            raise ValueError(f"stored whitening expects {whitening.in_dim}-d descriptors, the "
                             f"model gives {self.raw_dim}-d")
        self.whitening = whitening
        self.weights_hash = weights_hash

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map preprocessed images ``[B, C, H, W]`` to ``[B, dim]`` (raw, then whitening)."""
        z = raw_descriptor(self.backbone, x, self.settings.mode)
        return self.whitening(z) if self.whitening is not None else z

    @property
    def dim(self) -> int:
        """Descriptor length (the whitening's output when there is one)."""
        return self.whitening.out_dim if self.whitening is not None else self.raw_dim

    @property
    def is_spiking(self) -> bool:
        """True for a Spikformer backbone (spikes to count), False for the CNN."""
        return self.settings.kind == SPIKFORMER

    def with_whitening(self, whitening: Whitening | None) -> "PlaceDescriptor":
        """Return the same backbone and settings with another (or no) whitening."""
        return PlaceDescriptor(self.backbone, self.settings, whitening, self.weights_hash)

    def with_mode(self, mode: str) -> "PlaceDescriptor":
        """Return the same backbone in another descriptor mode, without whitening.

        The whitening fitted the old mode's descriptors, so it is dropped.
        """
        settings = dataclasses.replace(self.settings, mode=mode)
        return PlaceDescriptor(self.backbone, settings, None, self.weights_hash)

    def settings_json(self) -> str:
        """Return the canonical JSON of the descriptor settings and the backbone config."""
        return json.dumps({"settings": dataclasses.asdict(self.settings),
                           "config": self.backbone.config.to_dict()},
                          sort_keys=True, separators=(",", ":"))

    @property
    def fingerprint(self) -> str:
        """Hash (sha256, first 16 hex) of the backbone tensors, settings and whitening.

        Covers :meth:`settings_json` too, so it changes whenever the descriptors can change
        (weights, mode, input norm, backbone config, whitening).
        """
        h = hashlib.sha256()
        for name, t in sorted(self.backbone.state_dict().items()):
            _hash_tensor(h, name, t)
        h.update(self.settings_json().encode())
        if self.whitening is not None:
            _hash_tensor(h, "whitening.mean", self.whitening.mean)
            _hash_tensor(h, "whitening.proj", self.whitening.proj)
        return h.hexdigest()[:FINGERPRINT_LEN]

    def model_meta(self) -> dict[str, Any]:
        """Describe this model as a PlaceMap records it.

        Keys ``variant, weights_hash, descriptor_dim, input_size [C, H, W], fingerprint``
        (hashes the weights: call once).
        """
        s = self.settings
        return {"variant": self.backbone.config.name, "weights_hash": self.weights_hash,
                "descriptor_dim": self.dim, "input_size": [s.in_chans, *s.img_size],
                "fingerprint": self.fingerprint}

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """Turn ``uint8 [N, H, W(, C)]`` into float ``[N, C, h, w]`` (resize, grey, norm)."""
        s = self.settings
        return preprocess(images, s.img_size, s.in_chans, s.input_norm)

    def frame_tensor(self, image: np.ndarray) -> torch.Tensor:
        """Turn one ``uint8 [H, W(, C)]`` frame into float ``[1, C, h, w]`` on the CPU."""
        s = self.settings
        return torch.from_numpy(prepare_image(image, s.img_size, s.in_chans, s.input_norm))[None]

    @torch.inference_mode()
    def describe_images(self, images: np.ndarray, batch_size: int = DESCRIBE_BATCH) -> np.ndarray:
        """Describe ``uint8 [N, H, W(, C)]`` images: float32 ``[N, dim]`` (eval mode)."""
        self.eval()
        device = next(self.backbone.parameters()).device
        out = [self(self.preprocess(images[s:s + batch_size]).to(device)).cpu().numpy()
               for s in range(0, len(images), batch_size)]
        if not out:
            raise ValueError("no images to describe")
        return np.concatenate(out).astype(np.float32, copy=False)


def load_place_descriptor(weights: str | Path | None = None,
                          device: str | torch.device = "cpu") -> PlaceDescriptor:
    """Load the place descriptor of a weights file (Spikformer or CNN safetensors + JSON).

    In eval mode on ``device``; ``weights=None`` -> the packaged default VPR weights.
    """
    path = Path(weights) if weights else default_vpr_weights()
    if not path.is_file():
        raise FileNotFoundError(f"VPR weights {path} not found"
                                + ("" if weights else " (build them: vl2spike vpr train)"))
    settings = settings_from_meta(read_model_meta(path), str(config_path_for(path)))
    backbone = load_weights(path)
    try:
        whitening = Whitening.from_tensors(load_extra_tensors(path))
        place = PlaceDescriptor(backbone, settings, whitening, weights_hash(path))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return place.to(device).eval()
