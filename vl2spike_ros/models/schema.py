"""The weights JSON sidecar (``model.json`` next to ``model.safetensors``).

One schema for every kind of network, checked on read; older layouts are migrated on read.
Current layout (``format`` :data:`FORMAT`)::

    {"format": "vl2spike_ros.weights/2", "kind": "spikformer" | "cnn",
     "config": {...the kind's config fields...}, "weights_sha256_16": "<16 hex>",
     "metadata": {...free JSON, e.g. "vpr": {"descriptor", "input_norm", "whitening"}...}}

Older layouts still read: the Spikformer's ``{"format": "vl2spike_ros.spikformer_student/1",
"config", "weights_sha256_16", "metadata"}`` (no ``kind``) and the CNN's ``{"kind": "cnn",
"config", "meta"}``. Every problem is one ``ValueError`` line naming the file and the field.
"""
from __future__ import annotations

import json
from typing import Any, Callable

SPIKFORMER = "spikformer"
CNN = "cnn"
KINDS = (SPIKFORMER, CNN)
FORMAT = "vl2spike_ros.weights/2"
LEGACY_FORMATS = {"vl2spike_ros.spikformer_student/1": SPIKFORMER}
HASH_LEN = 16


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_size(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(s) for s in v)


def _is_ints(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_int(s) for s in v)


# (check, what the field must be) per config field of each kind
_STR = (lambda v: isinstance(v, str), "a string")
_INT = (_is_int, "an integer")
_SIZE = (_is_size, "[H, W] (two integers)")
CONFIG_FIELDS: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    SPIKFORMER: {"name": _STR, "img_size": _SIZE, "in_chans": _INT, "patch_size": _INT,
                 "embed_dim": _INT, "depth": _INT, "num_heads": _INT,
                 "mlp_ratio": (_is_num, "a number"), "T": _INT, "num_classes": _INT,
                 "descriptor_dim": _INT},
    CNN: {"name": _STR, "img_size": _SIZE, "in_chans": _INT,
          "widths": (_is_ints, "a non-empty list of integers"), "descriptor_dim": _INT},
}


def parse_weights_meta(text: str, where: str) -> dict[str, Any]:
    """Parse and check the JSON text of a weights sidecar; return it in the current layout.

    Keys ``format, kind, config, weights_sha256_16, metadata`` (``weights_sha256_16`` may be
    ``None`` for files that never had one). ``where`` names the file in the ``ValueError``
    raised on any problem.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: top level must be a JSON object, got {type(raw).__name__}")
    return migrate(raw, where)


def migrate(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Convert a parsed sidecar of any known layout to the current layout (checked)."""
    fmt = raw.get("format")
    if fmt is not None and fmt != FORMAT and fmt not in LEGACY_FORMATS:
        raise ValueError(f"{where}: field format: unknown format {fmt!r} (expected {FORMAT!r})")
    kind = raw.get("kind", LEGACY_FORMATS.get(fmt))
    if kind is None:
        raise ValueError(f"{where}: field kind missing (one of {', '.join(KINDS)})")
    if kind not in KINDS:
        raise ValueError(f"{where}: field kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if "metadata" in raw and "meta" in raw:
        raise ValueError(f"{where}: fields metadata and meta both present (meta is the old "
                         "name of metadata; keep one)")
    metadata = raw.get("metadata", raw.get("meta", {}))
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: field metadata must be a JSON object")
    digest = raw.get("weights_sha256_16")
    if digest is not None and not (isinstance(digest, str) and len(digest) == HASH_LEN):
        raise ValueError(f"{where}: field weights_sha256_16 must be {HASH_LEN} hex characters")
    return {"format": FORMAT, "kind": kind, "config": check_config(raw, kind, where),
            "weights_sha256_16": digest, "metadata": metadata}


def check_config(raw: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """Return the ``config`` object of ``raw``, every field of ``kind`` present and typed."""
    if "config" not in raw:
        raise ValueError(f"{where}: field config missing")
    cfg = raw["config"]
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: field config must be a JSON object")
    fields = CONFIG_FIELDS[kind]
    for name, (ok, what) in fields.items():
        if name not in cfg:
            raise ValueError(f"{where}: field config.{name} missing")
        if not ok(cfg[name]):
            raise ValueError(f"{where}: field config.{name} must be {what}, got {cfg[name]!r}")
    unknown = sorted(set(cfg) - set(fields))
    if unknown:
        raise ValueError(f"{where}: field config.{unknown[0]} unknown for kind {kind!r}")
    return dict(cfg)
