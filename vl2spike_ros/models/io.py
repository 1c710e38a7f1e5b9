"""Create, save and load networks: safetensors weights + a JSON sidecar (atomic writes).

One writer (:func:`save_model`) and one reader (:func:`load_weights`) for every kind of network
(Spikformer student ``"spikformer"``, :class:`~vl2spike_ros.models.cnn.PlaceCNN` ``"cnn"``); the
sidecar layout and its checks are in :mod:`vl2spike_ros.models.schema` (old layouts are migrated
on read).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from vl2spike_ros.atomic import atomic_path, write_json_atomic
from vl2spike_ros.paths import ASSETS_DIR

from .cnn import CNNConfig, PlaceCNN
from .config import SpikformerConfig, get_config
from .schema import CNN, FORMAT, SPIKFORMER, parse_weights_meta
from .spikformer import SpikformerStudent

log = logging.getLogger(__name__)

__all__ = ["create_model", "save_model", "load_model", "load_weights", "read_model_meta",
           "weights_hash", "default_vpr_weights", "config_path_for", "load_extra_tensors",
           "kind_of", "EXTRA_PREFIX"]

# Tensors that belong with the weights but not to the network's state (e.g. a fitted descriptor
# whitening) are stored in the same safetensors file under this prefix.
EXTRA_PREFIX = "extra."
_BUILD = {SPIKFORMER: (SpikformerConfig, SpikformerStudent), CNN: (CNNConfig, PlaceCNN)}


def create_model(name_or_config: str | SpikformerConfig, **overrides: Any) -> SpikformerStudent:
    """Build a fresh student from a registered name or a config (plus field overrides)."""
    if isinstance(name_or_config, SpikformerConfig):
        cfg = name_or_config
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
    else:
        cfg = get_config(name_or_config, **overrides)
    return SpikformerStudent(cfg)


def config_path_for(path: str | os.PathLike) -> Path:
    """``model.safetensors`` -> ``model.json`` (the config + metadata file)."""
    return Path(path).with_suffix(".json")


def kind_of(model: nn.Module) -> str:
    """Name the kind of ``model``: ``"spikformer"`` or ``"cnn"``; ValueError otherwise."""
    for kind, (_, cls) in _BUILD.items():
        if isinstance(model, cls):
            return kind
    raise ValueError(f"cannot save a {type(model).__name__}: only SpikformerStudent and PlaceCNN")


def save_model(model: SpikformerStudent | PlaceCNN, path: str | os.PathLike,
               metadata: dict[str, Any] | None = None,
               extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``path`` (safetensors; ``.safetensors`` appended if missing) and its ``.json``.

    Both writes are atomic. ``metadata`` (JSON-serialisable) is stored in the JSON file;
    ``extra_tensors`` are stored as ``extra.<name>`` (read back by :func:`load_extra_tensors`).
    """
    kind = kind_of(model)
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    try:
        json.dumps(metadata or {})
    except TypeError as exc:
        raise ValueError(f"save_model: metadata is not JSON-serialisable ({exc})") from exc
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state.update({EXTRA_PREFIX + k: v.detach().cpu().contiguous()
                  for k, v in (extra_tensors or {}).items()})
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "kind": kind,
                                             "variant": model.config.name})
    meta = {"format": FORMAT, "kind": kind, "config": model.config.to_dict(),
            "weights_sha256_16": weights_hash(path), "metadata": metadata or {}}
    write_json_atomic(config_path_for(path), meta)
    log.info("saved %s (%s %s)", path, kind, model.config.name)
    return path


def read_model_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read the JSON sidecar of ``path`` in the current layout.

    Keys ``format, kind, config, weights_sha256_16, metadata`` (old layouts migrated);
    ``FileNotFoundError`` when missing, a one-line ``ValueError`` naming the file and field when
    malformed.
    """
    jpath = config_path_for(path)
    if not jpath.is_file():
        raise FileNotFoundError(f"model config {jpath} not found "
                                f"(saved next to {Path(path).name})")
    return parse_weights_meta(jpath.read_text(), str(jpath))


def _config_of(meta: dict[str, Any], jpath: Path) -> SpikformerConfig | CNNConfig:
    cls = _BUILD[meta["kind"]][0]
    try:
        return cls.from_dict(meta["config"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{jpath}: field config invalid ({exc})") from None


def load_weights(path: str | os.PathLike,
                 map_location: str | torch.device = "cpu") -> SpikformerStudent | PlaceCNN:
    """Load any network saved by :func:`save_model` (kind from its JSON), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights {path} not found")
    meta = read_model_meta(path)
    cfg = _config_of(meta, config_path_for(path))
    try:
        state = load_file(str(path), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path}: cannot read safetensors ({exc})") from exc
    model = _BUILD[meta["kind"]][1](cfg)
    _load_state_checked(model, {k: v for k, v in state.items()
                                if not k.startswith(EXTRA_PREFIX)}, path)
    return model.to(map_location).eval()


def load_model(path: str | os.PathLike, expected: str | SpikformerConfig | None = None,
               map_location: str | torch.device = "cpu") -> SpikformerStudent:
    """Load a Spikformer student saved by :func:`save_model`, in eval mode.

    ``expected``: a variant name or config the file must match, else ``ValueError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights {path} not found")
    meta = read_model_meta(path)
    if meta["kind"] != SPIKFORMER:
        raise ValueError(f"{path} holds a {meta['kind']!r} network, not a Spikformer student")
    cfg = _config_of(meta, config_path_for(path))
    if expected is not None:
        want = get_config(expected) if isinstance(expected, str) else expected
        if want != cfg:
            diff = {k: (v, getattr(cfg, k)) for k, v in want.to_dict().items()
                    if cfg.to_dict().get(k) != v}
            raise ValueError(f"{path} holds variant {cfg.name!r}, expected {want.name!r}; "
                             f"differences (expected, file): {diff}")
    return load_weights(path, map_location)


def _load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path}: weights do not fit variant {model.config.name!r} "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {wrong[:5]})")
    model.load_state_dict(state, strict=True)


def load_extra_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the ``extra.*`` tensors of a safetensors file, prefix removed (may be empty)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return {k[len(EXTRA_PREFIX):]: fh.get_tensor(k) for k in fh.keys()
                    if k.startswith(EXTRA_PREFIX)}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path}: cannot read safetensors ({exc})") from exc


def weights_hash(path: str | os.PathLike) -> str:
    """Hash the safetensors file: sha256, first 16 hex characters (the one file hash)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights {path} not found")
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def default_vpr_weights() -> Path:
    """Return the packaged default VPR weights (may not exist before ``make weights``)."""
    return ASSETS_DIR / "vpr_default.safetensors"
