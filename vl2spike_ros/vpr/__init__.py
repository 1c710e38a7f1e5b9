"""vl2spike_ros.vpr: visual place recognition (no ROS imports).

Main names (imported lazily): ``PlaceDescriptor``, ``DescriptorSettings``,
``load_place_descriptor``, ``PlaceMap``, ``MapMismatchError``, ``MapFormatError``, ``match``,
``topk``, ``sequence_scores``, ``SequenceMatcher``, ``AcceptanceRule``, ``accept_batch``,
``recall_at_n``, ``pr_curve``, ``pr_auc``, ``VPRPipeline``, ``MatchResult``, ``build_map``.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "PlaceDescriptor": "place", "DescriptorSettings": "place", "load_place_descriptor": "place",
    "PlaceMap": "placemap", "MapMismatchError": "placemap", "MapFormatError": "placemap",
    "match": "matching", "topk": "matching", "sequence_scores": "matching",
    "SequenceMatcher": "matching", "AcceptanceRule": "acceptance", "accept_batch": "acceptance",
    "recall_at_n": "evaluation", "pr_curve": "evaluation", "pr_auc": "evaluation",
    "evaluate_aligned": "evaluation",
    "VPRPipeline": "pipeline", "MatchResult": "pipeline", "build_map": "pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
