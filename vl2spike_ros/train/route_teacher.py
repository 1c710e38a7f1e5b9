"""Teacher targets for VPR training on a route: one teacher pass over its frames, cached on disk.

Every teacher of :mod:`vl2spike_ros.train.teachers` (open_clip, proxy VLM, place CNN) is run once
on the un-augmented frames at their native size (resized to the teacher's input by its own
preprocessing): the global feature ``[M, D]`` and the spatial grid resampled to the student's
token grid ``[M, gh * gw, C]`` (row-major, as the student's tokens), or no grid. The student
sees augmented copies of the same frames (offline distillation, as in
:mod:`vl2spike_ros.train.features`). The cache key covers the teacher id, the frames and the
grid size.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vl2spike_ros.data.routes import Route, iter_route_frames
from vl2spike_ros.train.features import cached_tensors
from vl2spike_ros.train.teachers import Teacher, build_teacher

log = logging.getLogger(__name__)

DEFAULT_TEACHER_SIDE = 224  # frames are batched at this size when a teacher states none


@dataclass(frozen=True)
class TeacherTargets:
    """Per-frame teacher features.

    ``global_ [M, D]`` float32, ``grid [M, N, C]`` float16 or None.
    """

    global_: torch.Tensor
    grid: torch.Tensor | None
    teacher_id: str

    @property
    def dim(self) -> int:
        return int(self.global_.shape[1])

    @property
    def grid_dim(self) -> int:
        return int(self.grid.shape[2]) if self.grid is not None else 0

    def take(self, idx: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows ``idx`` on ``device`` (grid as float32)."""
        g = self.global_[idx].to(device)
        return g, (self.grid[idx].to(device).float() if self.grid is not None else None)


def load_teacher(section, device: str) -> Teacher:
    """Build the frozen teacher of a recipe's ``teacher`` section on ``device``."""
    return build_teacher(section.kind, section.name, section.pretrained, section.path, device,
                         section.model_config)


def teacher_input_size(teacher: Teacher) -> tuple[int, int]:
    """Return the (H, W) frames are resized to before batching for ``teacher``."""
    size = getattr(teacher.preprocess, "size", None)
    if size is None and hasattr(teacher, "place"):
        size = teacher.place.settings.img_size
    return tuple(size) if size is not None else (DEFAULT_TEACHER_SIDE, DEFAULT_TEACHER_SIDE)


def route_fingerprint(route: Route) -> str:
    """Hash (16 hex) of the route's frames (at load size) and where they were read from."""
    h = hashlib.sha256(np.ascontiguousarray(route.images).tobytes())
    for t in route.traversals:
        h.update(f"{t.path}|{t.topic}|{t.every}|".encode())
        h.update(np.ascontiguousarray(t.kept, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _to_batch(frames: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """uint8 frames (any size, grey or RGB) -> float ``[B, 3, H, W]`` in [0, 1]."""
    out = []
    for im in frames:
        if im.ndim == 3 and im.shape[2] == 4:
            im = im[..., :3]
        if im.ndim == 3 and im.shape[2] == 1:
            im = im[..., 0]
        if im.shape[:2] != tuple(size):
            im = cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        out.append(im)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def compute_targets(teacher: Teacher, route: Route, grid_hw: tuple[int, int], batch_size: int,
                    device: str = "cpu", progress: bool = True) -> dict[str, torch.Tensor]:
    """Run ``teacher`` over the route's frames: ``{"global": [M, D], "grid": [M, N, C]}``."""
    size = teacher_input_size(teacher)
    glob, grids, batch = [], [], []
    bar = tqdm(total=len(route.images), desc="teacher features", mininterval=5,
               disable=None if progress else True)

    def flush() -> None:
        g, grid = teacher.encode_image_and_grid(_to_batch(batch, size).to(device))
        glob.append(g.float().cpu())
        if grid is not None:
            grid = F.adaptive_avg_pool2d(grid.float(), grid_hw)        # [B, C, gh, gw]
            grids.append(grid.flatten(2).transpose(1, 2).half().cpu())  # [B, N, C]
        bar.update(len(batch))
        batch.clear()
    for frame in iter_route_frames(route):
        batch.append(frame)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    out = {"global": torch.cat(glob)}
    if grids:
        out["grid"] = torch.cat(grids)
    if len(out["global"]) != len(route.images):
        raise ValueError(f"teacher pass read {len(out['global'])} frames, the route has "
                         f"{len(route.images)}: did the data change while training?")
    return out


def route_targets(teacher: Teacher, route: Route, grid_hw: tuple[int, int], cache_dir,
                  batch_size: int = 32, device: str = "cpu",
                  progress: bool = True) -> TeacherTargets:
    """Teacher targets of ``route`` (cached in ``cache_dir`` when given)."""
    raw = f"{teacher.teacher_id}|{route_fingerprint(route)}|{tuple(grid_hw)}"
    key = hashlib.sha256(raw.encode()).hexdigest()[:20]
    out = cached_tensors(cache_dir, key,
                         lambda: compute_targets(teacher, route, grid_hw, batch_size, device,
                                                 progress),
                         {"teacher_id": teacher.teacher_id, "frames": str(len(route.images))})
    if out.get("grid") is None:
        log.warning("teacher %s has no spatial grid: the per-token SVS terms are off",
                    teacher.teacher_id)
    return TeacherTargets(out["global"].float(), out.get("grid"), teacher.teacher_id)
