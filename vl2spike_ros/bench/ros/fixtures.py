"""Small real inputs for the node tests and the load benchmark (no rclpy import).

* :func:`node_weights`: the packaged default VPR weights when they exist, else a
  ``spikformer_vpr`` student with BatchNorm calibrated on real Nordland frames (so it fires
  spikes), saved to a folder of the caller's choice (real frames:
  :func:`vl2spike_ros.data.datasets.load_nordland_frames`).
* :func:`build_map`: a place map from frames, built with the library (same code as
  ``vl2spike map build``), optionally with synthetic poses along a line.
* :func:`write_params_file`: a ROS 2 params file for ``vpr_node``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vl2spike_ros.ros.params import PARAMS_FILE_KEY, SPEC_BY_NAME

log = logging.getLogger(__name__)


def node_weights(out_dir: str | Path, calib_frames: np.ndarray | None = None,
                 seed: int = 0) -> Path:
    """Return the packaged default VPR weights, else a BN-calibrated random student."""
    from vl2spike_ros.models import default_vpr_weights

    default = default_vpr_weights()
    if default.is_file():
        return default
    if calib_frames is None:
        raise FileNotFoundError(f"{default} missing and no frames given to calibrate a model")
    log.info("no packaged weights: using a BN-calibrated random student")
    return random_weights(out_dir, calib_frames, seed)


def random_weights(out_dir: str | Path, calib_frames: np.ndarray, seed: int = 0,
                   name: str | None = None) -> Path:
    """Save a random ``spikformer_vpr`` student as ``out_dir/<name>.safetensors``.

    Its BatchNorm is calibrated on ``calib_frames`` so that it fires spikes.
    """
    import torch

    from vl2spike_ros.models import calibrate_bn, create_model, save_model
    from vl2spike_ros.vpr.descriptors import preprocess

    torch.manual_seed(seed)
    model = create_model("spikformer_vpr")
    cfg = model.config
    x = preprocess(calib_frames, tuple(cfg.img_size), cfg.in_chans)
    calibrate_bn(model, [x], max_batches=1)
    model.eval()
    return save_model(model, Path(out_dir) / f"{name or f'vpr_random_bn_{seed}'}.safetensors",
                      metadata={"note": "random init, BN calibrated on Nordland (tests)"})


def line_poses(n: int, spacing: float = 10.0, frame_id: str = "map") -> list[dict[str, Any]]:
    """Place metadata with poses along the x axis.

    In the map format ``{"pose": [x, y, z, qx, qy, qz, qw], "frame_id": ...}``.
    """
    return [{"pose": [i * spacing, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "frame_id": frame_id}
            for i in range(n)]


def build_map(weights: str | Path, frames: np.ndarray, map_dir: str | Path,
              metas: list[dict] | None = None) -> Path:
    """Place map of ``frames`` (one place each, ids 0..N-1) built for ``weights``."""
    from vl2spike_ros.vpr.pipeline import build_map as _build
    from vl2spike_ros.vpr.place import load_place_descriptor

    return _build(load_place_descriptor(weights), frames, metas=metas).save(map_dir)


def write_params_file(path: str | Path, values: Mapping[str, Any],
                      node_key: str = PARAMS_FILE_KEY) -> Path:
    """Write a ROS 2 params file ``{node_key: {ros__parameters: values}}``; names are checked.

    Keyed ``/**/vpr_node`` by default, like ``config/vpr_node.yaml``: it applies to the node in
    any namespace.
    """
    import yaml

    unknown = set(values) - set(SPEC_BY_NAME)
    if unknown:
        raise ValueError(f"unknown vpr_node parameter(s): {sorted(unknown)}")
    clean = {k: (float(v) if SPEC_BY_NAME[k].type == "double" else v) for k, v in values.items()}
    path = Path(path)
    path.write_text(yaml.safe_dump({node_key: {"ros__parameters": clean}}, sort_keys=False))
    return path
