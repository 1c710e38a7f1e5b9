"""Networks: the Spikformer student (spikingjelly 2.0.0), the PlaceCNN, registry, save/load.

One weights + JSON format for both kinds (:mod:`vl2spike_ros.models.io`).

No ROS imports. See docs/ARCHITECTURE.md ("models") for the contract.
"""
from .config import SpikformerConfig, get_config, list_models, register_variant
from .cnn import CNNConfig, PlaceCNN
from .io import (
    config_path_for,
    create_model,
    EXTRA_PREFIX,
    default_vpr_weights,
    kind_of,
    load_extra_tensors,
    load_model,
    load_weights,
    read_model_meta,
    save_model,
    weights_hash,
)
from .spikformer import Capture, SpikformerStudent, calibrate_bn

__all__ = [
    "EXTRA_PREFIX",
    "CNNConfig",
    "Capture",
    "PlaceCNN",
    "SpikformerConfig",
    "SpikformerStudent",
    "calibrate_bn",
    "config_path_for",
    "create_model",
    "default_vpr_weights",
    "get_config",
    "kind_of",
    "list_models",
    "load_extra_tensors",
    "load_model",
    "load_weights",
    "read_model_meta",
    "register_variant",
    "save_model",
    "weights_hash",
]
