"""The VPR weight factory (``vl2spike vpr train``).

Teacher CNN, direct Spikformer, control and distilled students, each whitened, and the packaged
default chosen on validation places. The four recipes are read from ``config/vpr/{teacher,
direct,control,distilled}.yaml`` (:func:`~vl2spike_ros.train.vpr_config.factory_recipe`) and run
through the Nordland training code of :mod:`vl2spike_ros.train.recipes`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from vl2spike_ros.models import default_vpr_weights
from vl2spike_ros.train.recipes import (StudentRecipe, select_default, train_student,
                                        train_teacher_cnn)
from vl2spike_ros.train.vpr_config import CNN_MODEL, VPRRecipe, factory_recipe, fill_paths
from vl2spike_ros.train.whiten import whiten_weights

FACTORY_STEPS = ("teacher", "direct", "control", "distilled")


def student_recipe(recipe: VPRRecipe) -> StudentRecipe:
    """Convert a (path-filled) Spikformer VPR recipe to the Nordland :class:`StudentRecipe`."""
    m = recipe.model
    if m.kind == CNN_MODEL or m.overrides:
        raise ValueError("the Nordland factory trains the registered Spikformer variant "
                         "without overrides")
    teacher = recipe.teacher
    if teacher.kind not in ("none", "place_cnn"):
        raise ValueError(f"the Nordland factory distils from a place CNN, not {teacher.kind!r}")
    return StudentRecipe(variant=m.variant, descriptor=m.train_descriptor, token_dim=m.token_dim,
                         norm=m.norm, init_from=Path(m.init_from) if m.init_from else None,
                         teacher_path=Path(teacher.path) if teacher.kind != "none" else None,
                         svs=recipe.loss, name=m.name, train_frac=recipe.data.train_frac,
                         val_frac=recipe.data.val_frac)


def factory_recipes(wdir: Path, teacher: Path) -> dict[str, VPRRecipe]:
    """Load the four factory recipes, ``{weights_dir}``, ``{teacher}``, ``{direct}`` filled."""
    places = {"weights_dir": str(wdir), "teacher": str(teacher),
              "direct": str(wdir / "vpr_spikformer_direct.safetensors"),
              "default": str(default_vpr_weights())}
    return {k: fill_paths(factory_recipe(k), places) for k in FACTORY_STEPS}


def seed_variant(recipe: VPRRecipe, out: Path, seed: int | None) -> tuple[VPRRecipe, Path]:
    """Return the recipe and weights path of another training seed of a student arm.

    ``seed=None`` (or the recipe's own seed): unchanged. Otherwise ``optim.seed`` is replaced, the
    checkpoint name and the weights file get a ``_seed<k>`` suffix (``vl2spike bench vpr`` pairs
    such files by seed).
    """
    if seed is None or seed == recipe.optim.seed:
        return recipe, out
    name = f"{recipe.model.name or out.stem}_seed{seed}"
    recipe = dataclasses.replace(recipe, optim=dataclasses.replace(recipe.optim, seed=seed),
                                 model=dataclasses.replace(recipe.model, name=name))
    return recipe, out.with_name(f"{out.stem}_seed{seed}{out.suffix}")


def _student(root, out: Path, recipe: VPRRecipe, ckpt_dir: str) -> dict:
    info = train_student(root, out, recipe.optim, ckpt_dir, student_recipe(recipe))
    info["whitening"] = whiten_weights(out, root, descriptor=recipe.model.descriptor)
    return info


def main_train(root: Path, wdir: Path, out_path: str | None, teacher_path: str | None,
               ckpt_dir: str, what: str = "all", seed: int | None = None) -> dict:
    """Train the requested models with the shipped recipes; returns their training summaries.

    ``seed`` (control / distilled only): train another seed of that arm next to the shipped one.
    """
    if seed is not None and what not in ("control", "distilled"):
        raise ValueError("--seed trains another seed of one student arm: "
                         "give control or distilled")
    teacher = Path(teacher_path) if teacher_path else wdir / "vpr_teacher_cnn.safetensors"
    direct = wdir / "vpr_spikformer_direct.safetensors"
    control = wdir / "vpr_spikformer_direct_continued.safetensors"
    distilled = wdir / "vpr_spikformer_distilled.safetensors"
    rec = factory_recipes(wdir, teacher)
    out = {}
    if what in ("all", "teacher"):
        r = rec["teacher"]
        out["teacher"] = train_teacher_cnn(root, teacher, r.optim, ckpt_dir, r.data.train_frac,
                                           r.data.val_frac, r.model.norm)
        out["teacher"]["whitening"] = whiten_weights(teacher, root, descriptor=r.model.descriptor)
    if what in ("all", "direct"):
        out["spikformer"] = _student(root, direct, rec["direct"], ckpt_dir)
    needs = {"distilled": ((teacher, "teacher"), (direct, "direct")),
             "control": ((direct, "direct"),),
             "select": ((control, "control"), (distilled, "distilled"))}
    for need, step in needs.get(what, ()):
        if not need.is_file():
            raise FileNotFoundError(f"{need} missing: train it first (vl2spike vpr train {step})")
    if what in ("all", "control"):
        r, path = seed_variant(rec["control"], control, seed)
        out["spikformer_continued"] = _student(root, path, r, ckpt_dir)
    if what in ("all", "distilled"):
        r, path = seed_variant(rec["distilled"], distilled, seed)
        out["vl2spike"] = _student(root, path, r, ckpt_dir)
    if what in ("all", "select"):
        out["default"] = select_default({"spikformer_continued": control, "vl2spike": distilled},
                                        Path(out_path) if out_path else default_vpr_weights())
    return out
