"""The node's single link to the VPR library (no rclpy import).

:class:`Engine` wraps :class:`vl2spike_ros.vpr.pipeline.VPRPipeline` (the same per-frame code
as ``vl2spike replay``) and adds what the node needs around it: an empty map in mapping mode,
adding the last frame as a place, map reload / save, and live ``top_k`` / acceptance changes.
Whether a match is accepted is decided by the pipeline only (``MatchResult.accepted``).
Places added since the map was loaded or last saved are *unsaved*: a reload that would drop
them is refused unless asked to discard them. Callers serialise access (the node holds a lock).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from vl2spike_ros.ros.params import NodeParams

log = logging.getLogger(__name__)


class EngineError(ValueError):
    """The engine cannot be built from these parameters (one clear message)."""


class Engine:
    """Weights + map + matcher for the node (see module docstring)."""

    def __init__(self, pipeline: Any, map_dir: str, weights: str) -> None:
        self.pipe = pipeline
        self.map_dir = map_dir
        self.weights = weights
        self._last_desc: np.ndarray | None = None  # [1, D] of the last processed frame
        self._saved = len(pipeline.map) if pipeline.map is not None else 0  # places on disk

    @classmethod
    def load(cls, p: NodeParams) -> "Engine":
        """Load weights and map (checked to match); an empty map only in mapping mode."""
        import torch

        from vl2spike_ros.vpr.matching import parse_velocities
        from vl2spike_ros.vpr.pipeline import MatchOptions, VPRPipeline
        from vl2spike_ros.vpr.placemap import PlaceMap

        if not p.map_dir and not p.mapping_mode:
            raise EngineError("parameter map_dir is empty: give a place map folder "
                              "(or start with mapping_mode: true to build a new map)")
        if p.num_threads > 0:
            torch.set_num_threads(p.num_threads)
        if p.device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"device {p.device!r} requested but CUDA is not available")
        options = MatchOptions(p.match_margin, parse_velocities(p.sequence_velocities))
        pipe = VPRPipeline(p.weights or None, p.map_dir or None, top_k=p.top_k,
                           threshold=p.match_threshold, seq_len=p.sequence_length,
                           device=p.device, options=options)
        if pipe.map is None:
            pipe.map = PlaceMap(int(pipe.model_meta["descriptor_dim"]), pipe.model_meta)
        engine = cls(pipe, p.map_dir, p.weights or "(packaged default)")
        engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """Run one synthetic frame so the first camera frame is not slowed by lazy set-up.

        That is first-call allocations and the pipeline's one-off energy profiling.
        """
        h, w = self.pipe.img_size
        frame = np.random.default_rng(0).integers(0, 256, (h, w), dtype=np.uint8)
        if len(self):
            self.pipe.process(frame)
        else:
            self.pipe.describe(frame)
        self.pipe.reset()
        self._last_desc = None

    def __len__(self) -> int:
        return len(self.pipe.map)

    @property
    def unsaved(self) -> int:
        """Places added (mapping mode) since the map was loaded or last saved."""
        return max(0, len(self) - self._saved)

    def describe(self) -> str:
        m = self.pipe.model_meta
        return (f"weights {self.weights} ({m.get('variant')}, hash {m.get('weights_hash')}), "
                f"map {self.map_dir or '(new, empty)'} with {len(self)} places, "
                f"device {self.pipe.device}")

    def set_matching(self, top_k: int, threshold: float, margin: float) -> None:
        """Apply live ``top_k``, ``match_threshold`` and ``match_margin`` changes."""
        self.pipe.top_k = int(top_k)
        self.pipe.set_acceptance(threshold, margin)

    def expected_precision(self) -> float | None:
        """Return the validation precision of accepted matches at this margin (None: no table)."""
        cal = self.pipe.calibration
        return cal.at(self.pipe.rule.margin) if cal is not None else None

    def process(self, image: np.ndarray) -> Any:
        """Match one uint8 frame; an empty MatchResult while the map is still empty.

        The frame's descriptor is kept for :meth:`add_last` (no second forward pass).
        """
        if len(self) == 0:
            t0 = time.perf_counter()
            desc = self.pipe.describe(image)  # the map has nothing to search yet
            res = self.pipe.no_match(desc, (time.perf_counter() - t0) * 1e3)
        else:
            res = self.pipe.process(image)
        self._last_desc = res.descriptor
        return res

    def place_meta(self, place_id: int) -> dict | None:
        try:
            return self.pipe.map.place(place_id)
        except (KeyError, IndexError):
            return None

    def add_last(self, meta: dict[str, Any]) -> int:
        """Add the last processed frame as a new place; returns its id."""
        if self._last_desc is None:
            raise RuntimeError("no frame processed yet")
        ids = self.pipe.map.add(self._last_desc, [meta])
        return int(ids[0])

    def reload_map(self, map_dir: str, discard_unsaved: bool = False) -> int:
        """Replace the map by ``map_dir`` (checked against the model); old map kept on error.

        Refused (EngineError) while places are unsaved, unless ``discard_unsaved``.
        """
        from vl2spike_ros.vpr.placemap import PlaceMap

        if not map_dir:
            raise EngineError("parameter map_dir is empty: nothing to reload")
        if self.unsaved and not discard_unsaved:
            raise EngineError(f"{self.unsaved} place(s) mapped since the last save would be "
                              "lost: call vpr/save_map first, or vpr/discard_and_reload_map "
                              "to drop them")
        pm = PlaceMap.load(map_dir, expect_model_meta=self.pipe.model_meta)
        self.pipe.set_map(pm)
        self.map_dir = map_dir
        self._saved = len(pm)
        return len(pm)

    def save_map(self, map_dir: str | Path) -> int:
        """Replace the map in ``map_dir`` atomically; return the place count.

        A crash leaves the old or the new map (:meth:`PlaceMap.save`).
        """
        self.pipe.map.save(map_dir)
        self._saved = len(self)
        return len(self)
