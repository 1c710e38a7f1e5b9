"""Training checkpoints: student (safetensors + JSON via ``models.save_model``), trainer state
(optimizer, scheduler, loss-module buffers, RNG; ``torch.save`` read back with
``weights_only=True``) and a JSON state file written last (its presence marks a complete save).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from vl2spike_ros.atomic import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
STATE_JSON = "train_state.json"


def save_checkpoint(out: Path, student, aux: torch.nn.Module, opt, sched, info: dict[str, Any],
                    metadata: dict[str, Any]) -> None:
    """Write model + trainer state into ``out`` atomically (state JSON last)."""
    from vl2spike_ros.models import save_model, weights_hash

    out.mkdir(parents=True, exist_ok=True)
    save_model(student, out / MODEL_FILE, metadata=metadata)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "aux": {k: v.detach().cpu() for k, v in aux.state_dict().items()},
             "torch_rng": torch.get_rng_state()}
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save(state, tmp)
    write_json_atomic(out / STATE_JSON, {**info, "model_sha256_16": weights_hash(out / MODEL_FILE)})


def read_state_json(out: Path) -> dict[str, Any] | None:
    p = out / STATE_JSON
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: corrupt training state ({exc})") from exc


def load_checkpoint(out: Path, student, aux: torch.nn.Module, opt, sched,
                    map_location: str = "cpu") -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; returns the state JSON."""
    from vl2spike_ros.models import load_model, weights_hash

    info = read_state_json(out)
    if info is None:
        raise FileNotFoundError(f"--resume: no {STATE_JSON} in {out}")
    if weights_hash(out / MODEL_FILE) != info.get("model_sha256_16"):
        raise ValueError(f"--resume: {out / MODEL_FILE} does not match {STATE_JSON} (interrupted save?)")
    saved = load_model(out / MODEL_FILE, expected=student.config, map_location=map_location)
    student.load_state_dict(saved.state_dict())
    state = torch.load(out / STATE_FILE, map_location=map_location, weights_only=True)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    aux.load_state_dict(state["aux"])
    torch.set_rng_state(state["torch_rng"].cpu())
    log.info("resumed from %s at step %d", out, info["step"])
    return info
