"""Small real inputs for the node tests and the load benchmark (no rclpy import).

* :func:`node_weights`: the packaged default VPR weights when they exist, else a
  ``spikformer_vpr`` student with BatchNorm calibrated on real Nordland frames (so it fires
  spikes), saved to a folder of the caller's choice.
* :func:`nordland_frames`: a few real Nordland frames (uint8 ``[N, 32, 64]``).
* :func:`build_map`: a place map from frames, built with the library (same code as
  ``vl2spike map build``), optionally with synthetic poses along a line.
* :func:`write_params_file`: a ROS 2 params file for ``vpr_node``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vl2spike_ros.ros.params import NODE_NAME, SPEC_BY_NAME

log = logging.getLogger(__name__)


def nordland_frames(data_root: str | Path, season: str = "summer", start: int = 0,
                    count: int = 16, step: int = 1) -> np.ndarray:
    """Real Nordland frames ``images-NNNNN.png`` (grey) as uint8 ``[count, H, W]``."""
    from vl2spike_ros.data.datasets import list_images, load_images

    files = list_images(Path(data_root) / "nordland" / season)
    picked = files[start:start + count * step:step]
    if len(picked) < count:
        raise ValueError(f"only {len(picked)} Nordland {season} frames from {start} (step {step})")
    return load_images(picked, grayscale=True)


def node_weights(out_dir: str | Path, calib_frames: np.ndarray | None = None,
                 seed: int = 0) -> Path:
    """Default VPR weights if packaged, else a BN-calibrated random student in ``out_dir``."""
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
    """A random ``spikformer_vpr`` student with BatchNorm calibrated on ``calib_frames``
    (so that it fires spikes), saved as ``out_dir/<name>.safetensors``."""
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
    """Place metadata with poses along the x axis, in the map format
    ``{"pose": [x, y, z, qx, qy, qz, qw], "frame_id": ...}``."""
    return [{"pose": [i * spacing, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "frame_id": frame_id}
            for i in range(n)]


def build_map(weights: str | Path, frames: np.ndarray, map_dir: str | Path,
              metas: list[dict] | None = None) -> Path:
    """Place map of ``frames`` (one place each, ids 0..N-1) built for ``weights``."""
    from vl2spike_ros.vpr.pipeline import build_map as _build, load_vpr_model

    model, meta = load_vpr_model(weights)
    return _build(model, meta, frames, metas=metas).save(map_dir)


def write_params_file(path: str | Path, values: Mapping[str, Any],
                      node_name: str = NODE_NAME) -> Path:
    """ROS 2 params file ``{node_name: {ros__parameters: values}}`` (names are checked)."""
    import yaml

    unknown = set(values) - set(SPEC_BY_NAME)
    if unknown:
        raise ValueError(f"unknown vpr_node parameter(s): {sorted(unknown)}")
    clean = {k: (float(v) if SPEC_BY_NAME[k].type == "double" else v) for k, v in values.items()}
    path = Path(path)
    path.write_text(yaml.safe_dump({node_name: {"ros__parameters": clean}}, sort_keys=False))
    return path
