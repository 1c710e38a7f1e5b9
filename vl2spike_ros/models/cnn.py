"""Small ANN (CNN) place-descriptor network: the VPR teacher and an ANN baseline.

Same interface as the Spikformer student where VPR code needs it: ``.config`` with
``name, img_size, in_chans, descriptor_dim`` and ``descriptor(x [B,C,H,W]) -> [B, D]``.
Weights: safetensors + JSON config (no pickle), written and read by :mod:`vl2spike_ros.models.io`
(``kind: "cnn"``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class CNNConfig:
    """Config of :class:`PlaceCNN` (input ``[B, in_chans, H, W]``)."""

    name: str = "cnn_vpr"
    img_size: tuple[int, int] = (32, 64)
    in_chans: int = 1
    widths: tuple[int, ...] = (32, 64, 128, 64)
    descriptor_dim: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", tuple(int(s) for s in self.img_size))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.img_size) != 2 or min(self.img_size) <= 0:
            raise ValueError(f"{self.name}: img_size must be (H, W) > 0, got {self.img_size}")
        if not self.widths or min(self.widths) <= 0 or self.in_chans <= 0 \
                or self.descriptor_dim <= 0:
            raise ValueError(f"{self.name}: in_chans, widths and descriptor_dim must be positive")
        down = 2 ** (len(self.widths) - 1)
        if self.img_size[0] < down or self.img_size[1] < down:
            raise ValueError(f"{self.name}: img_size {self.img_size} is too small for "
                             f"{len(self.widths) - 1} poolings")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["img_size"], d["widths"] = list(self.img_size), list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CNNConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown CNNConfig fields: {sorted(unknown)}")
        return cls(**d)


def _block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class PlaceCNN(nn.Module):
    """Conv stack keeping the spatial layout, then a linear projection to the descriptor."""

    def __init__(self, config: CNNConfig = CNNConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        chans = (config.in_chans,) + tuple(w)
        self.features = nn.Sequential(*[_block(chans[i], chans[i + 1], i < len(w) - 1)
                                        for i in range(len(w))])
        h, wd = config.img_size
        down = 2 ** (len(w) - 1)
        self.proj = nn.Linear(w[-1] * (h // down) * (wd // down), config.descriptor_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> unnormalised embedding ``[B, D]``."""
        return self.proj(self.features(x).flatten(1))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, H, W]`` to the last conv features as a row-major grid ``[B, h*w, C]``."""
        return self.features(x).flatten(2).transpose(1, 2)

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> L2-normalised descriptor ``[B, D]``."""
        return nn.functional.normalize(self.embed(x), dim=-1)

    @property
    def map_dim(self) -> int:
        """Length of the flattened last conv map (the ``"map"`` place descriptor)."""
        h, w = self.config.img_size
        down = 2 ** (len(self.config.widths) - 1)
        return self.config.widths[-1] * (h // down) * (w // down)

    def descriptor_and_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one conv pass for :meth:`descriptor` ``[B, D]`` and :meth:`feature_map`."""
        f = self.features(x)
        return (nn.functional.normalize(self.proj(f.flatten(1)), dim=-1),
                f.flatten(2).transpose(1, 2))

    forward = descriptor
