"""VPRPipeline: the one per-frame path shared by ``vl2spike replay`` and the ROS node.

place descriptor load (:func:`~vl2spike_ros.vpr.place.load_place_descriptor`) -> map load
(model mismatch refused) -> preprocess (INTER_AREA resize first) -> descriptor -> FAISS search
(or dense scores + sequence matching) -> threshold -> MatchResult with latency, firing rate and
an energy estimate.

Per-frame energy is cheap: the first processed frame is profiled once with
:func:`vl2spike_ros.energy.counting.student_energy` (MACs of the first layer, SOPs, spike
count); later frames count their spikes with forward hooks and scale:
``E = E_MAC*MACs + E_AC*SOPs_per_spike * spikes`` (SOPs per spike taken from the profiled frame).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vl2spike_ros.energy import counting as en
from vl2spike_ros.vpr.matching import SequenceMatcher, topk
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

    Stateful only through the sequence matcher (``reset()`` clears it).
    """

    def __init__(self, weights: str | Path | None = None, map_dir: str | Path | None = None,
                 top_k: int = 5, threshold: float = 0.0, seq_len: int = 1, device: str = "cpu",
                 energy: bool = True):
        if top_k < 1 or seq_len < 1:
            raise ValueError(f"top_k and seq_len must be >= 1 (got {top_k}, {seq_len})")
        self.place = load_place_descriptor(weights, device)
        self.model_meta = self.place.model_meta()
        self.device, self.top_k, self.threshold = device, top_k, float(threshold)
        self.img_size = self.place.settings.img_size
        self.in_chans = self.place.settings.in_chans
        self.map = PlaceMap.load(map_dir, expect_model_meta=self.model_meta) if map_dir else None
        self.seq = SequenceMatcher(seq_len) if seq_len > 1 else None
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

    def reset(self) -> None:
        if self.seq is not None:
            self.seq.reset()

    @torch.inference_mode()
    def describe(self, image: np.ndarray) -> np.ndarray:
        """One image ``[H,W(,C)]`` uint8 -> descriptor ``[1, D]`` float32."""
        return self.place(self.place.frame_tensor(image).to(self.device)).cpu().numpy()

    def _search(self, desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.seq is None:
            s, i = self.map.search(desc, self.top_k)
            return s[0], i[0]
        row = self.seq.update(self.map.similarity(desc)[0])
        s, i = topk(row[None], self.top_k)
        return s[0], i[0]

    def process(self, image: np.ndarray) -> MatchResult:
        """Match one camera frame ``[H,W]`` or ``[H,W,C]`` (RGB) uint8 against the map."""
        if self.map is None or len(self.map) == 0:
            raise RuntimeError("VPRPipeline has no (or an empty) place map; load one first")
        t0 = time.perf_counter()
        if self._counter is not None:
            self._counter.reset()
        desc = self.describe(image)
        scores, ids = self._search(desc)
        latency = (time.perf_counter() - t0) * 1e3
        best_id = int(ids[0]) if len(ids) and ids[0] >= 0 else -1
        best = float(scores[0]) if best_id >= 0 else float("-inf")
        fr, e = self._frame_energy(image)
        return MatchResult(ids=ids, scores=scores,
                           accepted=bool(best_id >= 0 and best >= self.threshold),
                           best_id=best_id, best_score=best, latency_ms=latency, firing_rate=fr,
                           energy_mj=e, place=self.map.place(best_id) if best_id >= 0 else None,
                           descriptor=desc)

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
