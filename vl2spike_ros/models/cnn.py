"""Small ANN (CNN) place-descriptor network: the VPR teacher and an ANN baseline.

Same interface as the Spikformer student where VPR code needs it: ``.config`` with
``name, img_size, in_chans, descriptor_dim`` and ``descriptor(x [B,C,H,W]) -> [B, D]``.
Weights: safetensors + JSON config (no pickle).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vl2spike_ros.atomic import atomic_path, write_json_atomic


@dataclass(frozen=True)
class CNNConfig:
    """Config of :class:`PlaceCNN` (input ``[B, in_chans, H, W]``)."""
    name: str = "cnn_vpr"
    img_size: tuple[int, int] = (32, 64)
    in_chans: int = 1
    widths: tuple[int, ...] = (32, 64, 128, 64)
    descriptor_dim: int = 256


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
        """``[B, C, H, W]`` -> last conv features as a token grid ``[B, h*w, C_last]`` (row-major)."""
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
        """One conv pass -> (:meth:`descriptor` ``[B, D]``, :meth:`feature_map` ``[B, h*w, C]``)."""
        f = self.features(x)
        return (nn.functional.normalize(self.proj(f.flatten(1)), dim=-1),
                f.flatten(2).transpose(1, 2))

    forward = descriptor


def save_cnn(model: PlaceCNN, path: str | Path, meta: dict | None = None,
             extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``path`` (.safetensors) and ``path.json`` (config + meta), atomically;
    ``extra_tensors`` are stored as ``extra.<name>`` like :func:`vl2spike_ros.models.save_model`."""
    from vl2spike_ros.models.io import EXTRA_PREFIX

    path = Path(path)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state.update({EXTRA_PREFIX + k: v.contiguous() for k, v in (extra_tensors or {}).items()})
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    cfg = dataclasses.asdict(model.config)
    write_json_atomic(path.with_suffix(".json"), {"kind": "cnn", "config": cfg, "meta": meta or {}})


def load_cnn(path: str | Path) -> PlaceCNN:
    """Load a :class:`PlaceCNN` saved by :func:`save_cnn`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CNN weights {path} do not exist")
    info = json.loads(path.with_suffix(".json").read_text())
    cfg = info["config"]
    cfg = CNNConfig(**{**cfg, "img_size": tuple(cfg["img_size"]), "widths": tuple(cfg["widths"])})
    from vl2spike_ros.models.io import EXTRA_PREFIX

    model = PlaceCNN(cfg)
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path}: cannot read safetensors ({exc})") from exc
    try:
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith(EXTRA_PREFIX)})
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit config {cfg}: {exc}") from exc
    from vl2spike_ros.vpr.descriptors import POOLED, check_mode, check_norm
    vpr = info.get("meta", {}).get("vpr", {})
    model.vpr_input_norm = check_norm(vpr.get("input_norm", "image"), cfg.img_size)
    model.vpr_descriptor = check_mode(vpr.get("descriptor", POOLED))
    return model.eval()
