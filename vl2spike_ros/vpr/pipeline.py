"""VPRPipeline: the one per-frame path shared by ``vl2spike replay`` and the ROS node.

place descriptor load (:func:`~vl2spike_ros.vpr.place.load_place_descriptor`) -> map load
(model mismatch refused) -> preprocess (INTER_AREA resize first) -> descriptor -> FAISS search
(or dense scores + sequence matching) -> acceptance -> MatchResult with latency, firing rate and
an energy estimate.

Acceptance is decided here and nowhere else (the node and ``vl2spike replay`` both read
``MatchResult.accepted``): :func:`vl2spike_ros.vpr.acceptance.decide` on the dense similarity
row of the frame and the 5-frame sequence evidence, which runs whatever ``seq_len`` is. The
evidence keeps the last frames' descriptors, so places added to the map (mapping mode) are
scored for the earlier frames too instead of restarting the evidence.

Per-frame energy is cheap: the first processed frame is profiled once with
:func:`vl2spike_ros.energy.counting.student_energy` (MACs of the first layer, SOPs, spike
count); later frames count their spikes with forward hooks and scale:
``E = E_MAC*MACs + E_AC*SOPs_per_spike * spikes`` (SOPs per spike taken from the profiled frame).
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vl2spike_ros.energy import counting as en
from vl2spike_ros.vpr.acceptance import (DEFAULT_MATCH_MARGIN, AcceptanceRule, Calibration,
                                         decide, load_calibration)
from vl2spike_ros.vpr.matching import DEFAULT_MATCH_THRESHOLD, SequenceMatcher, topk
from vl2spike_ros.vpr.place import PlaceDescriptor, load_place_descriptor
from vl2spike_ros.vpr.placemap import PlaceMap, check_model_meta

log = logging.getLogger(__name__)

MAP_BATCH = 64


def build_map(place: PlaceDescriptor, images: np.ndarray, metas: list[dict] | None = None,
              factory: str = "Flat", batch_size: int = MAP_BATCH) -> PlaceMap:
    """Describe ``images [N,H,W(,C)]`` with ``place`` and index them in a new PlaceMap.

    The map's model_meta is ``place.model_meta()``.
    """
    descs = place.describe_images(images, batch_size)
    pm = PlaceMap(descs.shape[1], place.model_meta(), factory)
    pm.add(descs, metas)
    return pm


@dataclass
class MatchResult:
    """Outcome for one frame. ``ids/scores [k]`` best first; ``best_id`` -1 when none."""

    ids: np.ndarray
    scores: np.ndarray
    accepted: bool
    best_id: int
    best_score: float
    latency_ms: float
    firing_rate: float | None = None
    energy_mj: float | None = None
    place: dict | None = field(default=None)
    descriptor: np.ndarray | None = field(default=None, repr=False)  # [1, D] of this frame
    margin: float = float("nan")       # evidence margin (vpr.acceptance); NaN: none
    confidence: float | None = None    # calibrated confidence of an accepted match, else None


@dataclass(frozen=True)
class MatchOptions:
    """Sequence velocities and acceptance margin of a :class:`VPRPipeline`."""

    margin: float = DEFAULT_MATCH_MARGIN
    velocities: tuple[float, ...] = (1.0,)


class _SpikeCounter:
    """Forward hooks summing the spikes of every LIF layer during one forward."""

    def __init__(self, model):
        from spikingjelly.activation_based import neuron
        self.spikes = 0.0
        self.neurons = 0
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if isinstance(m, neuron.BaseNode)]

    def _hook(self, _m, _inp, out) -> None:
        self.spikes += float(out.sum())
        self.neurons += out.numel()

    def reset(self) -> None:
        self.spikes, self.neurons = 0.0, 0

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class VPRPipeline:
    """Per-frame place recognition: ``process(image) -> MatchResult``.

    Stateful only through the sequence matcher and the acceptance evidence (``reset()`` clears
    both). ``threshold`` and ``options.margin`` set the acceptance rule.
    """

    def __init__(self, weights: str | Path | None = None, map_dir: str | Path | None = None,
                 top_k: int = 5, threshold: float = DEFAULT_MATCH_THRESHOLD, seq_len: int = 1,
                 device: str = "cpu", energy: bool = True, options: MatchOptions = MatchOptions()):
        if top_k < 1 or seq_len < 1:
            raise ValueError(f"top_k and seq_len must be >= 1 (got {top_k}, {seq_len})")
        self.place = load_place_descriptor(weights, device)
        self.model_meta = self.place.model_meta()
        self.device, self.top_k = device, top_k
        self.rule = AcceptanceRule(float(threshold), float(options.margin))
        self.calibration: Calibration | None = load_calibration(
            str(self.model_meta.get("weights_hash")))
        self.img_size = self.place.settings.img_size
        self.in_chans = self.place.settings.in_chans
        self.map = PlaceMap.load(map_dir, expect_model_meta=self.model_meta) if map_dir else None
        self.evidence = SequenceMatcher(self.rule.evidence_length, options.velocities)
        self.seq = (None if seq_len == 1 else self.evidence if seq_len == self.rule.evidence_length
                    else SequenceMatcher(seq_len, options.velocities))
        self._recent: deque[np.ndarray] = deque(maxlen=max(seq_len, self.rule.evidence_length))
        self._scored_places = -1  # map size the matchers' history was scored against
        self.is_spiking = self.place.is_spiking
        self._counter = (_SpikeCounter(self.place.backbone) if (energy and self.is_spiking)
                         else None)
        self._energy_cal: dict | None = None
        self._want_energy = energy
        self.describe(np.zeros((*self.img_size, self.in_chans), np.uint8))  # warm-up

    def set_map(self, pm: PlaceMap) -> None:
        """Use an in-memory map (checked against this model)."""
        check_model_meta(pm.model_meta, self.model_meta)
        self.map = pm
        self.reset()

    @property
    def threshold(self) -> float:
        """Cosine floor of the acceptance rule."""
        return self.rule.threshold

    def set_acceptance(self, threshold: float, margin: float) -> None:
        """Change the acceptance rule's cosine floor and margin (takes effect next frame)."""
        self.rule = AcceptanceRule(float(threshold), float(margin), self.rule.neighbourhood,
                                   self.rule.evidence_length)

    def reset(self) -> None:
        """Forget the frames seen so far (sequence matching and acceptance evidence)."""
        self.evidence.reset()
        if self.seq is not None:
            self.seq.reset()
        self._recent.clear()

    @torch.inference_mode()
    def describe(self, image: np.ndarray) -> np.ndarray:
        """One image ``[H,W(,C)]`` uint8 -> descriptor ``[1, D]`` float32."""
        return self.place(self.place.frame_tensor(image).to(self.device)).cpu().numpy()

    def _rows(self, desc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Feed this frame to the matchers: (single row ``[M]``, evidence row, sequence row).

        When the map changed size since the history was scored, the recent frames' rows are
        scored again against the current map first.
        """
        if len(self.map) != self._scored_places:
            self.evidence.reset()
            if self.seq is not None:
                self.seq.reset()
            for old in self._recent:
                self._update(self.map.similarity(old)[0])
            self._scored_places = len(self.map)
        self._recent.append(desc)
        row = self.map.similarity(desc)[0]
        return (row, *self._update(row))

    def _update(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        ev = self.evidence.update(row)
        if self.seq is None:
            return ev, None
        return ev, (ev if self.seq is self.evidence else self.seq.update(row))

    def _match(self, desc: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, float]:
        """(scores ``[k]``, ids ``[k]``, accepted, evidence margin) for one descriptor."""
        row, ev, seq_row = self._rows(desc)
        # The dense row is computed for the acceptance evidence anyway: rank it rather than
        # search the index a second time (exact, also for HNSW maps).
        s, i = topk((row if seq_row is None else seq_row)[None], self.top_k)
        scores, ids = s[0], i[0]
        best = (int(ids[0]), float(scores[0])) if len(ids) else (-1, float("-inf"))
        warm = len(self.evidence) >= self.rule.evidence_length
        accepted, margin = decide(self.rule, best, int(np.argmax(row)), ev, warm)
        return scores, ids, accepted, margin

    def process(self, image: np.ndarray) -> MatchResult:
        """Match one camera frame ``[H,W]`` or ``[H,W,C]`` (RGB) uint8 against the map."""
        if self.map is None or len(self.map) == 0:
            raise RuntimeError("VPRPipeline has no (or an empty) place map; load one first")
        t0 = time.perf_counter()
        if self._counter is not None:
            self._counter.reset()
        desc = self.describe(image)
        scores, ids, accepted, margin = self._match(desc)
        latency = (time.perf_counter() - t0) * 1e3
        best_id = int(ids[0]) if len(ids) and ids[0] >= 0 else -1
        best = float(scores[0]) if best_id >= 0 else float("-inf")
        fr, e = self._frame_energy(image)
        conf = (self.calibration.at(margin) if accepted and self.calibration is not None
                else None)
        return MatchResult(ids=ids, scores=scores, accepted=accepted, best_id=best_id,
                           best_score=best, latency_ms=latency, firing_rate=fr, energy_mj=e,
                           place=self.map.place(best_id) if best_id >= 0 else None,
                           descriptor=desc, margin=margin, confidence=conf)

    def no_match(self, desc: np.ndarray, latency_ms: float) -> MatchResult:
        """Return the result of a frame seen with an empty map (mapping mode): not accepted."""
        self._recent.append(desc)
        return MatchResult(ids=np.zeros(0, np.int64), scores=np.zeros(0, np.float32),
                           accepted=False, best_id=-1, best_score=float("-inf"),
                           latency_ms=latency_ms, descriptor=desc)

    def _calibrate_energy(self, image: np.ndarray) -> dict:
        """Profile one frame (outside the timed path): constant MAC energy + SOPs per spike."""
        x = self.place.frame_tensor(image).to(self.device)
        describe = self.place   # what matching uses: raw descriptor + whitening
        if not self.is_spiking:
            rep = en.teacher_energy(describe, x)
            return {"mac_mj": rep["energy_mj"], "sop_per_spike": 0.0}
        if self._counter is not None:
            self._counter.close()
        rep = en.student_energy(self.place.backbone, x, output=describe)
        self._counter = _SpikeCounter(self.place.backbone)
        with torch.inference_mode():
            describe(x)
        spikes = max(self._counter.spikes, 1.0)
        return {"mac_mj": en.energy_mj(rep["macs"], 0.0), "sop_per_spike": rep["sops"] / spikes,
                "e_ac_pj": en.E_AC_PJ}

    def _frame_energy(self, image: np.ndarray) -> tuple[float | None, float | None]:
        if not self._want_energy:
            return None, None
        if self._energy_cal is None:
            c = self._counter
            spikes, neurons = (c.spikes, c.neurons) if c is not None else (0, 0)
            self._energy_cal = self._calibrate_energy(image)
            if self._counter is not None:
                self._counter.spikes, self._counter.neurons = spikes, neurons
        cal = self._energy_cal
        if self._counter is None:
            return None, cal["mac_mj"]
        c = self._counter
        fr = c.spikes / max(1, c.neurons)
        return fr, cal["mac_mj"] + cal["e_ac_pj"] * cal["sop_per_spike"] * c.spikes * 1e-9
