"""Frozen Spikformer student configs and the registry of named variants."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["SpikformerConfig", "register_variant", "list_models", "get_config"]


@dataclass(frozen=True)
class SpikformerConfig:
    """Architecture of one Spikformer student.

    ``img_size`` is ``(H, W)``; tokens form a ``(H/patch, W/patch)`` grid. ``patch_size`` must be
    a power of two: the spiking conv stem halves the resolution ``log2(patch_size)`` times.
    """

    name: str
    img_size: tuple[int, int]
    in_chans: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    T: int
    num_classes: int
    descriptor_dim: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", tuple(int(s) for s in self.img_size))
        h, w = self.img_size
        p = self.patch_size
        for field in ("in_chans", "patch_size", "embed_dim", "depth", "num_heads", "T",
                      "num_classes", "descriptor_dim"):
            if int(getattr(self, field)) <= 0:
                raise ValueError(f"{self.name}: {field} must be positive, "
                                 f"got {getattr(self, field)}")
        if len(self.img_size) != 2 or h <= 0 or w <= 0:
            raise ValueError(f"{self.name}: img_size must be (H, W) > 0, got {self.img_size}")
        if p & (p - 1) or p > 16:
            raise ValueError(f"{self.name}: patch_size must be 1, 2, 4, 8 or 16, got {p}")
        if h % p or w % p:
            raise ValueError(f"{self.name}: img_size {self.img_size} not divisible by patch {p}")
        if self.embed_dim % self.num_heads or self.embed_dim % 8:
            raise ValueError(
                f"{self.name}: embed_dim {self.embed_dim} must be divisible by num_heads "
                f"{self.num_heads} and by 8")
        if self.mlp_ratio <= 0:
            raise ValueError(f"{self.name}: mlp_ratio must be positive")

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def num_tokens(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    @property
    def num_pool_stages(self) -> int:
        return int(math.log2(self.patch_size))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["img_size"] = list(self.img_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpikformerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown SpikformerConfig fields: {sorted(unknown)}")
        return cls(**{k: (tuple(v) if k == "img_size" else v) for k, v in d.items()})


_REGISTRY: dict[str, SpikformerConfig] = {}


def register_variant(cfg: SpikformerConfig) -> SpikformerConfig:
    """Add a named variant to the registry (name must be new)."""
    if cfg.name in _REGISTRY:
        raise ValueError(f"model variant {cfg.name!r} already registered")
    _REGISTRY[cfg.name] = cfg
    return cfg


def list_models() -> list[str]:
    """Names of the registered student variants."""
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> SpikformerConfig:
    """Return the registered config ``name`` with fields replaced by ``overrides``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model variant {name!r}; known: {', '.join(list_models())}")
    fields = {f.name for f in dataclasses.fields(SpikformerConfig)}
    bad = set(overrides) - fields
    if bad:
        raise ValueError(f"unknown config override(s) {sorted(bad)}; fields: {sorted(fields)}")
    return dataclasses.replace(_REGISTRY[name], **overrides)


# CIFAR-10 size: trains in a few CPU epochs (64 tokens of 8x8).
register_variant(SpikformerConfig(
    name="spikformer_cifar", img_size=(32, 32), in_chans=3, patch_size=4, embed_dim=128,
    depth=2, num_heads=4, mlp_ratio=2.0, T=4, num_classes=10, descriptor_dim=128))
# Nordland VPR frames: 32 high x 64 wide grey; 4x8 = 32 tokens, small and fast on CPU
# (patch 4 = 128 tokens was ~4x slower batched because the stem convs run at full resolution).
register_variant(SpikformerConfig(
    name="spikformer_vpr", img_size=(32, 64), in_chans=1, patch_size=8, embed_dim=64,
    depth=1, num_heads=4, mlp_ratio=2.0, T=2, num_classes=10, descriptor_dim=128))
# ImageNet size (Spikformer-8-384-like layout, smaller width for CPU use).
register_variant(SpikformerConfig(
    name="spikformer_imagenet", img_size=(224, 224), in_chans=3, patch_size=16, embed_dim=256,
    depth=4, num_heads=8, mlp_ratio=4.0, T=4, num_classes=1000, descriptor_dim=256))
