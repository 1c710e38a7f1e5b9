"""The VPR weight factory (``vl2spike vpr train``).

Teacher CNN, direct Spikformer, control and distilled students, each whitened, and the packaged
default chosen on validation places.
"""
from __future__ import annotations

from pathlib import Path

from vl2spike_ros.models import default_vpr_weights
from vl2spike_ros.train.recipes import (CONTINUE_TOKEN_DIM, DIRECT_CFG, DISTILL_CFG,
                                        STUDENT_DESCRIPTOR, TEACHER_CFG, StudentRecipe,
                                        distill_svs, select_default, train_student,
                                        train_teacher_cnn)
from vl2spike_ros.train.whiten import whiten_weights


def main_train(root: Path, wdir: Path, out_path: str | None, teacher_path: str | None,
               ckpt_dir: str, what: str = "all") -> dict:
    """Train the requested models with the shipped recipes; returns their training summaries."""
    teacher = Path(teacher_path) if teacher_path else wdir / "vpr_teacher_cnn.safetensors"
    direct = wdir / "vpr_spikformer_direct.safetensors"
    control = wdir / "vpr_spikformer_direct_continued.safetensors"
    distilled = wdir / "vpr_spikformer_distilled.safetensors"
    out = {}
    if what in ("all", "teacher"):
        out["teacher"] = train_teacher_cnn(root, teacher, TEACHER_CFG, ckpt_dir)
        out["teacher"]["whitening"] = whiten_weights(teacher, root, descriptor="map")
    if what in ("all", "direct"):
        out["spikformer"] = train_student(root, direct, DIRECT_CFG, ckpt_dir)
        out["spikformer"]["whitening"] = whiten_weights(direct, root,
                                                        descriptor=STUDENT_DESCRIPTOR)
    needs = {"distilled": ((teacher, "teacher"), (direct, "direct")),
             "control": ((direct, "direct"),),
             "select": ((control, "control"), (distilled, "distilled"))}
    for need, step in needs.get(what, ()):
        if not need.is_file():
            raise FileNotFoundError(f"{need} missing: train it first (vl2spike vpr train {step})")
    if what in ("all", "control"):
        out["spikformer_continued"] = train_student(
            root, control, DISTILL_CFG, ckpt_dir,
            StudentRecipe(init_from=direct, name="spikformer_continued",
                          token_dim=CONTINUE_TOKEN_DIM))
        out["spikformer_continued"]["whitening"] = whiten_weights(control, root,
                                                                  descriptor=STUDENT_DESCRIPTOR)
    if what in ("all", "distilled"):
        out["vl2spike"] = train_student(
            root, distilled, DISTILL_CFG, ckpt_dir,
            StudentRecipe(teacher_path=teacher, init_from=direct, svs=distill_svs(),
                          token_dim=CONTINUE_TOKEN_DIM))
        out["vl2spike"]["whitening"] = whiten_weights(distilled, root,
                                                      descriptor=STUDENT_DESCRIPTOR)
    if what in ("all", "select"):
        out["default"] = select_default({"spikformer_continued": control, "vl2spike": distilled},
                                        Path(out_path) if out_path else default_vpr_weights())
    return out
