"""Training checkpoints, one format for every training loop (distillation and VPR).

A checkpoint is a folder:

* ``model.safetensors`` (+ ``.json``): the network being trained, written by
  ``models.save_model`` (a loadable model of its own);
* ``train_state.pt``: optimiser, scheduler, trainable loss-module state (``aux``) and the torch
  RNG (``torch.save``, read back with ``weights_only=True``);
* ``train_state.json``: the loop's progress (``info``) and the model's hash, written last: its
  presence marks a complete save, and a hash mismatch an interrupted one.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vl2spike_ros.atomic import atomic_path, write_json_atomic
from vl2spike_ros.models import load_weights, save_model, weights_hash

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
STATE_JSON = "train_state.json"


def save_checkpoint(out: Path, model: nn.Module, aux: nn.Module, opt, sched,
                    info: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    """Write ``model`` (with ``metadata``) and the trainer state into the folder ``out``.

    The state JSON (``info`` + model hash) is written last.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out / MODEL_FILE, metadata=metadata)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "aux": {k: v.detach().cpu() for k, v in aux.state_dict().items()},
             "torch_rng": torch.get_rng_state()}
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save(state, tmp)
    write_json_atomic(out / STATE_JSON,
                      {**info, "model_sha256_16": weights_hash(out / MODEL_FILE)})


def read_state_json(out: Path) -> dict[str, Any] | None:
    """Return the ``info`` of the checkpoint in ``out`` (``None`` when there is none)."""
    p = Path(out) / STATE_JSON
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: corrupt training state ({exc})") from exc


def load_checkpoint(out: Path, model: nn.Module, aux: nn.Module, opt, sched,
                    map_location: str = "cpu") -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; return its state JSON.

    Fills ``model``, ``aux``, ``opt``, ``sched`` and the torch RNG. A checkpoint of another
    network (config or kind differ) raises ``ValueError``.
    """
    out = Path(out)
    info = read_state_json(out)
    if info is None:
        raise FileNotFoundError(f"--resume: no {STATE_JSON} in {out}")
    if weights_hash(out / MODEL_FILE) != info.get("model_sha256_16"):
        raise ValueError(f"--resume: {out / MODEL_FILE} does not match {STATE_JSON} "
                         "(interrupted save?)")
    saved = load_weights(out / MODEL_FILE, map_location=map_location)
    if type(saved) is not type(model) or saved.config != model.config:
        raise ValueError(f"checkpoint {out} was written for another model ({saved.config} vs "
                         f"{model.config}); delete it or train that model")
    model.load_state_dict(saved.state_dict())
    try:
        state = torch.load(out / STATE_FILE, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
        raise ValueError(f"checkpoint {out / STATE_FILE} is unreadable ({exc}); "
                         "delete the checkpoint to restart") from exc
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    aux.load_state_dict(state["aux"])
    torch.set_rng_state(state["torch_rng"].cpu())
    log.info("resumed from %s (%s)", out, {k: info[k] for k in ("step", "epoch") if k in info})
    return info
